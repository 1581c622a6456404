"""The interface every SSL method implements, and the registry that names them.

A method is an ``nn.Module`` that owns the backbone and its method-specific parts (projection
heads, momentum encoder, decoder). The pretraining engine (:mod:`ssl_ft.pretrain`) only calls
``forward`` (so DDP can wrap it), ``before_step``, ``after_step``,
``extra_state``/``load_extra_state`` and ``example_images``. A new method is one small file with a ``Config`` dataclass and an
:class:`SSLMethod` subclass, one :func:`register` call, and one test file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from ssl_ft.errors import UserError
from ssl_ft.models import DepthBackbone

__all__ = ["METHODS", "SSLMethod", "get_method", "register"]


class SSLMethod(nn.Module):
    """Base class: a backbone plus what one SSL method trains around it.

    Args:
        backbone: the encoder whose weights the checkpoint keeps.
        cfg: an instance of the subclass's ``Config`` dataclass.
        augment: batched augmentation, ``(N, C, H, W)`` in [0, 1] to the same shape; contrastive
            methods call it twice per batch for two views.
        mean, std: per-channel normalisation applied right before the backbone.
        image_size: input side in pixels.
    """

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""  # "contrastive" or "restorative"
    Config: ClassVar[type] = object

    def __init__(
        self,
        backbone: DepthBackbone,
        cfg: Any,
        *,
        augment: Callable[[torch.Tensor], torch.Tensor],
        mean: Sequence[float],
        std: Sequence[float],
        image_size: int,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.cfg = cfg
        self.augment = augment
        self.image_size = image_size
        c = backbone.in_chans
        if len(mean) != c or len(std) != c:
            raise ValueError(f"mean/std need {c} values, got {list(mean)} / {list(std)}")
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, c, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std)).view(1, c, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images to the backbone's input normalisation."""
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One training step's loss on a batch of raw images in [0, 1].

        Returns a dict with ``"loss"`` (scalar, differentiable) and any other scalars to log.
        """
        raise NotImplementedError

    def before_step(self, step: int, total_steps: int) -> None:
        """Called between ``loss.backward()`` (gradients reduced across DDP ranks) and the
        optimiser step ``step`` (0-based), e.g. to drop the gradients of a layer that is still
        frozen (DINO's last layer)."""

    def after_step(self, step: int, total_steps: int) -> None:
        """Called after every optimiser step (e.g. a momentum-encoder update)."""

    def extra_state(self) -> dict[str, torch.Tensor]:
        """State outside ``state_dict()`` that a resumed run needs (e.g. a MoCo queue)."""
        return {}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`extra_state` returned."""

    @torch.no_grad()
    def example_images(self, x: torch.Tensor) -> torch.Tensor | None:
        """Optional ``(K, C, H, W)`` images in [0, 1] for TensorBoard (e.g. input / corrupted /
        restored rows of a restorative method)."""
        return None


METHODS: dict[str, type[SSLMethod]] = {}


def register(cls: type[SSLMethod]) -> type[SSLMethod]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name or cls.family not in ("contrastive", "restorative"):
        raise ValueError(f"{cls.__name__} needs a name and a family")
    METHODS[cls.name] = cls
    return cls


def get_method(name: str) -> type[SSLMethod]:
    """The registered method ``name``; a :class:`UserError` lists the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(
            f"unknown SSL method {name!r}; choose one of {', '.join(sorted(METHODS))}"
        ) from None
