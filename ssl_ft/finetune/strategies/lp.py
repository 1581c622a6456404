"""``lp``: linear probing. The head is the converged logistic probe of the frozen features.

The baseline of Kumar et al. ("Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution", ICLR 2022), fitted as the standard SSL linear evaluation does (Chen et al.,
SimCLR, ICML 2020; Kolesnikov, Zhai & Beyer, CVPR 2019): the frozen backbone's pooled features at
the ``--truncate`` depth are computed once, z-scored with the train statistics, and an L-BFGS
logistic regression is fitted to convergence for each ``C`` of ``c_grid``; the ``C`` with the
best validation AUC is kept and written into the model's linear head with the standardisation
folded into its weights and bias (:func:`ssl_ft.features.fit_linear_head`, the code
``tools/probe.py`` runs). There are no SGD epochs (``--epochs`` is not used); ``--layers`` is
ignored (no backbone unit trains).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ssl_ft.errors import UserError
from ssl_ft.features import C_GRID
from ssl_ft.finetune.strategies.base import Strategy, register


@dataclass
class ProbeConfig:
    c_grid: list[float] = field(default_factory=lambda: list(C_GRID))  # C tried, best val AUC


def check_c_grid(c_grid: list[float]) -> None:
    """A user error naming the value unless ``c_grid`` is a non-empty list of positive Cs."""
    if not c_grid or any(c <= 0 for c in c_grid):
        raise UserError(f"strategy_args.c_grid must be a non-empty list of numbers > 0, got "
                        f"{c_grid!r}")


@register
class LinearProbe(Strategy):
    name = "lp"
    Config = ProbeConfig
    allow_empty_selection = True
    fits_probe = True

    def __init__(self, model, selected, epochs, config) -> None:
        super().__init__(model, selected, epochs, config)
        check_c_grid(config.c_grid)

    def train_epochs(self) -> int:
        return 0

    def trained_units(self, epoch: int) -> list[int]:
        return []

    def param_groups(self, weight_decay: float) -> list[dict]:
        return [self.head_group(weight_decay)]
