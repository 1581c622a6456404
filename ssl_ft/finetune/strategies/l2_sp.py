"""``l2-sp``: ``alpha / 2 * ||w - w0||^2`` on the backbone, gradient ``alpha * (w - w0)``
(Li, Grandvalet & Davoine, ICML 2018)."""

from __future__ import annotations

import torch

from ssl_ft.finetune.strategies.base import register
from ssl_ft.finetune.strategies.sp import StartingPointPenalty


@register
class L2SP(StartingPointPenalty):
    name = "l2-sp"

    def distance(self, diff: torch.Tensor) -> torch.Tensor:
        return diff.pow(2).sum() / 2
