"""MoCo v2: contrastive learning against a queue of keys from a momentum encoder.

He, Fan, Wu, Xie & Girshick, "Momentum Contrast for Unsupervised Visual Representation
Learning", CVPR 2020 (arXiv 1911.05722), with the v2 changes of Chen, Fan, Girshick & He,
"Improved Baselines with Momentum Contrastive Learning", arXiv 2003.04297 (2-layer MLP head,
temperature 0.2, stronger augmentation -- the latter is the ``augment`` callable's job).

The query encoder is the backbone + :class:`~lightly.models.modules.MoCoProjectionHead`; the key
encoder is a deep copy of both with ``requires_grad`` off, moved towards the query encoder by
``update_momentum`` in :meth:`MoCo.after_step` (``m`` constant as in MoCo v2, or
``momentum_schedule``: lightly's ``cosine_schedule`` from ``m`` to 1 over training, as in
BYOL/MoCo v3; the key encoder's BatchNorm statistics follow its own forward passes, as in the
official code). Loss: lightly's ``NTXentLoss`` with ``memory_bank_size=(queue_size, out_dim)``,
i.e. InfoNCE of each query against its key and the queue; the queue is updated with the batch's
keys (gathered from every rank under DDP) whenever the query requires a gradient, so an
evaluation under ``torch.no_grad()`` leaves it untouched. ``symmetric=True`` adds the loss with
the views swapped (``loss(q0, k1) + loss(q1, k0)`` and both keys enqueued, as in the official
MoCo CIFAR demo and MoCo v3), computed in one call so that both halves see the same queue.

Defaults for small medical datasets. ``queue_size=4096`` instead of 65,536: the queue should be
a small share of the training set, otherwise it is full of stale keys of the very images in the
batch (false negatives) and, with few steps per epoch, of keys from a much older encoder. 4096
is the MoCo CIFAR-10 demo's value (8 % of 50k images) and suits MedMNIST-sized sets of ~10-100k
images; for a few thousand images (PneumoniaMNIST: 4,708) use 10-25 % of the set, e.g. 1024.
``momentum=0.99`` instead of 0.999 (also the CIFAR demo's): with ~100 steps per epoch a 0.999
key encoder lags ~10 epochs behind. ``hidden_dim=2048``, ``out_dim=128`` and
``temperature=0.2`` are MoCo v2's.

Shuffling BN (MoCo Sec. 3.3): BatchNorm statistics shared by a query and its positive key leak
which key belongs to the current batch, and the model "cheats". The official fix: BN statistics
per GPU, and the key batch shuffled across GPUs before the key encoder. Here both encoders run
the local batch in ``shuffle_groups`` sub-batches (BN statistics per sub-batch, i.e. emulated
GPUs); the key batch is randomly permuted (lightly's ``batch_shuffle``) before it is split and
unpermuted after, so a key's BN group differs from its query's. Under DDP the key batch is
first shuffled across ranks with ``batch_shuffle_distributed`` (per-rank batches must have
equal size: ``drop_last``), as in the official code. We do not use SyncBN (it would compute
statistics over the whole global batch again) nor lightly's ``SplitBatchNorm`` (it changes the
shape of BN buffers, so checkpoints would no longer load into torchvision models). With
``shuffle_groups=1`` in a single process, shuffling would change nothing -- BN statistics do not
depend on the order of a batch -- which is why lightly's single-GPU example's ``batch_shuffle``
is a no-op there. A short final batch uses fewer groups (each needs >= 2 samples).

Example::

    >>> method = MoCo(create_backbone("resnet18", in_chans=1), MoCo.Config(queue_size=1024),
    ...               augment=BatchAugment(...), mean=[0.5], std=[0.25], image_size=28)
    >>> method(images)["loss"].backward(); optimizer.step()
    >>> method.after_step(step, total_steps)      # momentum update of the key encoder
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import (
    batch_shuffle,
    batch_shuffle_distributed,
    batch_unshuffle,
    batch_unshuffle_distributed,
    deactivate_requires_grad,
)
from torch import Tensor

from ssl_ft.methods.base import SSLMethod, register
from ssl_ft.methods.momentum import MomentumEncoderMixin
from ssl_ft.models import DepthBackbone

__all__ = ["MoCo", "MoCoConfig"]


@dataclass
class MoCoConfig:
    """``temperature`` of InfoNCE; ``queue_size`` negatives; key-encoder ``momentum`` (cosine
    schedule to 1 if ``momentum_schedule``); projection head ``hidden_dim`` -> ``out_dim``;
    ``symmetric`` loss; ``shuffle_groups`` BatchNorm groups per process (shuffling BN)."""

    temperature: float = 0.2
    queue_size: int = 4096
    momentum: float = 0.99
    momentum_schedule: bool = False
    hidden_dim: int = 2048
    out_dim: int = 128
    symmetric: bool = False
    shuffle_groups: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.temperature, int | float) or self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        for name in ("queue_size", "hidden_dim", "out_dim", "shuffle_groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.momentum, int | float) or not 0 <= self.momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {self.momentum!r}")
        for name in ("momentum_schedule", "symmetric"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


@register
class MoCo(MomentumEncoderMixin, SSLMethod):
    """MoCo v2 (He et al., CVPR 2020; Chen et al., arXiv 2003.04297) on any
    :class:`~ssl_ft.models.DepthBackbone`."""

    name = "moco"
    family = "contrastive"
    Config = MoCoConfig

    def __init__(self, backbone: DepthBackbone, cfg: MoCoConfig, **kwargs: Any) -> None:
        super().__init__(backbone, cfg, **kwargs)
        self.projection_head = MoCoProjectionHead(backbone.num_features, cfg.hidden_dim,
                                                  cfg.out_dim)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.distributed = _distributed()
        self.criterion = NTXentLoss(temperature=cfg.temperature,
                                    memory_bank_size=(cfg.queue_size, cfg.out_dim),
                                    gather_distributed=self.distributed)
        self.last_momentum = float(cfg.momentum)

    @property
    def queue(self) -> Tensor:
        """The queue of normalised keys, ``(queue_size, out_dim)`` (lightly's memory bank)."""
        return self.criterion.memory_bank.bank

    @property
    def queue_ptr(self) -> int:
        """Row of the queue that the next key is written to."""
        return int(self.criterion.memory_bank.bank_ptr)

    def _groups(self, n: int) -> int:
        return max(1, min(self.cfg.shuffle_groups, n // 2))

    def query(self, x: Tensor) -> Tensor:
        """Query embeddings, the batch run in ``shuffle_groups`` BatchNorm groups."""
        return torch.cat([self.projection_head(self.backbone(self.normalize(part)))
                          for part in x.tensor_split(self._groups(len(x)))])

    @torch.no_grad()
    def key(self, x: Tensor) -> Tensor:
        """Key embeddings from the momentum encoder with shuffling BN (see module doc)."""
        shuffle = None
        if self.distributed:
            x, shuffle = batch_shuffle_distributed(x)
        elif self._groups(len(x)) > 1:
            x, shuffle = batch_shuffle(x)
        k = torch.cat([self.projection_head_momentum(self.backbone_momentum(self.normalize(part)))
                       for part in x.tensor_split(self._groups(len(x)))])
        if shuffle is None:
            return k
        if self.distributed:
            return batch_unshuffle_distributed(k, shuffle)
        return batch_unshuffle(k, shuffle)

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # noqa: D102
        v0, v1 = self.augment(x), self.augment(x)
        if self.cfg.symmetric:
            q = torch.cat([self.query(v0), self.query(v1)])
            k = torch.cat([self.key(v1), self.key(v0)])
            return {"loss": 2 * self.criterion(q, k)}
        return {"loss": self.criterion(self.query(v0), self.key(v1))}

    def extra_state(self) -> dict[str, Tensor]:
        """The queue and its pointer (lightly keeps them out of ``state_dict``)."""
        bank = self.criterion.memory_bank
        return {"queue": bank.bank.detach().clone(), "queue_ptr": bank.bank_ptr.detach().clone()}

    def load_extra_state(self, state: dict[str, Tensor]) -> None:
        """Restore the queue and pointer saved by :meth:`extra_state`, bit for bit."""
        bank = self.criterion.memory_bank
        missing = {"queue", "queue_ptr"} - set(state)
        if missing:
            raise ValueError(f"MoCo extra state lacks {sorted(missing)}")
        queue, ptr = state["queue"], state["queue_ptr"]
        if tuple(queue.shape) != tuple(bank.bank.shape):
            raise ValueError(f"saved MoCo queue has shape {tuple(queue.shape)}, this run expects "
                             f"{tuple(bank.bank.shape)} (queue_size, out_dim)")
        if ptr.numel() != 1 or not 0 <= int(ptr) < bank.bank.shape[0]:
            raise ValueError(f"saved MoCo queue pointer {ptr.tolist()} is out of range")
        with torch.no_grad():
            bank.bank.copy_(queue.to(bank.bank.device, bank.bank.dtype))
            bank.bank_ptr.copy_(ptr.reshape(bank.bank_ptr.shape).to(bank.bank_ptr.device))
