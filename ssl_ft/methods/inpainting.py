"""Inpainting and context restoration: restore masked or scrambled regions of an image.

Two modes (``Config.mode``):

``"inpaint"``
    Pathak, Krahenbuhl, Donahue, Darrell & Efros, "Context Encoders: Feature Learning by
    Inpainting", CVPR 2016. Random rectangular holes ("random block" masks, covering about
    ``hole_fraction`` of the image) are filled with ``hole_fill`` and the network restores the
    image. Pathak et al. reconstruct only the hole with an L2 loss (plus an adversarial loss,
    not used here); we weight hole pixels ``loss_hole_weight`` times more than the visible
    context (default 10), which keeps the reconstruction of the context (and the example
    images) sensible without diluting the inpainting signal; ``loss_hole_weight`` very large
    approaches the paper's hole-only loss.
``"context_restoration"``
    Chen, Bentley, Mori, Misawa, Fujiwara & Rueckert, "Self-supervised learning for medical
    image analysis using image context restoration", Medical Image Analysis 58, 2019. Two
    non-overlapping small patches are swapped ``num_swaps`` times, which keeps the intensity
    histogram but breaks the spatial context; the network restores the original with an L2
    loss over the whole image, as in the paper. Chen et al. tune patch size and number of
    swaps per dataset; our defaults (patches of 1/8 of the side, 10 swaps: about a quarter of a
    28 or 64 px image is moved) are a starting point, not the paper's values.

Both modes use the plain decoder (``skip=False``) by default; see :mod:`ssl_ft.methods.decoder`.

Example::

    >>> cfg = Inpainting.Config(mode="context_restoration")
    >>> method = Inpainting(create_backbone("resnet18", in_chans=1), cfg,
    ...                     augment=lambda x: x, mean=[0.5], std=[0.25], image_size=28)
    >>> method(images)["loss"].backward()
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ssl_ft.methods.base import register
from ssl_ft.methods.corruptions import random_holes, swap_patches
from ssl_ft.methods.decoder import RestorativeConfig, RestorativeMethod

__all__ = ["Inpainting", "InpaintingConfig"]

MODES = ("inpaint", "context_restoration")
FILLS = ("mean", "zero", "noise")


@dataclass
class InpaintingConfig(RestorativeConfig):
    """``mode``: ``"inpaint"`` or ``"context_restoration"``.

    Inpaint: ``hole_fraction`` of the image covered by holes whose sides are
    ``hole_size = (min, max)`` fractions of the image side; ``hole_fill`` ``"mean"`` (the
    normalisation mean, so the backbone sees 0 there, as Pathak et al.), ``"zero"`` or
    ``"noise"`` (uniform); ``loss_hole_weight`` >= 1: weight of hole pixels relative to context
    pixels. Context restoration: ``num_swaps`` swaps of two patches whose side is
    ``patch_size`` times the image side (at least 1 pixel). Plus ``skip`` (default ``False``),
    ``decoder_channels`` and ``loss``.
    """

    mode: str = "inpaint"
    hole_fraction: float = 0.25
    hole_size: tuple[float, float] = (0.125, 0.25)
    hole_fill: str = "mean"
    loss_hole_weight: float = 10.0
    num_swaps: int = 10
    patch_size: float = 0.125

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not isinstance(self.hole_fraction, int | float) or not 0 < self.hole_fraction < 1:
            raise ValueError(f"hole_fraction must be in (0, 1), got {self.hole_fraction!r}")
        size = tuple(self.hole_size) if isinstance(self.hole_size, list | tuple) else ()
        if len(size) != 2 or not all(isinstance(s, int | float) for s in size) or not (
                0 < size[0] <= size[1] <= 1):
            raise ValueError(f"hole_size must be [min, max] with 0 < min <= max <= 1, got "
                             f"{self.hole_size!r}")
        self.hole_size = (float(size[0]), float(size[1]))
        if self.hole_fill not in FILLS:
            raise ValueError(f"hole_fill must be one of {', '.join(FILLS)}, got "
                             f"{self.hole_fill!r}")
        if not isinstance(self.loss_hole_weight, int | float) or self.loss_hole_weight < 1:
            raise ValueError(f"loss_hole_weight must be >= 1, got {self.loss_hole_weight!r}")
        if not isinstance(self.num_swaps, int) or self.num_swaps < 1:
            raise ValueError(f"num_swaps must be an integer >= 1, got {self.num_swaps!r}")
        if not isinstance(self.patch_size, int | float) or not 0 < self.patch_size <= 0.5:
            raise ValueError(f"patch_size must be in (0, 0.5], got {self.patch_size!r}")


@register
class Inpainting(RestorativeMethod):
    """Context Encoder inpainting (Pathak et al., CVPR 2016) or context restoration (Chen et al.,
    MedIA 2019) on any :class:`~ssl_ft.models.DepthBackbone`."""

    name = "inpainting"
    Config = InpaintingConfig

    def corrupt(self, x: Tensor, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor | None]:
        """Holes with a per-pixel loss weight (inpaint), or swapped patches (no weight)."""
        cfg = self.cfg
        if cfg.mode == "context_restoration":
            ph = max(1, round(cfg.patch_size * x.shape[-2]))
            pw = max(1, round(cfg.patch_size * x.shape[-1]))
            out, _ = swap_patches(x, num_swaps=cfg.num_swaps, patch=(ph, pw), generator=generator)
            return out, None
        fill: float | Tensor | None = {"mean": self.mean.flatten(), "zero": 0.0,
                                       "noise": None}[cfg.hole_fill]
        out, hole = random_holes(x, fraction=cfg.hole_fraction, size=cfg.hole_size, fill=fill,
                                 generator=generator)
        weight = 1.0 + (cfg.loss_hole_weight - 1.0) * hole.to(x.dtype)
        return out, weight
