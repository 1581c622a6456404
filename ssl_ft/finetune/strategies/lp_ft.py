"""``lp-ft``: linear probing, then fine-tuning from the probed head.

Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution"
(ICLR 2022): a randomly initialised head sends large gradients into the backbone and distorts
its features; training the head first on frozen features and fine-tuning afterwards avoids it.
Phase 1 (``lp_epochs``) trains only the head at ``lr * lp_lr_scale``; phase 2 fine-tunes the
selected units and the head, with the learning-rate schedule restarted. Both phases count
towards ``epochs``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ssl_ft.errors import UserError
from ssl_ft.finetune.strategies.base import Strategy, register


@dataclass
class LPFTConfig:
    lp_epochs: int | None = None   # default: half of the epochs (at least 1)
    lp_lr_scale: float = 1.0       # head learning rate in phase 1, relative to lr


@register
class LPFT(Strategy):
    name = "lp-ft"
    Config = LPFTConfig

    def __init__(self, model, selected, epochs, config) -> None:
        super().__init__(model, selected, epochs, config)
        lp = config.lp_epochs if config.lp_epochs is not None else max(1, epochs // 2)
        if not 1 <= lp < epochs:
            raise UserError(f"strategy_args.lp_epochs {lp} must leave at least one fine-tuning "
                            f"epoch of {epochs} (need 1 <= lp_epochs < epochs)")
        self.lp_epochs = lp

    def trained_units(self, epoch: int) -> list[int]:
        return [] if epoch < self.lp_epochs else list(self.selected)

    def phases(self) -> list[tuple[int, int]]:
        return [(0, self.lp_epochs), (self.lp_epochs, self.epochs)]

    def phase_name(self, epoch: int) -> str:
        return "lp" if epoch < self.lp_epochs else "ft"

    def on_epoch_start(self, epoch: int, optimizer: torch.optim.Optimizer,
                       measure: Callable[[], None]) -> dict[str, float]:
        scale = self.config.lp_lr_scale if epoch < self.lp_epochs else 1.0
        for group in optimizer.param_groups:
            if group["name"] == "head":
                group["lr_scale"] = scale
        return {}
