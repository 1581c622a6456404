"""``gradual-lf`` and ``gradual-fl``: gradual unfreezing.

Howard & Ruder, "Universal Language Model Fine-tuning for Text Classification" (ACL 2018): the
first epoch trains only the head; then every ``every`` epochs the next ``units_per_step``
selected units join, from the last unit towards the first (``gradual-lf``, ULMFiT's order) or
from the first towards the last (``gradual-fl``), as compared by Davila et al. (arXiv
2406.10050). By default the steps are sized so that every selected unit trains from the middle
of the run on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ssl_ft.errors import UserError
from ssl_ft.finetune.strategies.base import Strategy, register


@dataclass
class GradualConfig:
    every: int = 1                     # epochs between two unfreezing steps
    units_per_step: int | None = None  # default: all selected units unfrozen by mid-run


class _Gradual(Strategy):
    Config = GradualConfig
    last_first: bool = True

    def __init__(self, model, selected, epochs, config) -> None:
        super().__init__(model, selected, epochs, config)
        if config.every < 1:
            raise UserError(f"strategy_args.every must be >= 1, got {config.every}")
        n = len(self.selected)
        steps = max(1, (epochs // 2) // config.every)
        self.per_step = config.units_per_step or max(1, math.ceil(n / steps))
        if self.per_step < 1:
            raise UserError(f"strategy_args.units_per_step must be >= 1, got {self.per_step}")

    def n_trained(self, epoch: int) -> int:
        return min(len(self.selected), (epoch // self.config.every) * self.per_step)

    def trained_units(self, epoch: int) -> list[int]:
        k = self.n_trained(epoch)
        if k == 0:
            return []
        return self.selected[-k:] if self.last_first else self.selected[:k]


@register
class GradualLastFirst(_Gradual):
    name = "gradual-lf"
    last_first = True


@register
class GradualFirstLast(_Gradual):
    name = "gradual-fl"
    last_first = False
