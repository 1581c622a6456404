"""Shared code of ``l1-sp`` and ``l2-sp`` (Li, Grandvalet & Davoine, "Explicit Inductive Bias
for Transfer Learning with Convolutional Networks", ICML 2018).

The penalty pulls the backbone towards its starting point ``w0`` (the pretrained weights) in
place of weight decay, and decays the new head's weights separately with ``beta / 2 * ||w||^2``.
The optimiser's own weight decay is switched off for these strategies.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ssl_ft.finetune.strategies.base import Strategy


@dataclass
class SPConfig:
    alpha: float = 0.01   # strength of the pull towards the pretrained weights
    beta: float = 0.01    # weight decay of the head's weight matrix


class StartingPointPenalty(Strategy):
    """Base class: stores ``w0`` of the selected units when the strategy is built (before any
    training or resumed state), so a resumed run still pulls towards the pretrained weights."""

    Config = SPConfig
    uses_weight_decay = False

    def __init__(self, model, selected, epochs, config) -> None:
        super().__init__(model, selected, epochs, config)
        self.start = {name: p.detach().clone() for name, p in self.named_backbone_params()}

    def distance(self, diff: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def penalty(self) -> torch.Tensor:
        terms = [self.distance(p - self.start[name].to(p.device))
                 for name, p in self.named_backbone_params() if p.requires_grad]
        head = self.model.head.weight
        total = self.config.beta / 2 * head.pow(2).sum()
        if terms:
            total = total + self.config.alpha * torch.stack(terms).sum()
        return total
