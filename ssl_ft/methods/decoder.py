"""The decoder shared by the restorative methods, and their common base class.

:class:`Decoder` turns the feature maps of :meth:`DepthBackbone.forward_intermediates` back into an
image of the input size (sigmoid output in [0, 1]). It works for every backbone of
:mod:`ssl_ft.models` (ResNet, DenseNet, VGG; 1 or 3 channels; standard or low-resolution stem;
any input size, odd ones included): at construction it probes the backbone once with a 64 px
input to learn the stride of every unit, and then upsamples from the deepest stride to stride 1
in factor-2 steps, resizing every step to an explicit target size (the skip's size, or
``ceil(H / stride)``), so odd sizes such as 28 -> 14 -> 7 -> 4 -> 2 -> 1 come back exactly.
Channels follow ``channels`` (default 256-128-64-32, then 32 for any further step): a 1x1
bottleneck convolution, then per step bilinear upsampling + 3x3 conv-BN-ReLU, and a final 1x1
convolution to the input channels. About 0.3-0.5 M parameters for a ResNet-18: cheap on a CPU.

``skip`` (U-Net skip connections, Ronneberger et al., MICCAI 2015) and the per-method defaults
------------------------------------------------------------------------------------------------

``skip=True``: at every stride shallower than the deepest one, the last unit at that stride
(e.g. ``layer1.1``, ``layer2.1``, ``layer3.1`` of a ResNet-18; the end of every dense block of a
DenseNet) feeds the decoder through a 1x1 lateral convolution that is concatenated to the
upsampled path. ``skip=False``: only the deepest feature map is used (``indices`` is the last
unit alone); everything the decoder reconstructs has to pass through the whole encoder.

Why it matters here: the project asks *which layers* of a pretrained backbone carry transferable
features, and Khan & Fang (arXiv 2307.10915) find the 3rd quarter (50-75 %) of a restorative
model the best part to fine-tune. With skips, the shallow, high-resolution units can carry most
of the reconstruction (for a plain autoencoder a full- or quarter-resolution skip is a shortcut
to the identity), so the deep units may receive little training signal and the depth profile
of the learned features changes. A plain decoder forces all information through the deepest
unit, so every unit must learn something useful for restoration.

Defaults, therefore: the methods whose papers use a bottleneck encoder-decoder keep it --
``autoencoder`` (Hinton & Salakhutdinov 2006; with skips it would copy its input),
``inpainting`` in both modes (Pathak et al.'s Context Encoder has no skips; Chen et al.'s
context-restoration network for classification tasks reconstructs from the analysis part's
output) -- ``skip=False``. ``genesis`` defaults to ``skip=True`` because Models Genesis trains a
U-Net (Zhou et al. 2019/2021) and its corruptions (in-/out-painting of large boxes, intensity
curves) cannot be undone by copying a shallow feature map. Every method exposes ``skip`` so a
study can compare both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ssl_ft.methods.base import SSLMethod
from ssl_ft.models import DepthBackbone

__all__ = [
    "Decoder", "RestorativeConfig", "RestorativeMethod", "check_prob", "eval_mode", "unit_strides",
]

_PROBE = 64  # every downsampling of the supported backbones is still visible at 64 px


def _conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def unit_strides(backbone: DepthBackbone) -> list[int]:
    """Output stride of every unit, from one 64 px probe in eval mode (no state changes)."""
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            probe = torch.zeros(1, backbone.in_chans, _PROBE, _PROBE)
            feats = backbone.forward_intermediates(probe)
    finally:
        backbone.train(was_training)
    return [max(1, round(_PROBE / f.shape[-1])) for f in feats]


class Decoder(nn.Module):
    """Upsample a backbone's feature maps to an image; see the module docstring.

    Args:
        backbone: the encoder (only inspected, not stored).
        skip: U-Net skip connections from shallower units (``True``) or the deepest map alone.
        channels: decoder widths, deepest first; the last one repeats for extra steps.

    ``indices`` lists the units to request from ``backbone.forward_intermediates``; ``forward``
    takes those maps (in that order) and the output size.

    Example::

        >>> dec = Decoder(backbone, skip=False)
        >>> img = dec(backbone.forward_intermediates(x, dec.indices), x.shape[-2:])
    """

    def __init__(self, backbone: DepthBackbone, *, skip: bool,
                 channels: Sequence[int] = (256, 128, 64, 32)) -> None:
        super().__init__()
        if not channels or any(int(c) < 1 for c in channels):
            raise ValueError(f"decoder channels must be positive, got {list(channels)}")
        self.skip = skip
        strides = unit_strides(backbone)
        last = len(strides) - 1
        deepest = strides[last]
        skips: dict[int, int] = {}  # stride -> last unit at that stride
        if skip:
            for i, s in enumerate(strides[:last]):
                if s < deepest:
                    skips[s] = i
        self.indices: list[int] = sorted(skips.values()) + [last]
        # target strides, deepest first: halving steps plus any skip stride off that ladder
        steps = {deepest / 2**k for k in range(1, int(math.ceil(math.log2(deepest))) + 1)}
        self.strides: list[float] = sorted(steps | {float(s) for s in skips} | {1.0},
                                           reverse=True)
        self.strides = [s for s in self.strides if s < deepest]
        self._skip_at = {float(s): pos for pos, s in enumerate(sorted(skips, key=skips.get))}
        width = [int(c) for c in channels]

        def ch(i: int) -> int:
            return width[min(i, len(width) - 1)]

        self.bottleneck = _conv_bn_relu(backbone.units[last].out_channels, ch(0), 1)
        self.laterals = nn.ModuleDict()
        self.blocks = nn.ModuleList()
        for i, s in enumerate(self.strides):
            cin = ch(i)
            if s in self._skip_at:
                unit = backbone.units[self.indices[self._skip_at[s]]]
                self.laterals[str(i)] = _conv_bn_relu(unit.out_channels, ch(i + 1), 1)
                cin += ch(i + 1)
            self.blocks.append(_conv_bn_relu(cin, ch(i + 1), 3))
        self.head = nn.Conv2d(ch(len(self.strides)), backbone.in_chans, 1)

    def forward(self, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        """Images ``(N, in_chans, *size)`` in [0, 1] from the maps of ``self.indices``."""
        if len(features) != len(self.indices):
            raise ValueError(f"expected {len(self.indices)} feature maps (units {self.indices}), "
                             f"got {len(features)}")
        height, width = int(size[0]), int(size[1])
        y = self.bottleneck(features[-1])
        for i, s in enumerate(self.strides):
            skip = features[self._skip_at[s]] if s in self._skip_at else None
            target = (tuple(skip.shape[-2:]) if skip is not None
                      else (math.ceil(height / s), math.ceil(width / s)))
            y = F.interpolate(y, size=target, mode="bilinear", align_corners=False)
            if skip is not None:
                y = torch.cat([y, self.laterals[str(i)](skip)], dim=1)
            y = self.blocks[i](y)
        if tuple(y.shape[-2:]) != (height, width):  # a backbone of stride 1 (no steps)
            y = F.interpolate(y, size=(height, width), mode="bilinear", align_corners=False)
        return torch.sigmoid(self.head(y))


@contextmanager
def eval_mode(module: nn.Module):
    """Temporarily put ``module`` in eval mode (BatchNorm statistics stay untouched)."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@dataclass
