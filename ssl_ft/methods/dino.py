"""DINO: self-distillation of a momentum teacher into a student across global and local crops.

Caron, Touvron, Misra, Jégou, Mairal, Bojanowski & Joulin, "Emerging Properties in
Self-Supervised Vision Transformers", ICCV 2021 (arXiv 2104.14294).

Student: the backbone + lightly's :class:`~lightly.models.modules.DINOProjectionHead` (3-layer
MLP, l2-normalised bottleneck, weight-normalised last layer of ``out_dim`` "prototypes").
Teacher: a copy of both with ``requires_grad`` off, moved towards the student by lightly's
``update_momentum`` after every optimiser step, the momentum following lightly's
``cosine_schedule`` from ``momentum`` to 1 (DINO Sec. 3.1). Loss: lightly's
:class:`~lightly.loss.DINOLoss`, the cross-entropy between the teacher's centred, sharpened
softmax (``teacher_temp``) of each global view and the student's softmax (``student_temp``) of
every other view; the centre is a moving average (``center_momentum``) of the teacher's outputs,
averaged over DDP ranks inside lightly. The teacher temperature warms up linearly from
``warmup_teacher_temp`` over the first ``teacher_temp_warmup`` of training (a fraction of the
run's optimiser steps: DINO's 30 of 100 epochs is 0.3), and the last layer's gradients are
dropped (after the DDP reduction, before the optimiser step, as the official code does) during
the first ``freeze_last_layer`` of training (DINO: 1 epoch).

Views: two global views from the project's ``BatchAugment`` (the recipe's ``augment``
settings; the teacher sees only these), and ``local_crops`` smaller views of ``local_size`` px
(default about 3/7 of the image side, as DINO's 96 of 224, but at least 16 px) cut with
``local_crop_scale`` and otherwise the same augmentation. Local crops are off by default: at
28 px a local crop is a 9-16 px patch of the image, and each costs about a third of a global
view. As in the official code, the student runs all global views as one batch and all local
views as another (BatchNorm statistics per group), the teacher the global views as one batch.

The checkpoint's backbone is the student. Everything a resumed run needs is in
``state_dict()``: the teacher, the centre, and a ``progress`` buffer of (optimiser steps done,
total steps) that the temperature warm-up and the freeze read, so the first step after a
resume uses the same temperature as the uninterrupted run. A forward pass under
``torch.no_grad()`` leaves the centre unchanged.

Defaults for a resnet on small medical sets: DINO's ResNet-50 settings (no BatchNorm in the
head, normalised last layer, teacher temperature 0.04 without warm-up, student 0.1, centre
momentum 0.9, teacher momentum 0.996), but ``out_dim=4096`` instead of 65536 prototypes (a few
thousand images; lightly's examples use 2048) and no frozen last layer (``freeze_last_layer=0``).
Measured on PneumoniaMNIST (docs/pretraining.md): in 5 epochs (90 steps) with these defaults the
loss stayed at ln(out_dim), the teacher's centred output being near uniform, and the online kNN
barely moved; with BatchNorm in the head or momentum 0.99 as well. Short runs are not enough.

Example::

    >>> method = DINO(create_backbone("resnet18", in_chans=1), DINO.Config(local_crops=2),
    ...               augment=BatchAugment(None, 28, 1), mean=[0.5], std=[0.25], image_size=28)
    >>> loss = method(images)["loss"]; loss.backward()
    >>> method.before_step(step, total_steps); optimizer.step()
    >>> method.after_step(step, total_steps)      # momentum update of the teacher
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, replace
from typing import Any

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor

from ssl_ft.augment import BatchAugment
from ssl_ft.errors import UserError
from ssl_ft.methods.base import SSLMethod, register
from ssl_ft.methods.joint import check_bool, check_int, check_number, embedding_std
from ssl_ft.models import DepthBackbone

__all__ = ["DINO", "DINOConfig"]


@dataclass
class DINOConfig:
    """Head ``hidden_dim`` -> ``bottleneck_dim`` -> ``out_dim`` prototypes (``batch_norm`` in
    the MLP, ``norm_last_layer``); temperatures, centre momentum, teacher ``momentum``
    (cosine schedule to 1 if ``momentum_schedule``); warm-up and freeze as fractions of
    training; ``local_crops`` of ``local_size`` px (None: automatic) and ``local_crop_scale``."""

    out_dim: int = 4096
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    batch_norm: bool = False
    norm_last_layer: bool = True
    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    teacher_temp_warmup: float = 0.0
    center_momentum: float = 0.9
    momentum: float = 0.996
    momentum_schedule: bool = True
    freeze_last_layer: float = 0.0
    local_crops: int = 0
    local_size: int | None = None
    local_crop_scale: tuple[float, float] = (0.1, 0.35)

    def __post_init__(self) -> None:
        check_int(self, "out_dim", "hidden_dim", "bottleneck_dim")
        check_int(self, "local_crops", minimum=0)
        if self.local_size is not None:
            check_int(self, "local_size", minimum=8)
        check_bool(self, "batch_norm", "norm_last_layer", "momentum_schedule")
        for name in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
            check_number(self, name, 0.0, low_open=True)
        for name in ("center_momentum", "momentum", "teacher_temp_warmup", "freeze_last_layer"):
            check_number(self, name, 0.0, 1.0)
        scale = self.local_crop_scale
        if (not isinstance(scale, tuple | list) or len(scale) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in scale)
                or not 0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"local_crop_scale must be (min, max) with 0 < min <= max <= 1, "
                             f"got {scale!r}")


def _head(cfg: DINOConfig, in_dim: int) -> DINOProjectionHead:
    with warnings.catch_warnings():  # lightly's head uses the deprecated nn.utils.weight_norm
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        return DINOProjectionHead(in_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.out_dim,
                                  batch_norm=cfg.batch_norm, norm_last_layer=cfg.norm_last_layer)


def default_local_size(image_size: int) -> int:
    """About 3/7 of ``image_size`` (DINO: 96 of 224), at least 16 px, at most the image."""
    return min(image_size, max(16, round(image_size * 3 / 7)))


@register
class DINO(SSLMethod):
    """DINO (Caron et al., ICCV 2021) on any :class:`~ssl_ft.models.DepthBackbone`."""

    name = "dino"
    family = "contrastive"  # joint-embedding, as Khan & Fang group MoCo/SimCLR-like methods
    Config = DINOConfig

    def __init__(self, backbone: DepthBackbone, cfg: DINOConfig, **kwargs: Any) -> None:
        super().__init__(backbone, cfg, **kwargs)
        self.projection_head = _head(cfg, backbone.num_features)
        self.backbone_momentum = copy.deepcopy(backbone)
        # weight_norm modules cannot be deep-copied once used: build a twin and copy the state
        self.projection_head_momentum = _head(cfg, backbone.num_features)
        self.projection_head_momentum.load_state_dict(self.projection_head.state_dict())
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = DINOLoss(output_dim=cfg.out_dim, warmup_teacher_temp=cfg.teacher_temp,
                                  teacher_temp=cfg.teacher_temp, warmup_teacher_temp_epochs=0,
                                  student_temp=cfg.student_temp,
                                  center_momentum=cfg.center_momentum)
        self.register_buffer("progress", torch.zeros(2, dtype=torch.long))  # steps done, total
        self.local_augment: BatchAugment | None = None
        if cfg.local_crops:
            if not isinstance(self.augment, BatchAugment):
                raise ValueError("DINO local crops need a BatchAugment as augment, got "
                                 f"{type(self.augment).__name__}")
            size = cfg.local_size or default_local_size(self.image_size)
            if size > self.image_size:
                raise UserError(f"method_args.local_size {size} is larger than the "
                                f"{self.image_size} px images")
            self.local_augment = BatchAugment(
                replace(self.augment.cfg, crop_scale=tuple(cfg.local_crop_scale)), size,
                self.augment.channels)
        self.last_momentum = float(cfg.momentum)

    def student(self, x: Tensor) -> Tensor:
        """Student logits ``(N, out_dim)`` for images ``x`` in [0, 1]."""
        return self.projection_head(self.backbone(self.normalize(x)))

    @torch.no_grad()
    def teacher(self, x: Tensor) -> Tensor:
        """Teacher logits (no gradient)."""
        return self.projection_head_momentum(self.backbone_momentum(self.normalize(x)))

    def teacher_temp_at(self, step: int, total_steps: int) -> float:
        """Teacher temperature at optimiser step ``step`` (0-based) of ``total_steps``."""
        cfg = self.cfg
        warm = cfg.teacher_temp_warmup * total_steps
        if cfg.teacher_temp_warmup == 0 or (total_steps > 0 and step >= warm):
            return float(cfg.teacher_temp)
        t = step / warm if total_steps > 0 else 0.0
        return float(cfg.warmup_teacher_temp + t * (cfg.teacher_temp - cfg.warmup_teacher_temp))

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # noqa: D102
        n = len(x)
        views = torch.cat([self.augment(x), self.augment(x)])
        teacher_out = self.teacher(views).chunk(2)
        student_global = self.student(views)
        student_out = list(student_global.chunk(2))
        if self.local_augment is not None:
            local = torch.cat([self.local_augment(x) for _ in range(self.cfg.local_crops)])
            student_out += list(self.student(local).split(n))
        step, total = (int(v) for v in self.progress)
        center = None if torch.is_grad_enabled() else self.criterion.center.detach().clone()
        loss = self.criterion(list(teacher_out), student_out,
                              teacher_temp=self.teacher_temp_at(step, total))
        if center is not None:  # an evaluation, not a training step: keep the centre
            self.criterion.center.data = center
        return {"loss": loss, "embedding_std": embedding_std(student_global[:n])}

    def momentum_at(self, step: int, total_steps: int) -> float:
        """Teacher momentum after optimiser step ``step`` (0-based) of ``total_steps``."""
        if self.cfg.momentum_schedule and total_steps > 0:
            return cosine_schedule(min(step, total_steps), total_steps, self.cfg.momentum, 1.0)
        return float(self.cfg.momentum)

    def last_layer_frozen(self, step: int, total_steps: int) -> bool:
        """Whether step ``step`` leaves the head's last layer alone (``freeze_last_layer``)."""
        return step < self.cfg.freeze_last_layer * total_steps

    def before_step(self, step: int, total_steps: int) -> None:
        """Drop the last layer's gradients while it is frozen (no update, no weight decay)."""
        if self.last_layer_frozen(step, total_steps):
            for p in self.projection_head.last_layer.parameters():
                p.grad = None

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Momentum update of the teacher; record the progress for the schedules."""
        m = self.momentum_at(step, total_steps)
        update_momentum(self.backbone, self.backbone_momentum, m)
        update_momentum(self.projection_head, self.projection_head_momentum, m)
        self.progress.copy_(torch.tensor([step + 1, total_steps]))
        self.last_momentum = m
