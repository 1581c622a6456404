"""The pretraining recipe: every key a ``tools/pretrain.py RECIPE.yaml`` file may set.

See ``docs/pretraining.md`` for a commented example. Method-specific keys live under
``method_args`` and are validated against the chosen method's ``Config`` dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ssl_ft.augment import AugmentConfig
from ssl_ft.models import STEMS

__all__ = ["DataConfig", "EvalConfig", "ModelConfig", "PretrainConfig", "SourceConfig",
           "TrainConfig"]


@dataclass
class SourceConfig:
    """One source of a pretraining pool with its sampling weight (see :mod:`ssl_ft.data.pool`)."""

    name: str
    weight: float = 1.0


@dataclass
class DataConfig:
    """Which images to pretrain on (``train`` splits only; labels are not used for training).

    ``name`` is one ``DATA`` or a list of them (strings or ``{name, weight}``): the train splits
    of every source are pooled at one ``size`` and ``channels`` (:mod:`ssl_ft.data.pool`).
    """

    name: str | list[str | SourceConfig] = "pneumoniamnist"   # DATA, or a list to pool
    exclude: list[str] = field(default_factory=list)  # drop images matching their val/test splits
    root: str | None = None        # data root; else $SSL_FT_DATA, else ~/.medmnist
    size: int | None = None        # resize to size x size (default: the data's own size)
    channels: int | None = None    # 1 or 3 (default: the data's own)
    limit: int | None = None       # use at most this many images per split (quick runs)
    download: bool = False         # let the medmnist package download a missing MedMNIST file


@dataclass
class ModelConfig:
    arch: str = "resnet18"
    stem: Literal[STEMS] = "standard"
    weights: str = "none"          # none | imagenet | path to a checkpoint or state dict


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 256          # global batch; each of N DDP processes takes batch_size / N
    optimizer: Literal["sgd", "adamw", "lars"] = "sgd"
    lr: float = 0.06               # at batch_size 256; scaled linearly with the batch size
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: int = 2
    min_lr_ratio: float = 0.0      # cosine decay to lr * min_lr_ratio
    save_every: int = 10           # keep epoch_NNNN.pt every N epochs (0: only last.pt)
    threads: int | None = None     # torch threads (default: cores / local processes)
    device: str = "auto"           # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on GPUs; measured
    #                                on bf16 CPUs (ssl_ft.pretrain.precision)
    deterministic: bool = False    # torch.use_deterministic_algorithms (exact resume on the CPU)
    channels_last: bool = True     # the method in channels_last memory format: 1.08-1.65x here (docs/performance.md)
    compile: bool = False          # torch.compile the backbone (GPU; see docs/performance.md)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if self.warmup_epochs < 0 or self.save_every < 0:
            raise ValueError("train.warmup_epochs and train.save_every must be >= 0")


@dataclass
class EvalConfig:
    """Online evaluation on the labelled validation split, so a user sees features improve."""

    every: int = 5                 # epochs between evaluations (0: never; the last epoch always)
    method: Literal["knn", "linear"] = "knn"
    k: int = 20                    # kNN neighbours (Wu et al. 2018 weighted vote)
    temperature: float = 0.07
    limit: int | None = 2000       # labelled train images used as the kNN bank / probe data
    data: str | None = None        # labelled DATA to evaluate on (default: the first source)


@dataclass
class PretrainConfig:
    method: str = "simclr"
    out: str = "runs/pretrain"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    method_args: dict[str, Any] = field(default_factory=dict)
