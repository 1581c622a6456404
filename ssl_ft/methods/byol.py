"""BYOL: an online network predicts a slow-moving target network's embedding of another view.

Grill, Strub, Altché, Tallec, Richemond, Buchatskaya, Doersch, Pires, Guo, Azar, Piot,
Kavukcuoglu, Munos & Valko, "Bootstrap Your Own Latent: A New Approach to Self-Supervised
Learning", NeurIPS 2020 (arXiv 2006.07733).

Online network: the backbone, :class:`~lightly.models.modules.BYOLProjectionHead` and
:class:`~lightly.models.modules.BYOLPredictionHead`; target network: a copy of the backbone and
projection head with ``requires_grad`` off, moved towards the online one by lightly's
``update_momentum`` after every optimiser step, with the momentum following lightly's
``cosine_schedule`` from ``momentum`` to 1 over training (BYOL Sec. 3.2; ``momentum_schedule``
false keeps it constant). No negatives, so nothing is gathered under DDP. The target's
BatchNorm statistics follow its own forward passes (batch statistics in training mode, as in the
official code). The checkpoint's backbone is the online encoder.

Loss (BYOL Eq. 2, symmetrised): for each direction, the squared distance of the l2-normalised
online prediction ``q`` of one view and the target projection ``z'`` of the other,
``2 - 2 cos(q, z') = 2 + 2 * NegativeCosineSimilarity(q, z')`` (lightly's loss), summed over
the two directions: 0 when the predictions match, at most 8. The step also logs
``embedding_std`` (:func:`~ssl_ft.methods.joint.embedding_std` of the online projections, about
1 when spread out, 0 when collapsed).

Defaults are BYOL's: projection 4096 -> 256, predictor 4096 -> 256, base momentum 0.99 (the
official code's value for its shorter schedules; the paper's 1000 epochs use 0.996) with the
cosine schedule to 1. The two views come from the project's ``BatchAugment`` with the same
settings for both (BYOL's asymmetric blur and solarisation are not used).

Example::

    >>> method = BYOL(create_backbone("resnet18", in_chans=1), BYOL.Config(hidden_dim=1024),
    ...               augment=BatchAugment(None, 28, 1), mean=[0.5], std=[0.25], image_size=28)
    >>> method(images)["loss"].backward(); optimizer.step()
    >>> method.after_step(step, total_steps)      # momentum update of the target network
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad
from torch import Tensor

from ssl_ft.methods.base import SSLMethod, register
from ssl_ft.methods.joint import check_bool, check_int, check_number, embedding_std
from ssl_ft.methods.momentum import MomentumEncoderMixin
from ssl_ft.models import DepthBackbone

__all__ = ["BYOL", "BYOLConfig"]


@dataclass
class BYOLConfig:
    """Projection head ``hidden_dim`` -> ``out_dim``, predictor ``predictor_hidden_dim`` ->
    ``out_dim``; target ``momentum`` (cosine schedule to 1 if ``momentum_schedule``)."""

    hidden_dim: int = 4096
    out_dim: int = 256
    predictor_hidden_dim: int = 4096
    momentum: float = 0.99
    momentum_schedule: bool = True

    def __post_init__(self) -> None:
        check_int(self, "hidden_dim", "out_dim", "predictor_hidden_dim")
        check_number(self, "momentum", 0.0, 1.0)
        check_bool(self, "momentum_schedule")


@register
class BYOL(MomentumEncoderMixin, SSLMethod):
    """BYOL (Grill et al., NeurIPS 2020) on any :class:`~ssl_ft.models.DepthBackbone`."""

    name = "byol"
    family = "contrastive"  # joint-embedding, as Khan & Fang group MoCo/SimCLR-like methods
    Config = BYOLConfig

    def __init__(self, backbone: DepthBackbone, cfg: BYOLConfig, **kwargs: Any) -> None:
        super().__init__(backbone, cfg, **kwargs)
        self.projection_head = BYOLProjectionHead(backbone.num_features, cfg.hidden_dim,
                                                  cfg.out_dim)
        self.prediction_head = BYOLPredictionHead(cfg.out_dim, cfg.predictor_hidden_dim,
                                                  cfg.out_dim)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NegativeCosineSimilarity()
        self.last_momentum = float(cfg.momentum)

    def online(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Online projection and prediction of images ``x`` in [0, 1]."""
        z = self.projection_head(self.backbone(self.normalize(x)))
        return z, self.prediction_head(z)

    @torch.no_grad()
    def target(self, x: Tensor) -> Tensor:
        """Target projection (no gradient)."""
        return self.projection_head_momentum(self.backbone_momentum(self.normalize(x)))

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # noqa: D102
        v0, v1 = self.augment(x), self.augment(x)
        z0, q0 = self.online(v0)
        _, q1 = self.online(v1)
        t0, t1 = self.target(v0), self.target(v1)
        loss = (2 + 2 * self.criterion(q0, t1)) + (2 + 2 * self.criterion(q1, t0))
        return {"loss": loss, "embedding_std": embedding_std(z0)}
