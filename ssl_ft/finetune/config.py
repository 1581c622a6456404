"""The fine-tuning recipe: one flat set of keys, the same as ``tools/finetune.py``'s flags.

``--batch-size 64`` on the command line and ``batch_size: 64`` in a recipe are the same key;
flags override the recipe. Defaults follow the MedMNIST v2 benchmark's 2D training (Yang et al.,
Scientific Data 2023: Adam, lr 1e-3, batch 128, no augmentation) except that the schedule is a
cosine decay and the run is shorter (``epochs``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ssl_ft.models import RULES, STEMS

__all__ = ["FinetuneConfig"]


@dataclass
class FinetuneConfig:
    """Every key a fine-tuning recipe may set (see ``docs/finetuning.md``)."""

    # what to start from
    checkpoint: str = "none"       # ssl_ft checkpoint | plain torchvision/timm state dict |
    #                                imagenet | none (random init: the from-scratch baseline)
    arch: str | None = None        # needed with none/imagenet/plain state dicts; checked otherwise
    stem: Literal[STEMS] | None = None  # default: the checkpoint's, else standard
    # data
    data: str = "pneumoniamnist"   # MedMNIST name, .npz name in the data root, .npz path, folder
    data_root: str | None = None
    size: int | None = None        # resize to size x size (default: the data's own)
    channels: int | None = None    # 1 or 3 (default: the data's own; must match the checkpoint)
    label_fraction: float = 1.0    # share of the labelled train split used (seeded, stratified)
    limit: int | None = None       # at most this many images per split (quick runs)
    download: bool = False
    normalization: Literal["checkpoint", "data", "imagenet"] = "checkpoint"
    allow_overlap: bool = False    # run even if pretraining saw val/test images (ssl_ft.leakage)
    # what to train
    layers: str = "0-100"          # A-B: train the units whose depth lies in (A, B]; auto:
    #                                chosen from cheap evidence first (ssl_ft.auto_layers)
    truncate: float | str = 100    # keep the units at depth <= P, drop the rest; or auto
    auto_args: dict[str, Any] = field(default_factory=dict)  # the chooser's options (AutoConfig)
    depth_unit: Literal[RULES] | None = None  # default: per architecture
    strategy: str = "ft"           # a name in the registry ssl_ft.finetune.STRATEGIES
    strategy_args: dict[str, Any] = field(default_factory=dict)
    freeze_bn: bool = True         # frozen units keep their BatchNorm statistics
    # optimisation
    epochs: int = 10
    batch_size: int = 128          # global; each of N DDP processes takes batch_size / N
    lr: float = 1e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9          # sgd only
    warmup_epochs: int = 0
    augment: Literal["none", "flip", "crop-flip"] = "none"
    prefix_cache: Literal["auto", "off"] = "auto"  # frozen prefix computed once (augment none)
    prefix_cache_gb: float = 2.0   # ... if its train+val activations fit in this much memory
    # bookkeeping
    seed: int = 0
    out: str = "runs/finetune"
    checkpoint_every_s: float = 30.0  # write last.pt/best.pt at most this often (0: each epoch)
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction must be in (0, 1], got {self.label_fraction}")
        if isinstance(self.truncate, str) and self.truncate != "auto":
            raise ValueError(f"truncate must be a percentage or 'auto', got {self.truncate!r}")
        if self.warmup_epochs < 0 or self.weight_decay < 0:
            raise ValueError("warmup_epochs and weight_decay must be >= 0")
        if not self.checkpoint_every_s >= 0:
            raise ValueError(f"checkpoint_every_s must be >= 0, got {self.checkpoint_every_s}")
