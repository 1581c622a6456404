"""The fusion recipe: flat keys, the same as ``tools/ensemble.py``'s flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["FUSION_STRATEGIES", "EnsembleConfig"]

#: The fine-tuning strategies fusion implements, by their names in the strategy registry
#: (:data:`ssl_ft.finetune.STRATEGIES`; ``tests/test_contracts.py`` holds them to it): ``lp``
#: (frozen backbones, a logistic-regression head), ``ft`` and ``lp-ft`` (``ft`` from that head).
FUSION_STRATEGIES: tuple[str, ...] = ("lp", "ft", "lp-ft")


@dataclass
class EnsembleConfig:
    """Every key an ensemble recipe may set (see ``docs/fusion.md``)."""

    checkpoints: list[str] = field(default_factory=list)  # two or more (none/imagenet allowed)
    depths: list[float | str] = field(default_factory=list)  # per model, or one for all;
    #                       default: contrastive 50 (end of the 2nd quarter), restorative 75,
    #                       others 100; auto: the quarter end whose probe is best on val
    layers: list[str] = field(default_factory=list)       # per model, fine-tuned jointly (ft)
    strategy: Literal[FUSION_STRATEGIES] = "lp"  # one of FUSION_STRATEGIES
    arch: str | None = None        # for the none/imagenet/plain-state-dict models
    data: str = "pneumoniamnist"
    data_root: str | None = None
    size: int | None = None
    label_fraction: float = 1.0
    limit: int | None = None
    download: bool = False
    cache_dir: str | None = None   # feature cache (default $SSL_FT_CACHE or ~/.cache/ssl_ft)
    epochs: int = 10               # ft / lp-ft only
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    out: str = "runs/ensemble"
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    threads: int | None = None
    allow_overlap: bool = False    # run even if pretraining saw val/test images (ssl_ft.leakage)

    def __post_init__(self) -> None:
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction must be in (0, 1], got {self.label_fraction}")
        for d in self.depths:
            if isinstance(d, str) and d != "auto":
                raise ValueError(f"depths: {d!r} is not a percentage or 'auto'")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
