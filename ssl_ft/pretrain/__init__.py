"""Self-supervised pretraining: ``pretrain(load_pretrain_recipe("recipe.yaml"))``."""

from ssl_ft.pretrain.config import DataConfig, EvalConfig, ModelConfig, PretrainConfig, TrainConfig
from ssl_ft.pretrain.engine import (
    build_method,
    evaluate,
    load_method_state,
    load_pretrain_recipe,
    method_state,
    pretrain,
    resolved_recipe,
    train_one_epoch,
)

__all__ = [
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "PretrainConfig",
    "TrainConfig",
    "build_method",
    "evaluate",
    "load_method_state",
    "load_pretrain_recipe",
    "method_state",
    "pretrain",
    "resolved_recipe",
    "train_one_epoch",
]
