"""SimCLR: contrastive learning of two augmented views with the NT-Xent loss.

Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020 (arXiv 2002.05709). Loss and projection head come from lightly;
under DDP the negatives are gathered from every rank (``gather_distributed``).

Example::

    >>> method = SimCLR(create_backbone("resnet18", in_chans=1), SimCLR.Config(),
    ...                 augment=BatchAugment(...), mean=[0.5], std=[0.25], image_size=28)
    >>> method(images)["loss"].backward()
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from ssl_ft.methods.base import SSLMethod, register

__all__ = ["SimCLR", "SimCLRConfig"]


@dataclass
class SimCLRConfig:
    """``temperature`` of NT-Xent; projection head ``hidden_dim`` -> ``out_dim``."""

    temperature: float = 0.2
    hidden_dim: int = 512
    out_dim: int = 128

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.hidden_dim < 1 or self.out_dim < 1:
            raise ValueError(f"hidden_dim/out_dim must be >= 1, got {self.hidden_dim}/{self.out_dim}")


@register
class SimCLR(SSLMethod):
    """SimCLR (Chen et al., ICML 2020) on any :class:`~ssl_ft.models.DepthBackbone`."""

    name = "simclr"
    family = "contrastive"
    Config = SimCLRConfig

    def __init__(self, backbone, cfg: SimCLRConfig, **kwargs) -> None:
        super().__init__(backbone, cfg, **kwargs)
        self.projection_head = SimCLRProjectionHead(backbone.num_features, cfg.hidden_dim,
                                                    cfg.out_dim)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.criterion = NTXentLoss(temperature=cfg.temperature, gather_distributed=distributed)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(self.normalize(x)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # noqa: D102
        z0 = self.embed(self.augment(x))
        z1 = self.embed(self.augment(x))
        return {"loss": self.criterion(z0, z1)}
