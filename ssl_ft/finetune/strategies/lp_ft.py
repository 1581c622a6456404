"""``lp-ft``: linear probing, then fine-tuning from the probed head.

Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution"
(ICLR 2022): a randomly initialised head sends large gradients into the backbone and distorts
its features; fitting the head first on the frozen features and fine-tuning afterwards avoids it.

* Phase 1 is the ``lp`` strategy's converged probe (:func:`ssl_ft.features.fit_linear_head`:
  standardised frozen features, L-BFGS logistic regression, ``C`` chosen on val), written into
  the head before the first optimiser step and before the first checkpoint; a resumed run loads
  that head, it never refits. Its wall time is the extra cost reported in ``metrics.json``
  (``probe.seconds``).
* Phase 2 fine-tunes the selected units and the head from that head with the full fine-tuning
  budget: the same ``--epochs``, batches and optimiser steps as ``ft``, at ``lr * ft_lr_scale``.

Why the BatchNorm statistics stay frozen in phase 2 (``bn: frozen``, the default): the probe is
fitted on eval-mode features, normalised with the backbone's running statistics. In train mode
BatchNorm normalises with each batch's own statistics instead, and when the running statistics
come from another domain (pretraining data) those are different features: on BreastMNIST with a
quick-start PneumoniaMNIST SimCLR checkpoint the probed head's loss on a train batch is 0.29 in
eval mode and 2.78 with batch statistics, worse than a random head (ln 2 = 0.69). Phase 2 would
then not start from a near-optimal head at all, which is LP-FT's whole premise. So phase 2
trains every selected weight (BatchNorm's affine parameters included) but normalises with the
running statistics, and starts exactly at the probe's loss. ``bn: batch`` trains as ``ft`` does
(batch statistics in the trained units) for comparison.

Why a smaller learning rate: with a near-optimal head the loss starts low and the useful update
to the backbone is small; large steps only move the features away from the pretrained ones,
which is the distortion LP-FT exists to avoid. Kumar et al. tune the fine-tuning rate of LP-FT
separately from that of FT and the rates they pick for LP-FT are smaller. The default
``ft_lr_scale = 0.1`` (ten times smaller than ``lr``) follows that; it is a knob to tune on the
validation split, not a number taken from the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ssl_ft.errors import UserError
from ssl_ft.finetune.strategies.base import Strategy, register
from ssl_ft.finetune.strategies.lp import ProbeConfig, check_c_grid


@dataclass
class LPFTConfig(ProbeConfig):
    ft_lr_scale: float = 0.1   # phase-2 learning rate (backbone and head), relative to lr
    bn: Literal["frozen", "batch"] = "frozen"  # phase-2 BatchNorm: running or batch statistics


@register
class LPFT(Strategy):
    name = "lp-ft"
    Config = LPFTConfig
    fits_probe = True

    def __init__(self, model, selected, epochs, config) -> None:
        super().__init__(model, selected, epochs, config)
        check_c_grid(config.c_grid)
        if not config.ft_lr_scale > 0:
            raise UserError(f"strategy_args.ft_lr_scale must be > 0, got {config.ft_lr_scale}")

    def phase_name(self, epoch: int) -> str:
        return "ft"

    def keeps_bn_statistics(self) -> bool:
        return self.config.bn == "frozen"

    def param_groups(self, weight_decay: float) -> list[dict]:
        groups = super().param_groups(weight_decay)
        for group in groups:
            group["lr_scale"] = self.config.ft_lr_scale
        return groups
