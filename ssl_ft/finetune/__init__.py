"""Depth-wise fine-tuning: ``checkpoint -> select(layers, truncate) -> strategy -> metrics.json``.

    >>> from ssl_ft.finetune import FinetuneConfig, finetune, load_finetuned
    >>> out = finetune(FinetuneConfig(checkpoint="runs/simclr/checkpoint.pt", layers="25-50",
    ...                               truncate=75, strategy="lp-ft", out="runs/ft"))
    >>> model = load_finetuned(out / "model.pt")

See ``docs/finetuning.md``.
"""

from ssl_ft.finetune.config import FinetuneConfig
from ssl_ft.finetune.engine import Prepared, evaluate, finetune, load_finetune_recipe, prepare
from ssl_ft.finetune.model import (
                                   FinetuneModel,
                                   build_backbone,
                                   load_finetuned,
                                   predict_proba,
                                   save_finetuned,
)
from ssl_ft.finetune.strategies import STRATEGIES, Strategy, get_strategy, register

__all__ = [
    "STRATEGIES", "FinetuneConfig", "FinetuneModel", "Prepared", "Strategy", "build_backbone",
    "evaluate", "finetune", "get_strategy", "load_finetune_recipe", "load_finetuned",
    "predict_proba", "prepare", "register", "save_finetuned",
]
