"""``ft``: fine-tune every selected unit and the head at one learning rate.

With ``--layers 0-100`` this is end-to-end fine-tuning; with a narrower range it is *surgical*
fine-tuning (Lee et al., "Surgical Fine-Tuning Improves Adaptation to Distribution Shifts",
ICLR 2023), the quarter-wise setting of Khan & Fang (arXiv 2307.10915).
"""

from __future__ import annotations

from ssl_ft.finetune.strategies.base import Strategy, register


@register
class FineTune(Strategy):
    name = "ft"
