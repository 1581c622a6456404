"""VICReg: invariance between two views, variance kept up and covariance pushed down per batch.

Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022 (arXiv 2105.04906).

The backbone feeds lightly's :class:`~lightly.models.modules.VICRegProjectionHead` (the
"expander": ``num_layers`` linear layers, BatchNorm + ReLU after all but the last); the loss is
lightly's :class:`~lightly.loss.VICRegLoss`,
``lambda * MSE(z_a, z_b) + mu * (variance hinge of z_a and z_b) / 2 + nu * (off-diagonal
covariance of z_a + of z_b)``. Under DDP the variance and covariance terms use the embeddings
gathered from every rank (``gather_distributed``, with gradients flowing back to each rank), as
in the official code; the invariance term is per rank (it is a per-sample mean).

The step also logs the unweighted ``invariance`` and ``variance`` terms of this process's batch
(lightly's ``invariance_loss`` / ``variance_loss``; cheap, and the variance hinge is 1 for a
collapsed embedding) and ``embedding_std`` (:func:`~ssl_ft.methods.joint.embedding_std`). The
covariance term is not logged separately: it costs a ``dim x dim`` matrix per view.

Defaults: the paper's weights ``lambda = mu = 25``, ``nu = 1`` and ``eps = 1e-4``; an expander of
3 layers of 2048 units instead of the paper's 8192 (a 3 x 8192 expander has 138 M parameters,
far more than a resnet18; 2048 is lightly's CIFAR-10 benchmark size). The paper trains with
LARS, base lr 0.2 per 256 images and weight decay 1e-6; see the shipped recipe for the values
measured on this project's CPU.

Example::

    >>> method = VICReg(create_backbone("resnet18", in_chans=1), VICReg.Config(),
    ...                 augment=BatchAugment(None, 28, 1), mean=[0.5], std=[0.25], image_size=28)
    >>> out = method(images)      # {"loss", "invariance", "variance", "embedding_std"}
    >>> out["loss"].backward()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from lightly.loss import VICRegLoss
from lightly.loss.vicreg_loss import invariance_loss, variance_loss
from lightly.models.modules.heads import VICRegProjectionHead
from torch import Tensor

from ssl_ft.errors import UserError
from ssl_ft.methods.base import SSLMethod, register
from ssl_ft.methods.joint import check_int, check_number, distributed, embedding_std
from ssl_ft.models import DepthBackbone

__all__ = ["VICReg", "VICRegConfig"]


@dataclass
class VICRegConfig:
    """Expander ``hidden_dim`` -> ``out_dim`` in ``num_layers`` layers; loss weights
    ``invariance_weight`` (lambda), ``variance_weight`` (mu), ``covariance_weight`` (nu); ``eps``
    inside the variance term's square root."""

    hidden_dim: int = 2048
    out_dim: int = 2048
    num_layers: int = 3
    invariance_weight: float = 25.0
    variance_weight: float = 25.0
    covariance_weight: float = 1.0
    eps: float = 1e-4

    def __post_init__(self) -> None:
        check_int(self, "hidden_dim", "out_dim")
        check_int(self, "num_layers", minimum=2)
        for name in ("invariance_weight", "variance_weight", "covariance_weight"):
            check_number(self, name, 0.0)
        check_number(self, "eps", 0.0, low_open=True)
        if self.invariance_weight == 0:
            raise ValueError("invariance_weight must be > 0 (without it the views are never "
                             "compared), got 0.0")


@register
class VICReg(SSLMethod):
    """VICReg (Bardes et al., ICLR 2022) on any :class:`~ssl_ft.models.DepthBackbone`."""

    name = "vicreg"
    family = "contrastive"  # joint-embedding, as Khan & Fang group MoCo/SimCLR-like methods
    Config = VICRegConfig

    def __init__(self, backbone: DepthBackbone, cfg: VICRegConfig, **kwargs: Any) -> None:
        super().__init__(backbone, cfg, **kwargs)
        self.projection_head = VICRegProjectionHead(backbone.num_features, cfg.hidden_dim,
                                                    cfg.out_dim, cfg.num_layers)
        self.criterion = VICRegLoss(lambda_param=cfg.invariance_weight,
                                    mu_param=cfg.variance_weight,
                                    nu_param=cfg.covariance_weight,
                                    gather_distributed=distributed(), eps=cfg.eps)

    def embed(self, x: Tensor) -> Tensor:
        """Expander output for images ``x`` in [0, 1]."""
        return self.projection_head(self.backbone(self.normalize(x)))

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # noqa: D102
        if len(x) < 2:
            raise UserError(f"VICReg needs batches of at least 2 images, got {len(x)}")
        z_a, z_b = self.embed(self.augment(x)), self.embed(self.augment(x))
        loss = self.criterion(z_a, z_b)
        with torch.no_grad():
            inv = invariance_loss(z_a, z_b)
            var = 0.5 * (variance_loss(z_a, self.cfg.eps) + variance_loss(z_b, self.cfg.eps))
        return {"loss": loss, "invariance": inv, "variance": var,
                "embedding_std": embedding_std(z_a)}
