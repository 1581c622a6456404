"""``lp``: linear probing, only the classifier head trains on frozen features.

The baseline of Kumar et al. ("Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution", ICLR 2022). ``--truncate`` chooses the depth the features come from;
``--layers`` is ignored (no backbone unit trains), and the whole backbone runs without autograd.
"""

from __future__ import annotations

from ssl_ft.finetune.strategies.base import Strategy, register


@register
class LinearProbe(Strategy):
    name = "lp"
    allow_empty_selection = True

    def trained_units(self, epoch: int) -> list[int]:
        return []

    def param_groups(self, weight_decay: float) -> list[dict]:
        return [self.head_group(weight_decay)]
