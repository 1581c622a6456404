"""Autoencoder: reconstruct the input through the backbone and a decoder.

Hinton & Salakhutdinov, "Reducing the Dimensionality of Data with Neural Networks", Science 313,
2006 (the bottleneck autoencoder); with ``noise`` set, the denoising autoencoder of Vincent,
Larochelle, Bengio & Manzagol, "Extracting and Composing Robust Features with Denoising
Autoencoders", ICML 2008 (masking noise) and Vincent et al., JMLR 2010 (Gaussian noise): the
input is corrupted and the clean image is the target.

The (lightly augmented) batch is encoded by the backbone, decoded by
:class:`~ssl_ft.methods.decoder.Decoder` (sigmoid output in [0, 1]) and compared with the
augmented batch by MSE or L1. The decoder has no skip connections by default: a U-Net skip at
a shallow unit would let the network copy its input and leave the deep units untrained (see
:mod:`ssl_ft.methods.decoder`).

Example::

    >>> method = Autoencoder(create_backbone("resnet18", in_chans=1), Autoencoder.Config(),
    ...                      augment=lambda x: x, mean=[0.5], std=[0.25], image_size=28)
    >>> method(images)["loss"].backward()
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ssl_ft.methods.base import register
from ssl_ft.methods.corruptions import gaussian_noise, masking_noise
from ssl_ft.methods.decoder import RestorativeConfig, RestorativeMethod

__all__ = ["Autoencoder", "AutoencoderConfig"]

NOISES = ("none", "gaussian", "masking")


@dataclass
class AutoencoderConfig(RestorativeConfig):
    """``noise``: ``"none"`` (plain autoencoder), ``"gaussian"`` (additive, std ``noise_level``)
    or ``"masking"`` (a ``noise_level`` fraction of pixels set to 0); plus the decoder's ``skip``
    (default ``False``), ``decoder_channels`` and the ``loss`` (``"mse"`` or ``"l1"``)."""

    noise: str = "none"
    noise_level: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.noise not in NOISES:
            raise ValueError(f"noise must be one of {', '.join(NOISES)}, got {self.noise!r}")
        level = self.noise_level
        if not isinstance(level, int | float) or level < 0 or (self.noise == "masking"
                                                                and level >= 1):
            raise ValueError(f"noise_level must be >= 0 (and < 1 for masking noise), got "
                             f"{level!r}")


@register
class Autoencoder(RestorativeMethod):
    """(Denoising) autoencoder (Hinton & Salakhutdinov 2006; Vincent et al. 2008) on any
    :class:`~ssl_ft.models.DepthBackbone`."""

    name = "autoencoder"
    Config = AutoencoderConfig

    def corrupt(self, x: Tensor, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor | None]:
        """The input itself, or its noisy version for a denoising autoencoder."""
        if self.cfg.noise == "gaussian":
            return gaussian_noise(x, self.cfg.noise_level, generator), None
        if self.cfg.noise == "masking":
            return masking_noise(x, self.cfg.noise_level, generator), None
        return x, None
