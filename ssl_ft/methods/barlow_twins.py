"""Barlow Twins: the cross-correlation of two views' embeddings is pushed towards the identity.

Zbontar, Jing, Misra, LeCun & Deny, "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", ICML 2021 (arXiv 2103.03230).

The backbone feeds lightly's :class:`~lightly.models.modules.BarlowTwinsProjectionHead` (three
linear layers, BatchNorm + ReLU after the first two); the loss is lightly's
:class:`~lightly.loss.BarlowTwinsLoss` (the paper's Algorithm 1): each embedding dimension is
standardised over the batch, ``C = z_a^T z_b / N``, and
``loss = sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2``. Under DDP the cross-correlation
matrices of the ranks are averaged (``gather_distributed``, autograd-aware all-reduce), so the
loss is that of the global batch up to the standardisation, which lightly does per rank (the
official code standardises with a synchronised BatchNorm over the global batch).

Defaults: ``lambda = 5e-3`` (the paper's), a projector of 2048-2048-2048 instead of the paper's
8192 (lightly's CIFAR-10 benchmark size; the paper's Fig. 4 shows smaller projectors cost some
accuracy, and a 3 x 8192 projector would be 138 M parameters on a resnet18). The paper trains
with LARS, lr 0.2 (weights) / 0.0048 (biases and BatchNorm) per 256 images, weight decay 1.5e-6;
see the shipped recipe for the values measured on this project's CPU. The step also logs
``embedding_std`` (:func:`~ssl_ft.methods.joint.embedding_std`).

Example::

    >>> method = BarlowTwins(create_backbone("resnet18", in_chans=1), BarlowTwins.Config(),
    ...                      augment=BatchAugment(None, 28, 1), mean=[0.5], std=[0.25],
    ...                      image_size=28)
    >>> method(images)["loss"].backward()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lightly.loss import BarlowTwinsLoss
from lightly.models.modules import BarlowTwinsProjectionHead
from torch import Tensor

from ssl_ft.errors import UserError
from ssl_ft.methods.base import SSLMethod, register
from ssl_ft.methods.joint import check_int, check_number, distributed, embedding_std
from ssl_ft.models import DepthBackbone

__all__ = ["BarlowTwins", "BarlowTwinsConfig"]


@dataclass
class BarlowTwinsConfig:
    """Projector ``hidden_dim`` -> ``out_dim``; ``redundancy_weight`` is the paper's lambda on
    the off-diagonal (redundancy reduction) term."""

    hidden_dim: int = 2048
    out_dim: int = 2048
    redundancy_weight: float = 5e-3

    def __post_init__(self) -> None:
        check_int(self, "hidden_dim", "out_dim")
        check_number(self, "redundancy_weight", 0.0)


@register
class BarlowTwins(SSLMethod):
    """Barlow Twins (Zbontar et al., ICML 2021) on any :class:`~ssl_ft.models.DepthBackbone`."""

    name = "barlow_twins"
    family = "contrastive"  # joint-embedding, as Khan & Fang group MoCo/SimCLR-like methods
    Config = BarlowTwinsConfig

    def __init__(self, backbone: DepthBackbone, cfg: BarlowTwinsConfig, **kwargs: Any) -> None:
        super().__init__(backbone, cfg, **kwargs)
        self.projection_head = BarlowTwinsProjectionHead(backbone.num_features, cfg.hidden_dim,
                                                         cfg.out_dim)
        self.criterion = BarlowTwinsLoss(lambda_param=cfg.redundancy_weight,
                                         gather_distributed=distributed())

    def embed(self, x: Tensor) -> Tensor:
        """Projector output for images ``x`` in [0, 1]."""
        return self.projection_head(self.backbone(self.normalize(x)))

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # noqa: D102
        if len(x) < 2:
            raise UserError(f"Barlow Twins needs batches of at least 2 images, got {len(x)}")
        z_a, z_b = self.embed(self.augment(x)), self.embed(self.augment(x))
        return {"loss": self.criterion(z_a, z_b), "embedding_std": embedding_std(z_a)}
