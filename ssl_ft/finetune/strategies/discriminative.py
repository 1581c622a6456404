"""``discriminative``: layer-wise learning-rate decay by depth.

Howard & Ruder (ACL 2018) call it discriminative fine-tuning: deeper layers move faster than
shallow ones. The head trains at ``lr``; kept unit ``j`` of ``K`` (0 = shallowest) at
``lr * decay ** (K - j)``, so the last unit gets ``lr * decay`` and each unit below it
``decay`` times less.
"""

from __future__ import annotations

from dataclasses import dataclass

from ssl_ft.errors import UserError
from ssl_ft.finetune.strategies.base import Strategy, register


@dataclass
class DiscriminativeConfig:
    decay: float = 0.7   # learning-rate factor per unit towards the input


@register
class Discriminative(Strategy):
    name = "discriminative"
    Config = DiscriminativeConfig

    def __init__(self, model, selected, epochs, config) -> None:
        super().__init__(model, selected, epochs, config)
        if not 0 < config.decay <= 1:
            raise UserError(f"strategy_args.decay must be in (0, 1], got {config.decay}")

    def lr_scale(self, index: int) -> float:
        return self.config.decay ** (len(self.model.backbone.units) - index)

    def param_groups(self, weight_decay: float) -> list[dict]:
        groups = [{"params": [p for _, p in self.unit_params(i)], "lr_scale": self.lr_scale(i),
                   "weight_decay": weight_decay, "name": f"unit{i}"} for i in self.selected]
        return [g for g in groups if g["params"]] + [self.head_group(weight_decay)]
