"""``l1-sp``: ``alpha * |w - w0|_1`` on the backbone, gradient ``alpha * sign(w - w0)``
(Li, Grandvalet & Davoine, ICML 2018)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ssl_ft.finetune.strategies.base import register
from ssl_ft.finetune.strategies.sp import SPConfig, StartingPointPenalty


@dataclass
class L1SPConfig(SPConfig):
    # an L1 pull has a constant-size gradient alpha * sign(w - w0) from the first step on,
    # so it takes a much smaller alpha than L2-SP to leave room for the data term
    alpha: float = 1e-4


@register
class L1SP(StartingPointPenalty):
    name = "l1-sp"
    Config = L1SPConfig

    def distance(self, diff: torch.Tensor) -> torch.Tensor:
        return diff.abs().sum()
