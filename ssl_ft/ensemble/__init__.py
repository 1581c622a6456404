"""Multi-SSL fusion through concatenated intermediate features (Khan & Fang, arXiv 2307.10915).

    >>> from ssl_ft.ensemble import EnsembleConfig, ensemble
    >>> out, metrics = ensemble(EnsembleConfig(
    ...     checkpoints=["runs/simclr/checkpoint.pt", "runs/genesis/checkpoint.pt"],
    ...     data="pneumoniamnist", out="runs/fusion"))
    >>> metrics["test"]["auc"], metrics["baselines"]["late_fusion"]["test"]["auc"]

See ``docs/fusion.md``.
"""

from ssl_ft.ensemble.config import FUSION_STRATEGIES, EnsembleConfig
from ssl_ft.ensemble.engine import FusionNet, ensemble, load_ensemble_recipe
from ssl_ft.ensemble.members import DEFAULT_DEPTH, Member, block_normalize, load_members

__all__ = ["DEFAULT_DEPTH", "FUSION_STRATEGIES", "EnsembleConfig", "FusionNet", "Member", "block_normalize",
           "ensemble", "load_ensemble_recipe", "load_members"]
