"""Array conversions shared by every data source: layout, channels, size and statistics.

All functions take and return image stacks in ``(N, C, H, W)`` layout with an unsigned integer
dtype (``uint8`` or ``uint16``); they never change the dtype. Work is done in chunks so that a
large dataset never needs a full-size ``float64`` copy.

* Channels: ``1 -> 3`` replicates the grey channel; ``3 -> 1`` uses ITU-R BT.601 luma
  ``0.299 R + 0.587 G + 0.114 B`` (the weights PIL's ``convert("L")`` uses), rounded.
* Size: a non-square image is centre-cropped to a square of side ``min(H, W)`` and then resized
  with antialiased bilinear interpolation (``torch.nn.functional.interpolate(..., antialias=True)``
  on ``float32``), rounded and clipped back to the dtype.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ssl_ft.errors import UserError

__all__ = [
    "LUMA_WEIGHTS",
    "centre_crop",
    "channel_stats",
    "check_channels",
    "check_size",
    "convert_channels",
    "max_value_of",
    "resize_images",
    "to_nchw",
]

#: ITU-R BT.601 luma weights for R, G, B.
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)

_CHUNK_VALUES = 1 << 22  # values per chunk of float work (32 MB as float64)


def _chunk(images: np.ndarray) -> int:
    """Images per chunk so that one float64 chunk holds about ``_CHUNK_VALUES`` values."""
    per_image = int(np.prod(images.shape[1:])) or 1
    return max(1, _CHUNK_VALUES // per_image)


def check_channels(channels: int | None) -> int | None:
    """Return ``channels`` if it is ``None``, 1 or 3; otherwise raise :class:`UserError`."""
    if channels is None:
        return None
    if (
        isinstance(channels, bool)
        or not isinstance(channels, (int, np.integer))
        or channels not in (1, 3)
    ):
        raise UserError(
            f"channels must be 1 or 3 (or None to keep the data's own), got {channels!r}"
        )
    return int(channels)


def check_size(size: int | None) -> int | None:
    """Return ``size`` if it is ``None`` or a positive int; otherwise raise :class:`UserError`."""
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise UserError(f"size must be a positive integer (pixels per side) or None, got {size!r}")
    return int(size)


def max_value_of(dtype: np.dtype) -> int:
    """255 for ``uint8``, 65535 for ``uint16``; anything else is a bug of the caller."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return 255
    if dtype == np.uint16:
        return 65535
    raise ValueError(f"image arrays must be uint8 or uint16, got {dtype}")


def to_nchw(images: np.ndarray, *, source: str, key: str = "images") -> np.ndarray:
    """Turn ``(N, H, W)``, ``(N, H, W, 1)`` or ``(N, H, W, 3)`` into C-contiguous ``(N, C, H, W)``.

    Raises :class:`UserError` naming ``source`` and ``key`` for any other shape.
    """
    if images.ndim == 3:
        return np.ascontiguousarray(images[:, None, :, :])
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    raise UserError(
        f"{source}: '{key}' has shape {images.shape}; expected (N, H, W) for grayscale "
        f"or (N, H, W, 3) for RGB"
    )


def _round_to(x: np.ndarray | torch.Tensor, dtype: np.dtype) -> np.ndarray:
    """Round float values and clip them into the range of the unsigned ``dtype``."""
    arr = x.numpy() if isinstance(x, torch.Tensor) else x
    return np.clip(np.rint(arr), 0, max_value_of(dtype)).astype(dtype)


def convert_channels(images: np.ndarray, channels: int | None) -> np.ndarray:
    """Convert an ``(N, C, H, W)`` stack to ``channels`` (1 or 3); ``None`` keeps it as is."""
    channels = check_channels(channels)
    have = images.shape[1]
    if channels is None or channels == have:
        return images
    if have == 1 and channels == 3:
        return np.ascontiguousarray(np.repeat(images, 3, axis=1))
    if have == 3 and channels == 1:
        out = np.empty((images.shape[0], 1, *images.shape[2:]), dtype=images.dtype)
        w = np.asarray(LUMA_WEIGHTS, dtype=np.float64).reshape(1, 3, 1, 1)
        step = _chunk(images)
        for i in range(0, images.shape[0], step):
            chunk = images[i : i + step].astype(np.float64)
            out[i : i + step] = _round_to((chunk * w).sum(axis=1, keepdims=True), images.dtype)
        return out
    raise ValueError(f"cannot convert {have} channels to {channels}")


def centre_crop(images: np.ndarray) -> np.ndarray:
    """Centre-crop an ``(N, C, H, W)`` stack to a square of side ``min(H, W)`` (a view)."""
    h, w = images.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return images[..., top : top + side, left : left + side]


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square if needed, then resize an ``(N, C, H, W)`` stack to ``size``.

    Antialiased bilinear interpolation on ``float32``, rounded back to the input dtype. Returns
    the (cropped) input unchanged when it already has the requested size.
    """
    size = int(size)
    images = centre_crop(images)
    if images.shape[-1] == size:
        return np.ascontiguousarray(images)
    out = np.empty((*images.shape[:2], size, size), dtype=images.dtype)
    with torch.no_grad():
        step = _chunk(out) if out.size > images.size else _chunk(images)
        for i in range(0, images.shape[0], step):
            chunk = torch.from_numpy(images[i : i + step].astype(np.float32))
            resized = F.interpolate(
                chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
            out[i : i + step] = _round_to(resized, images.dtype)
    return out


def channel_stats(
    images: np.ndarray, max_value: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of an ``(N, C, H, W)`` stack scaled to [0, 1].

    A channel with zero spread (a constant dataset) gets std 1.0, so that normalising with these
    statistics never divides by zero.
    """
    n, c = images.shape[:2]
    if n == 0:
        raise ValueError("cannot compute statistics of an empty image stack")
    total = np.zeros(c, dtype=np.float64)
    total_sq = np.zeros(c, dtype=np.float64)
    step = _chunk(images)
    for i in range(0, n, step):
        chunk = images[i : i + step].astype(np.float64) / float(max_value)
        total += chunk.sum(axis=(0, 2, 3))
        total_sq += np.square(chunk).sum(axis=(0, 2, 3))
    count = float(n * images.shape[2] * images.shape[3])
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std = np.where(std > 1e-12, std, 1.0)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