class RestorativeConfig:
    """Fields every restorative method shares: the decoder's ``skip`` and ``decoder_channels``,
    and the reconstruction ``loss`` (``"mse"`` or ``"l1"``)."""

    skip: bool = False
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32)
    loss: str = "mse"

    def __post_init__(self) -> None:
        if not isinstance(self.skip, bool):
            raise ValueError(f"skip must be true or false, got {self.skip!r}")
        channels = self.decoder_channels
        if (isinstance(channels, str | bytes) or not isinstance(channels, Sequence)
                or not channels or any(not isinstance(c, int) or c < 1 for c in channels)):
            raise ValueError(f"decoder_channels must be a list of positive integers, got "
                             f"{channels!r}")
        self.decoder_channels = tuple(channels)
        if self.loss not in ("mse", "l1"):
            raise ValueError(f"loss must be 'mse' or 'l1', got {self.loss!r}")


def check_prob(name: str, value: Any) -> None:
    """Raise ValueError unless ``value`` is a probability."""
    if not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")


class RestorativeMethod(SSLMethod):
    """Base of the restorative methods: corrupt, encode, decode, compare with the original.

    A subclass implements :meth:`corrupt`; ``forward`` augments the batch once (light
    augmentation; the restoration target is the augmented image), corrupts it, restores it with
    backbone + :class:`Decoder` and returns the (optionally weighted) reconstruction loss.
    """

    family = "restorative"

    def __init__(self, backbone: DepthBackbone, cfg: RestorativeConfig, **kwargs: Any) -> None:
        super().__init__(backbone, cfg, **kwargs)
        self.decoder = Decoder(backbone, skip=cfg.skip, channels=cfg.decoder_channels)

    def corrupt(self, x: Tensor, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor | None]:
        """Corrupted images and an optional per-pixel loss weight ``(N, 1, H, W)``."""
        raise NotImplementedError

    def restore(self, corrupted: Tensor) -> Tensor:
        """Backbone + decoder: restored images in [0, 1]."""
        feats = self.backbone.forward_intermediates(self.normalize(corrupted),
                                                    self.decoder.indices)
        return self.decoder(feats, corrupted.shape[-2:])

    def reconstruction_loss(self, restored: Tensor, target: Tensor,
                            weight: Tensor | None = None) -> Tensor:
        """Mean squared (or absolute) error, a weighted mean when ``weight`` is given."""
        err = (restored - target) ** 2 if self.cfg.loss == "mse" else (restored - target).abs()
        if weight is None:
            return err.mean()
        weight = weight.expand_as(err)
        return (err * weight).sum() / weight.sum().clamp_min(1e-12)

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # noqa: D102
        target = self.augment(x)
        corrupted, weight = self.corrupt(target)
        return {"loss": self.reconstruction_loss(self.restore(corrupted), target, weight)}

    @torch.no_grad()
    def example_images(self, x: Tensor, max_images: int = 8) -> Tensor:
        """Rows of originals, corrupted inputs and restorations: ``(3k, C, H, W)`` in [0, 1]
        with ``k = min(max_images, N)`` (``torchvision.utils.make_grid(..., nrow=k)``). Runs in
        eval mode with a fixed generator, so it changes neither BatchNorm statistics nor the
        global RNG and shows the same corruptions every time."""
        x = x[:max_images]
        generator = torch.Generator().manual_seed(0)
        corrupted, _ = self.corrupt(x, generator)
        with eval_mode(self):
            restored = self.restore(corrupted)
        return torch.cat([x, corrupted, restored]).clamp(0, 1)
