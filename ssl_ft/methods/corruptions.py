"""Image corruptions for restorative SSL, as pure functions on batches.

Every function takes images ``x`` of shape ``(N, C, H, W)`` with values in [0, 1], never modifies
``x`` in place, returns images of the same shape in [0, 1], and draws all its randomness from the
optional ``generator`` (a CPU ``torch.Generator``; the global RNG when ``None``), so a seeded
generator reproduces a corruption exactly. Spatial operations move or paint whole pixels: every
channel of a pixel is treated alike. Functions that paint regions also return a boolean mask
``(N, 1, H, W)`` of the pixels they painted or moved.

Papers:

* Models Genesis: Zhou, Sodha, Rahman Siddiquee, Feng, Tajbakhsh, Gotway & Liang, "Models Genesis:
  Generic Autodidactic Models for 3D Medical Image Analysis", MICCAI 2019, and "Models Genesis",
  Medical Image Analysis 67, 2021 (code: github.com/MrGiovanni/ModelsGenesis) --
  :func:`bezier_intensity`, :func:`local_pixel_shuffle`, :func:`genesis_inpaint`,
  :func:`genesis_outpaint`.
* Pathak, Krahenbuhl, Donahue, Darrell & Efros, "Context Encoders: Feature Learning by
  Inpainting", CVPR 2016 -- :func:`random_holes`.
* Chen, Bentley, Mori, Misawa, Fujiwara & Rueckert, "Self-supervised learning for medical image
  analysis using image context restoration", Medical Image Analysis 58, 2019 --
  :func:`swap_patches`.
* Vincent, Larochelle, Bengio & Manzagol, "Extracting and composing robust features with
  denoising autoencoders", ICML 2008 -- :func:`gaussian_noise`, :func:`masking_noise`.

Example::

    >>> g = torch.Generator().manual_seed(0)
    >>> y = bezier_intensity(local_pixel_shuffle(x, generator=g), generator=g)
    >>> y, painted = genesis_inpaint(y, generator=g)
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "bezier_intensity",
    "gaussian_noise",
    "genesis_inpaint",
    "genesis_outpaint",
    "local_pixel_shuffle",
    "masking_noise",
    "random_holes",
    "shuffle_windows",
    "swap_patches",
]


def _check(x: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {tuple(x.shape)}")


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Uniform [0, 1) numbers drawn on the generator's device, returned on ``like``'s."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=device).to(like.device, like.dtype)


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """An integer uniform in ``[low, high]`` (both inclusive, like Python's ``random.randint``);
    ``low`` when ``high < low``."""
    if high <= low:
        return low
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator).item())


def _chosen(n: int, p: float, generator: torch.Generator | None) -> list[int]:
    """Indices of the samples (out of ``n``) that a transform with probability ``p`` applies to."""
    draws = torch.rand(n, generator=generator)
    return [i for i in range(n) if draws[i].item() < p]


def _cubic_bezier(p1: Tensor, p2: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """Points of the cubic Bezier curves from (0, 0) to (1, 1) with control points ``p1``, ``p2``
    (each ``(N, 2)``) at ``steps`` values of t; returns x and y, each ``(N, steps)``."""
    t = torch.linspace(0.0, 1.0, steps, dtype=p1.dtype, device=p1.device).unsqueeze(0)
    b1, b2, b3 = 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3  # P0 = (0, 0) drops out
    xs = b1 * p1[:, :1] + b2 * p2[:, :1] + b3
    ys = b1 * p1[:, 1:] + b2 * p2[:, 1:] + b3
    return xs, ys


def _interp(v: Tensor, xs: Tensor, ys: Tensor) -> Tensor:
    """Batched ``np.interp``: piecewise-linear ``(xs, ys)`` (rows sorted by ``xs``) at ``v``."""
    steps = xs.shape[1]
    idx = torch.searchsorted(xs, v.contiguous(), right=True).clamp(1, steps - 1)
    x0, x1 = xs.gather(1, idx - 1), xs.gather(1, idx)
    y0, y1 = ys.gather(1, idx - 1), ys.gather(1, idx)
    dx = x1 - x0
    w = torch.where(dx > 0, (v - x0) / dx.clamp_min(1e-12), torch.ones_like(v)).clamp(0, 1)
    return y0 + w * (y1 - y0)


def bezier_intensity(
    x: Tensor,
    *,
    p: float = 1.0,
    decreasing_prob: float = 0.5,
    steps: int = 1001,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Models Genesis non-linear transformation (Zhou et al. 2019/2021, Sec. "non-linear
    transformation"): each intensity ``v`` of a sample becomes ``f(v)`` with ``f`` a random
    *monotonic* map of [0, 1] onto [0, 1] built from a cubic Bezier curve.

    Per sample (with probability ``p``; others pass through unchanged) two control points
    ``P1, P2`` are drawn uniformly in [0, 1]^2; the curve from ``P0 = (0, 0)`` to ``P3 = (1, 1)``
    is sampled at ``steps`` values of t; as in the official code the x and y coordinates are
    sorted separately, which makes ``f`` non-decreasing even where the curve itself turns back;
    and ``f`` is the linear interpolation of these points. With probability ``decreasing_prob``
    the y values are reversed, giving the paper's decreasing function (``f(0) = 1``,
    ``f(1) = 0``, an intensity inversion). ``f`` is the same for all channels of a sample.
    (The official code pairs sorted x with *unsorted* y in the decreasing case, which is not
    always monotonic; here it always is.)
    """
    _check(x)
    n = x.shape[0]
    out = x.clone()
    idx = _chosen(n, p, generator)
    if not idx:
        return out
    k = len(idx)
    p1, p2 = _rand((k, 2), generator, x), _rand((k, 2), generator, x)
    flip = _rand((k,), generator, x) < decreasing_prob
    xs, ys = _cubic_bezier(p1.double(), p2.double(), steps)
    xs, ys = xs.sort(dim=1).values, ys.sort(dim=1).values
    ys = torch.where(flip.unsqueeze(1), ys.flip(1), ys)
    sel = torch.tensor(idx, device=x.device)
    v = x[sel].reshape(k, -1).double().clamp(0, 1)
    out[sel] = _interp(v, xs, ys).clamp(0, 1).to(x.dtype).view_as(x[sel])
    return out


def shuffle_windows(
    x: Tensor, window: tuple[int, int], offset: tuple[int, int] = (0, 0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Randomly permute the pixels inside every window of a fixed grid.

    The grid has windows of ``window = (h, w)`` pixels starting at ``offset = (oy, ox)``; only
    whole windows are used, so rows above ``oy``, columns left of ``ox`` and the incomplete
    windows at the bottom/right edges stay as they are. Each window of each sample gets its own
    random permutation of its ``h * w`` positions, applied to all channels alike. The multiset of
    pixel values in every window is therefore unchanged and no pixel leaves its window.
    """
    _check(x)
    n, c, height, width = x.shape
    h, w = window
    oy, ox = offset
    if h < 1 or w < 1 or not (0 <= oy < max(h, 1) and 0 <= ox < max(w, 1)):
        raise ValueError(f"bad window {window} / offset {offset}")
    nh, nw = (height - oy) // h, (width - ox) // w
    out = x.clone()
    if nh < 1 or nw < 1 or h * w == 1:
        return out
    region = out[:, :, oy : oy + nh * h, ox : ox + nw * w]
    blocks = region.reshape(n, c, nh, h, nw, w).permute(0, 2, 4, 1, 3, 5).reshape(n, nh, nw, c,
                                                                                  h * w)
    perm = _rand((n, nh, nw, h * w), generator, x).argsort(dim=-1)
    blocks = blocks.gather(-1, perm.unsqueeze(3).expand(-1, -1, -1, c, -1))
    region.copy_(blocks.reshape(n, nh, nw, c, h, w).permute(0, 3, 1, 4, 2, 5)
                 .reshape(n, c, nh * h, nw * w))
    return out


def local_pixel_shuffle(
    x: Tensor,
    *,
    p: float = 1.0,
    max_window: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Models Genesis local pixel shuffling (Zhou et al. 2019/2021, Sec. "local pixel
    shuffling"): pixels are shuffled inside small windows, which destroys local texture while
    keeping the global layout and the intensity histogram.

    The official code shuffles 10,000 random windows (each side 1 to a tenth of the image side)
    of a 64x64x32 volume, so practically every voxel is shuffled, but its windows overlap and it
    copies from the original image, so values can get duplicated or lost. Here, per sample (with
    probability ``p``), a window size ``(h, w)`` is drawn uniformly in ``[1, max_window]^2`` and a
    grid offset uniformly inside one window, and :func:`shuffle_windows` permutes the pixels of
    every whole window of that grid: exact histogram, no pixel moves outside its window.
    ``max_window`` defaults to a tenth of the shorter side, at least 2.
    """
    _check(x)
    height, width = x.shape[-2:]
    m = max(2, min(height, width) // 10) if max_window is None else max_window
    if m < 1:
        raise ValueError(f"max_window must be >= 1, got {m}")
    out = x.clone()
    for i in _chosen(x.shape[0], p, generator):
        h, w = _randint(1, min(m, height), generator), _randint(1, min(m, width), generator)
        oy, ox = _randint(0, h - 1, generator), _randint(0, w - 1, generator)
        out[i : i + 1] = shuffle_windows(x[i : i + 1], (h, w), (oy, ox), generator)
    return out


def _box(size: int, side: int, margin: int, generator: torch.Generator | None) -> tuple[int, int]:
    """Start and length of a box of ``size`` pixels placed uniformly with ``margin`` pixels to the
    borders (the official Models Genesis code keeps 3); shrinks the margin on small images."""
    size = max(1, min(size, side))
    margin = min(margin, (side - size) // 2)
    return _randint(margin, side - size - margin, generator), size


def genesis_inpaint(
    x: Tensor,
    *,
    max_boxes: int = 5,
    box_prob: float = 0.95,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Models Genesis in-painting (Zhou et al. 2019/2021, Sec. "out-painting and in-painting";
    ``image_in_painting`` of the official code), applied to every sample.

    Up to ``max_boxes`` boxes are painted with uniform [0, 1) noise: before each box a coin with
    ``box_prob`` decides whether to go on (so no box at all with probability 0.05). Each box side
    is drawn in ``[side // 6, side // 3]`` and its position keeps 3 pixels to the borders.
    Returns the images and the mask of painted pixels; pixels outside it are unchanged.
    """
    _check(x)
    n, c, height, width = x.shape
    out = x.clone()
    mask = torch.zeros(n, 1, height, width, dtype=torch.bool, device=x.device)
    for i in range(n):
        for _ in range(max_boxes):
            if _uniform(generator) >= box_prob:
                break
            y0, bh = _box(_randint(height // 6, height // 3, generator), height, 3, generator)
            x0, bw = _box(_randint(width // 6, width // 3, generator), width, 3, generator)
            out[i, :, y0 : y0 + bh, x0 : x0 + bw] = _rand((c, bh, bw), generator, x)
            mask[i, :, y0 : y0 + bh, x0 : x0 + bw] = True
    return out, mask


def genesis_outpaint(
    x: Tensor,
    *,
    max_boxes: int = 5,
    box_prob: float = 0.95,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Models Genesis out-painting (Zhou et al. 2019/2021; ``image_out_painting`` of the official
    code), applied to every sample.

    The whole image is replaced by uniform [0, 1) noise, then the original content of one box is
    put back, and of up to ``max_boxes - 1`` more boxes while a coin with ``box_prob`` says so.
    Each box side is ``side - randint(3 * side // 7, 4 * side // 7)`` (about half the side) and
    its position keeps 3 pixels to the borders. Returns the images and the mask of *kept*
    (original) pixels: exactly those equal the input; every other pixel is noise.
    """
    _check(x)
    n, c, height, width = x.shape
    out = _rand((n, c, height, width), generator, x)
    mask = torch.zeros(n, 1, height, width, dtype=torch.bool, device=x.device)
    for i in range(n):
        for j in range(max_boxes):
            if j > 0 and _uniform(generator) >= box_prob:
                break
            bh = height - _randint(3 * height // 7, 4 * height // 7, generator)
            bw = width - _randint(3 * width // 7, 4 * width // 7, generator)
            y0, bh = _box(bh, height, 3, generator)
            x0, bw = _box(bw, width, 3, generator)
            mask[i, :, y0 : y0 + bh, x0 : x0 + bw] = True
    out = torch.where(mask, x, out)
    return out, mask


def random_holes(
    x: Tensor,
    *,
    fraction: float = 0.25,
    size: tuple[float, float] = (0.125, 0.25),
    fill: float | Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Context Encoder "random block" masks (Pathak et al., CVPR 2016, Sec. 3.3): several
    possibly overlapping rectangular holes per sample, added until they cover at least
    ``fraction`` of the image (Pathak et al.: up to 1/4).

    Each hole's sides are uniform in ``[size[0], size[1]]`` times the image side (at least one
    pixel) and it lies anywhere inside the image. The holes are set to ``fill``: a number, a
    per-channel tensor of shape ``(C,)`` (e.g. the dataset mean, which Pathak et al. used, so the
    normalised input is 0 there), or ``None`` for uniform [0, 1) noise. Returns the images and
    the hole mask; pixels outside it are unchanged.
    """
    _check(x)
    n, c, height, width = x.shape
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    mask = torch.zeros(n, 1, height, width, dtype=torch.bool, device=x.device)
    for i in range(n):
        for _ in range(1000):
            if mask[i].float().mean().item() >= fraction:
                break
            bh = _randint(max(1, round(size[0] * height)), max(1, round(size[1] * height)),
                          generator)
            bw = _randint(max(1, round(size[0] * width)), max(1, round(size[1] * width)),
                          generator)
            y0, bh = _box(bh, height, 0, generator)
            x0, bw = _box(bw, width, 0, generator)
            mask[i, :, y0 : y0 + bh, x0 : x0 + bw] = True
    if fill is None:
        values = _rand(tuple(x.shape), generator, x)
    else:
        values = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
        values = values.expand(c, height, width).unsqueeze(0)
    return torch.where(mask, values, x), mask


def _overlap(a: tuple[int, int], b: tuple[int, int], ph: int, pw: int) -> bool:
    return abs(a[0] - b[0]) < ph and abs(a[1] - b[1]) < pw


def _patch_pair(height: int, width: int, ph: int, pw: int,
                generator: torch.Generator | None) -> tuple[tuple[int, int], tuple[int, int]]:
    """Two non-overlapping ``ph x pw`` patch corners, by rejection sampling: ``a`` is drawn again
    while no patch fits beside it (e.g. in the middle of an image just over two patches wide),
    then ``b`` while it overlaps ``a``."""

    def corner() -> tuple[int, int]:
        return _randint(0, height - ph, generator), _randint(0, width - pw, generator)

    a = corner()
    while not (a[0] >= ph or a[0] + 2 * ph <= height or a[1] >= pw or a[1] + 2 * pw <= width):
        a = corner()
    b = a
    while _overlap(a, b, ph, pw):
        b = corner()
    return a, b


def swap_patches(
    x: Tensor,
    *,
    num_swaps: int = 10,
    patch: tuple[int, int] = (3, 3),
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Context restoration corruption (Chen et al., Medical Image Analysis 2019, Sec. 3.1): in
    each sample, ``num_swaps`` times, pick two non-overlapping patches of ``patch = (h, w)``
    pixels uniformly at random and swap their contents.

    Every swap is a permutation of pixel positions, so the intensity histogram (the sorted
    values) of each sample is kept exactly while the spatial context changes. Later swaps may
    overlap earlier ones, as in the paper's iterative procedure. Returns the images and the mask
    of pixels that took part in a swap.
    """
    _check(x)
    n, _, height, width = x.shape
    ph, pw = patch
    if ph < 1 or pw < 1 or (2 * ph > height and 2 * pw > width):
        raise ValueError(f"two {patch} patches do not fit side by side in {height}x{width} images")
    out = x.clone()
    mask = torch.zeros(n, 1, height, width, dtype=torch.bool, device=x.device)
    for i in range(n):
        for _ in range(num_swaps):
            a, b = _patch_pair(height, width, ph, pw, generator)  # fits by the check above
            pa = out[i, :, a[0] : a[0] + ph, a[1] : a[1] + pw].clone()
            out[i, :, a[0] : a[0] + ph, a[1] : a[1] + pw] = out[i, :, b[0] : b[0] + ph,
                                                                b[1] : b[1] + pw]
            out[i, :, b[0] : b[0] + ph, b[1] : b[1] + pw] = pa
            mask[i, :, a[0] : a[0] + ph, a[1] : a[1] + pw] = True
            mask[i, :, b[0] : b[0] + ph, b[1] : b[1] + pw] = True
    return out, mask


def gaussian_noise(x: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    """Additive isotropic Gaussian noise of standard deviation ``std``, clipped to [0, 1]
    (the Gaussian corruption of denoising autoencoders, Vincent et al. 2008/2010)."""
    _check(x)
    device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn(tuple(x.shape), generator=generator, device=device).to(x.device, x.dtype)
    return (x + std * noise).clamp(0, 1)


def masking_noise(x: Tensor, fraction: float, generator: torch.Generator | None = None) -> Tensor:
    """Masking noise of denoising autoencoders (Vincent et al., ICML 2008): each pixel (all its
    channels) is set to 0 independently with probability ``fraction``."""
    _check(x)
    n, _, height, width = x.shape
    keep = _rand((n, 1, height, width), generator, x) >= fraction
    return x * keep
