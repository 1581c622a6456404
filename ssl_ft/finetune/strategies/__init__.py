"""Fine-tuning strategies, one module each, registered by name (see :mod:`.base`).

``ft`` (surgical with ``--layers``), ``lp``, ``lp-ft``, ``gradual-lf``, ``gradual-fl``,
``l1-sp``, ``l2-sp``, ``auto-rgn``, ``discriminative``: the strategies compared by Davila et al.
(arXiv 2406.10050), plus layer-wise learning-rate decay.
"""

from ssl_ft.finetune.strategies import (  # noqa: F401  (registration)
    auto_rgn,
    discriminative,
    ft,
    gradual,
    l1_sp,
    l2_sp,
    lp,
    lp_ft,
)
from ssl_ft.finetune.strategies.base import STRATEGIES, NoConfig, Strategy, get_strategy, register

__all__ = ["STRATEGIES", "NoConfig", "Strategy", "get_strategy", "register"]
