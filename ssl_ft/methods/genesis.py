"""Models Genesis: restore images from a random mix of four corruptions.

Zhou, Sodha, Rahman Siddiquee, Feng, Tajbakhsh, Gotway & Liang, "Models Genesis: Generic
Autodidactic Models for 3D Medical Image Analysis", MICCAI 2019, and Zhou, Sodha, Pang, Gotway &
Liang, "Models Genesis", Medical Image Analysis 67, 2021 (code: github.com/MrGiovanni/
ModelsGenesis). Here in 2D.

Per sample, as in the official ``generate_pair``, with the official probabilities:

1. local pixel shuffling with probability ``local_rate`` (0.5);
2. a non-linear monotonic intensity curve (cubic Bezier) with probability ``nonlinear_rate``
   (0.9). Both are pointwise-or-permutation maps, so their order does not matter (the paper's
   figure lists the intensity curve first, the code applies the shuffle first);
3. with probability ``paint_rate`` (0.9) either in-painting (probability ``inpaint_rate``, 0.2)
   or out-painting (0.8).

The network (backbone + U-Net decoder with skip connections by default, like the paper's U-Net;
see :mod:`ssl_ft.methods.decoder`) restores the original with an MSE loss. The official code's
random flips (``flip_rate`` 0.4, applied to input and target alike) are augmentation, not
corruption: they belong to the ``augment`` callable, which is applied once before corrupting.

Example::

    >>> method = Genesis(create_backbone("resnet18", in_chans=1), Genesis.Config(),
    ...                  augment=lambda x: x, mean=[0.5], std=[0.25], image_size=28)
    >>> method(images)["loss"].backward()
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ssl_ft.methods.base import register
from ssl_ft.methods.corruptions import (
    bezier_intensity,
    genesis_inpaint,
    genesis_outpaint,
    local_pixel_shuffle,
)
from ssl_ft.methods.decoder import RestorativeConfig, RestorativeMethod, check_prob

__all__ = ["Genesis", "GenesisConfig", "genesis_corrupt"]


@dataclass
class GenesisConfig(RestorativeConfig):
    """Probabilities of the corruptions (defaults from the paper's code): ``nonlinear_rate``
    0.9, ``local_rate`` 0.5, ``paint_rate`` 0.9, ``inpaint_rate`` 0.2 (out-painting otherwise);
    ``shuffle_window``: largest local-shuffle window side in pixels, 0 for a tenth of the image
    side (at least 2). Plus ``skip`` (default ``True``: the paper's U-Net),
    ``decoder_channels`` and ``loss`` (``"mse"`` as in the paper)."""

    skip: bool = True
    nonlinear_rate: float = 0.9
    local_rate: float = 0.5
    paint_rate: float = 0.9
    inpaint_rate: float = 0.2
    shuffle_window: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("nonlinear_rate", "local_rate", "paint_rate", "inpaint_rate"):
            check_prob(name, getattr(self, name))
        if not isinstance(self.shuffle_window, int) or self.shuffle_window < 0:
            raise ValueError(f"shuffle_window must be an integer >= 0, got "
                             f"{self.shuffle_window!r}")


def genesis_corrupt(x: Tensor, cfg: GenesisConfig,
                    generator: torch.Generator | None = None) -> Tensor:
    """The Models Genesis corruption of a batch ``(N, C, H, W)`` in [0, 1] (see module doc)."""
    out = local_pixel_shuffle(x, p=cfg.local_rate, max_window=cfg.shuffle_window or None,
                              generator=generator)
    out = bezier_intensity(out, p=cfg.nonlinear_rate, generator=generator)
    draws = torch.rand(x.shape[0], 2, generator=generator)
    paint = draws[:, 0] < cfg.paint_rate
    inpaint = (paint & (draws[:, 1] < cfg.inpaint_rate)).to(x.device)
    outpaint = (paint & (draws[:, 1] >= cfg.inpaint_rate)).to(x.device)
    if inpaint.any():
        out[inpaint] = genesis_inpaint(out[inpaint], generator=generator)[0]
    if outpaint.any():
        out[outpaint] = genesis_outpaint(out[outpaint], generator=generator)[0]
    return out


@register
class Genesis(RestorativeMethod):
    """Models Genesis (Zhou et al., MICCAI 2019; MedIA 2021) on any
    :class:`~ssl_ft.models.DepthBackbone`."""

    name = "genesis"
    Config = GenesisConfig

    def corrupt(self, x: Tensor, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor | None]:
        """Shuffle, intensity curve, in- or out-painting; no loss weight (plain MSE)."""
        return genesis_corrupt(x, self.cfg, generator), None
