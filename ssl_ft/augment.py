"""Batched augmentation for contrastive pretraining on medical images.

Contrastive methods compare two random *views* of every image (SimCLR: Chen, Kornblith, Norouzi
& Hinton, "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020).
:class:`BatchAugment` makes one view of a whole ``(N, C, H, W)`` batch at once, each image with its
own random parameters, on whatever device the batch lives on, instead of per-image PIL transforms
in DataLoader workers. The view pipeline follows SimCLR (crop, flip, colour, blur), with the
settings of MoCo v2 (Chen, Fan, Girshick & He, "Improved Baselines with Momentum Contrastive
Learning", arXiv 2003.04297) for RGB images:

1. geometry in **one** resampling: random resized crop, flips and rotation are composed into one
   affine matrix per image (``F.affine_grid`` + ``F.grid_sample``, bilinear,
   ``align_corners=False`` so an identity matrix returns the input exactly). Padding is
   ``"zeros"``: medical images sit on a black background (collimation, air), where reflection
   would invent mirrored anatomy; only the corners of rotated views ever reach outside the image.
   An input more than twice the output size is first shrunk once with an antialiased filter to
   twice the output size, so bilinear sampling never decimates by more than 2x.
2. intensity jitter with probability ``jitter_p``, in the fixed order brightness, contrast, gamma,
   saturation, hue (ColorJitter permutes the order per image; a fixed order keeps it batched).
   Brightness/contrast/saturation factors lie in ``[max(0, 1-s), 1+s]`` as in ColorJitter, hue in
   ``[-h, h]``, gamma log-uniform in ``[1/(1+g), 1+g]``.
3. grayscale with probability ``grayscale_p`` (RGB only).
4. gaussian blur with probability ``blur_p``, per-image sigma in ``blur_sigma`` (pixels), kernel
   about 10 % of the image side (odd, >= 3, SimCLR), separable grouped convolution, reflect padding.
5. additive gaussian noise of std ``noise_std``; the output is clamped to [0, 1].

One-channel images stay one channel: no saturation, hue or grayscale (an error if set), and the
intensity transforms that suit X-ray, MRI and ultrasound (brightness, contrast, gamma, blur, noise).

Presets (:func:`preset`; sizes in between are interpolated in log-size, others use the nearest):

=====  ===========  ======  ===========  ======  ============================================
size   crop_scale   blur_p  blur_sigma   kernel  reasoning
=====  ===========  ======  ===========  ======  ============================================
28     (0.35, 1)    0.2     (0.1, 0.5)   3       SimCLR's 8 % crop of a 28 px X-ray is an 8 px
                                                 blob; weak, rare blur (SimCLR drops it on CIFAR)
64     (0.25, 1)    0.5     (0.1, 0.6)   7       crop between; sigma scaled from 2.0 px at 224
128    (0.2, 1)     0.5     (0.1, 1.1)   13      MoCo v2 crop, sigma scaled with the size
224    (0.2, 1)     0.5     (0.1, 2.0)   23      MoCo v2 exactly (crop, p, sigma, 10 % kernel)
=====  ===========  ======  ===========  ======  ============================================

At every size: ``crop_ratio`` (3/4, 4/3); ``hflip`` 0.5 (on chest X-rays it moves the heart to
the right, yet contrastive CXR work such as MoCo-CXR, Sowrirajan et al. 2021, still uses it; set
0 if laterality matters); ``vflip`` 0 (anatomy has an up); ``rotate`` 10 degrees (patient
positioning, as MoCo-CXR); ``jitter_p`` 0.8.

Modalities (``modality``; ``auto`` = ``grey`` for one channel, ``colour`` for three):

=======  =========================================================  ===============================
preset   intensity jitter                                           for
=======  =========================================================  ===============================
grey     brightness 0.4, contrast 0.4, gamma 0.3 ([0.77, 1.3]),     X-ray, CT, MRI, ultrasound:
         noise 0.02 (about 5 grey levels of 8-bit data)             exposure/windowing, no colour
colour   brightness 0.2, contrast 0.2, saturation 0.1, hue 0.02,    dermoscopy, fundus, histology:
         no grayscale                                               colour carries the diagnosis;
                                                                    small stain/camera shifts only
                                                                    (Tellez et al., MedIA 2019)
natural  MoCo v2: brightness 0.4, contrast 0.4, saturation 0.4,     natural photographs
         hue 0.1, grayscale_p 0.2
=======  =========================================================  ===============================

Example::

    >>> aug = BatchAugment(AugmentConfig(), size=28, channels=1)
    >>> v0, v1 = aug(x), aug(x)    # x: (N, 1, 28, 28) float in [0, 1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F

from ssl_ft.errors import UserError

__all__ = [
    "AugmentConfig",
    "BatchAugment",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_gamma",
    "adjust_hue",
    "adjust_saturation",
    "blur_kernel_size",
    "gaussian_blur",
    "preset",
]

_LUMA = (0.2989, 0.587, 0.114)  # as torchvision's rgb_to_grayscale
_CROP_TRIES = 10                # candidate crops per image, as torchvision's RandomResizedCrop
_MAX_DECIMATION = 2.0
# size -> (crop_scale min, blur_p, blur_sigma max)
_ANCHORS = {28: (0.35, 0.2, 0.5), 64: (0.25, 0.5, 0.6), 128: (0.2, 0.5, 1.1), 224: (0.2, 0.5, 2.0)}


@dataclass
class AugmentConfig:
    """Augmentation settings; every ``None`` is taken from :func:`preset` by :meth:`resolve`."""

    crop_scale: tuple[float, float] | None = None    # random-resized-crop area fraction
    crop_ratio: tuple[float, float] | None = None    # aspect ratio (width / height) range
    hflip: float | None = None                       # probability
    vflip: float | None = None                       # probability
    rotate: float | None = None                      # max degrees, uniform in [-rotate, rotate]
    brightness: float | None = None                  # factor in [max(0, 1-b), 1+b]
    contrast: float | None = None                    # factor in [max(0, 1-c), 1+c]
    gamma: float | None = None                       # log-uniform gamma in [1/(1+g), 1+g]
    saturation: float | None = None                  # RGB only
    hue: float | None = None                         # RGB only, shift in [-hue, hue], <= 0.5
    jitter_p: float | None = None                    # probability to apply the intensity jitter
    grayscale_p: float | None = None                 # RGB only
    blur_p: float | None = None                      # probability
    blur_sigma: tuple[float, float] | None = None    # pixels of the output image
    noise_std: float | None = None                   # additive gaussian noise, [0, 1] units
    modality: str = "auto"                           # auto | grey | colour | natural (presets)

    def resolve(self, size: int, channels: int) -> AugmentConfig:
        """A copy with every ``None`` filled from ``preset(size, channels, modality)``,
        validated; ``modality`` resolved (``auto``: grey for 1 channel, colour for 3)."""
        given = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "modality"}
        base = preset(size, channels, self.modality)
        cfg = replace(base, **{k: v for k, v in given.items() if v is not None})
        values = {}
        for name in ("crop_scale", "crop_ratio", "blur_sigma"):
            lo, hi = values[name] = _pair(name, getattr(cfg, name))
            if not (0 < lo <= hi) or (name == "crop_scale" and hi > 1):
                upper = " <= 1" if name == "crop_scale" else ""
                raise UserError(f"{name}={(lo, hi)}: need 0 < min <= max{upper}")
        for name, top in [("hflip", 1), ("vflip", 1), ("jitter_p", 1), ("grayscale_p", 1),
                          ("blur_p", 1), ("rotate", 180), ("hue", 0.5), ("brightness", None),
                          ("contrast", None), ("gamma", None), ("saturation", None),
                          ("noise_std", None)]:
            values[name] = v = _number(name, getattr(cfg, name))
            if v < 0 or (top is not None and v > top):
                raise UserError(f"{name}={v}: must lie in [0, {'inf' if top is None else top}]")
            if channels == 1 and name in ("saturation", "hue", "grayscale_p") and v > 0:
                raise UserError(f"{name}={v}: colour augmentation needs RGB; set it to 0 for "
                                f"1-channel images")
        return replace(cfg, **values)


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{name}={value!r}: must be a finite number")
    return float(value)


def _pair(name: str, value: object) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise UserError(f"{name}={value!r}: must be a pair (min, max)")
    return _number(name, value[0]), _number(name, value[1])


#: Intensity presets by modality (module docstring, "Modalities").
MODALITIES = ("auto", "grey", "colour", "natural")


def preset(size: int, channels: int, modality: str = "auto") -> AugmentConfig:
    """The documented defaults (module docstring tables) for ``size`` px, 1 or 3 channels and a
    modality preset (``auto``: ``grey`` for 1 channel, ``colour`` for 3)."""
    if modality not in MODALITIES:
        raise UserError(f"modality={modality!r}: choose one of {', '.join(MODALITIES)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserError(f"size={size!r}: must be a positive integer")
    if channels not in (1, 3):
        raise UserError(f"channels={channels!r}: must be 1 or 3")
    keys = sorted(_ANCHORS)
    lo = max([k for k in keys if k <= size], default=keys[0])
    hi = min([k for k in keys if k >= size], default=keys[-1])
    w = 0.0 if lo == hi else (math.log(size) - math.log(lo)) / (math.log(hi) - math.log(lo))
    crop_min, blur_p, sigma_max = (round(a + w * (b - a), 3)
                                   for a, b in zip(_ANCHORS[lo], _ANCHORS[hi], strict=True))
    if modality == "auto":
        modality = "grey" if channels == 1 else "colour"
    if channels == 1 and modality != "grey":
        raise UserError(f"modality={modality!r} jitters colour, but the images have 1 channel; "
                        f"use grey (or auto)")
    intensity = _INTENSITY[modality]
    return AugmentConfig(
        crop_scale=(crop_min, 1.0), crop_ratio=(3 / 4, 4 / 3), hflip=0.5, vflip=0.0, rotate=10.0,
        jitter_p=0.8, blur_p=blur_p, blur_sigma=(0.1, sigma_max), modality=modality,
        **intensity,
    )


# brightness, contrast, gamma, saturation, hue, grayscale_p, noise_std per modality
_INTENSITY: dict[str, dict[str, float]] = {
    "grey": dict(brightness=0.4, contrast=0.4, gamma=0.3, saturation=0.0, hue=0.0,
                 grayscale_p=0.0, noise_std=0.02),
    "colour": dict(brightness=0.2, contrast=0.2, gamma=0.0, saturation=0.1, hue=0.02,
                   grayscale_p=0.0, noise_std=0.0),
    "natural": dict(brightness=0.4, contrast=0.4, gamma=0.0, saturation=0.4, hue=0.1,
                    grayscale_p=0.2, noise_std=0.0),
}


def blur_kernel_size(size: int, sigma_max: float = 0.0) -> int:
    """Odd kernel of about 10 % of ``size`` (SimCLR), >= 3, wide enough for +-2 ``sigma_max``,
    and at most ``size`` (reflect padding needs it)."""
    k = max(3, int(round(0.1 * size)) | 1, 2 * math.ceil(2 * sigma_max) + 1)
    return max(1, min(k, size if size % 2 else size - 1))


def _per_sample(f: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """A scalar or ``(N,)`` factor as ``(N, 1, 1, 1)`` on ``x``'s device and dtype."""
    f = torch.as_tensor(f, dtype=x.dtype, device=x.device).reshape(-1)
    return f.expand(x.shape[0]).reshape(-1, 1, 1, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Per-image ``x * factor``, clamped to [0, 1] (torchvision ``adjust_brightness``)."""
    return (x * _per_sample(factor, x)).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Per-image blend with the image's mean grey level (torchvision ``adjust_contrast``)."""
    f = _per_sample(factor, x)
    return (f * x + (1 - f) * _gray(x).mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 1)


def adjust_gamma(x: torch.Tensor, gamma: torch.Tensor | float) -> torch.Tensor:
    """Per-image ``x ** gamma`` on [0, 1]: gamma > 1 darkens, gamma < 1 brightens."""
    return x.clamp(0, 1).pow(_per_sample(gamma, x))


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Per-image blend of RGB ``x`` with its grey version (torchvision ``adjust_saturation``)."""
    f = _per_sample(factor, x)
    return (f * x + (1 - f) * _gray(x)).clamp(0, 1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor | float) -> torch.Tensor:
    """Per-image hue rotation of RGB ``x`` by ``shift`` turns through HSV (torchvision
    ``adjust_hue``)."""
    maxc, minc = x.amax(1), x.amin(1)
    r, g, b = x.unbind(1)
    delta = maxc - minc
    s = delta / torch.where(maxc > 0, maxc, 1.0)
    d = torch.where(delta > 0, delta, 1.0)
    h = torch.where(maxc == r, (g - b) / d,
                    torch.where(maxc == g, 2 + (b - r) / d, 4 + (r - g) / d))
    h = (h / 6 + _per_sample(shift, x)[:, 0]) % 1.0
    k = (torch.tensor([5.0, 3.0, 1.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
         + 6 * h.unsqueeze(1)) % 6
    v = maxc.unsqueeze(1)
    return (v - v * s.unsqueeze(1) * torch.minimum(k, 4 - k).clamp(0, 1)).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor | float, kernel_size: int) -> torch.Tensor:
    """Per-image gaussian blur of ``(N, C, H, W)`` with ``sigma`` (scalar or ``(N,)``, pixels):
    separable grouped convolution over ``N * C`` groups, reflect padding (as torchvision's
    ``gaussian_blur``)."""
    n, c, h, w = x.shape
    if kernel_size < 1 or kernel_size % 2 == 0 or kernel_size // 2 >= min(h, w):
        raise UserError(f"kernel_size={kernel_size}: must be odd, >= 1 and fit a {h}x{w} image")
    half = (kernel_size - 1) / 2
    t = torch.linspace(-half, half, kernel_size, dtype=x.dtype, device=x.device)
    kern = torch.exp(-0.5 * (t / _per_sample(sigma, x).reshape(-1, 1)) ** 2)
    kern = (kern / kern.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N*C, K)
    p = kernel_size // 2
    y = F.pad(x.reshape(1, n * c, h, w), (p, p, p, p), mode="reflect")
    y = F.conv2d(y, kern[:, None, None, :], groups=n * c)
    y = F.conv2d(y, kern[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


class BatchAugment(torch.nn.Module):
    """One random view of every image in a batch (SimCLR view pipeline, MoCo v2 settings).

    Args:
        cfg: settings; ``None`` fields come from :func:`preset` (resolved here).
        size: output side in pixels.
        channels: 1 or 3; the channel count of the batches it will see.

    ``forward(x, generator=None)`` takes ``(N, channels, H, W)`` floats in [0, 1] (any H, W) and
    returns ``(N, channels, size, size)`` in [0, 1], in ``x``'s dtype, computed in float32 even
    under ``torch.autocast``. All randomness comes from ``generator`` if given (its own device;
    the draws are moved to ``x``'s), else from the global RNG of ``x``'s device, so
    ``torch.manual_seed(s)`` reproduces a batch exactly. Every random number is drawn whether or
    not its transform is enabled (noise, the last draw, only if ``noise_std > 0``), so changing one
    probability does not reshuffle the others.
    """

    def __init__(self, cfg: AugmentConfig | None, size: int, channels: int) -> None:
        super().__init__()
        self.cfg = (cfg if cfg is not None else AugmentConfig()).resolve(size, channels)
        self.size, self.channels = size, channels
        self.kernel_size = blur_kernel_size(size, self.cfg.blur_sigma[1])

    def extra_repr(self) -> str:
        return f"size={self.size}, channels={self.channels}, kernel_size={self.kernel_size}, {self.cfg}"

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != self.channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise UserError(f"input shape {shape}: expected (N, {self.channels}, H, W)")
        if not x.is_floating_point():
            raise UserError(f"input dtype {x.dtype}: expected float in [0, 1] (divide by 255)")
        if x.shape[0] == 0:
            return x.new_zeros(0, self.channels, self.size, self.size)
        with torch.autocast(x.device.type, enabled=False):
            return self._augment(x.float(), generator).to(x.dtype)

    def _augment(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        cfg, n, dev = self.cfg, x.shape[0], x.device
        gdev = generator.device if generator is not None else dev

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(shape, generator=generator, device=gdev).to(dev)

        def uniform(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * u

        # Fixed draw order: geometry, jitter, grayscale, blur, noise.
        u_area, u_ratio, u_geo = rand(n, _CROP_TRIES), rand(n, _CROP_TRIES), rand(n, 5)
        u_jit = rand(n, 6)
        u_gray, u_blur = rand(n), rand(n, 2)

        x = self._geometry(x, u_area, u_ratio, u_geo)

        apply = u_jit[:, 0] < cfg.jitter_p
        for i, (s, op) in enumerate([(cfg.brightness, adjust_brightness),
                                     (cfg.contrast, adjust_contrast),
                                     (cfg.saturation, adjust_saturation)], start=1):
            if s > 0:
                x = op(x, torch.where(apply, uniform(u_jit[:, i], max(0.0, 1 - s), 1 + s), 1.0))
        if cfg.gamma > 0:
            lg = math.log1p(cfg.gamma)
            x = adjust_gamma(x, torch.where(apply, torch.exp(uniform(u_jit[:, 4], -lg, lg)), 1.0))
        if cfg.hue > 0:
            x = adjust_hue(x, torch.where(apply, uniform(u_jit[:, 5], -cfg.hue, cfg.hue), 0.0))
        if cfg.grayscale_p > 0:
            x = torch.where((u_gray < cfg.grayscale_p).view(-1, 1, 1, 1), _gray(x).expand_as(x), x)

        idx = (u_blur[:, 0] < cfg.blur_p).nonzero().squeeze(1)
        if idx.numel() > 0 and self.kernel_size > 1:
            sigma = uniform(u_blur[idx, 1], *cfg.blur_sigma)
            x = x.index_copy(0, idx, gaussian_blur(x[idx], sigma, self.kernel_size))

        if cfg.noise_std > 0:  # the last draw, so skipping it changes nothing above
            x = x + cfg.noise_std * torch.randn(x.shape, generator=generator, device=gdev).to(dev)
        return x.clamp(0, 1)

    def _geometry(self, x: torch.Tensor, u_area: torch.Tensor, u_ratio: torch.Tensor,
                  u_geo: torch.Tensor) -> torch.Tensor:
        """Random resized crop + flips + rotation as one affine resampling to ``size``."""
        cfg, (n, c, h, w) = self.cfg, x.shape
        area = cfg.crop_scale[0] + (cfg.crop_scale[1] - cfg.crop_scale[0]) * u_area
        lr0, lr1 = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
        ratio = torch.exp(lr0 + (lr1 - lr0) * u_ratio)
        # Crop width/height as fractions of the input side: (fw W)(fh H) = area W H and
        # fw W / (fh H) = ratio.  Take the first of the candidates that fits (torchvision's
        # rejection sampling); if none fits, shrink the first one to the image.
        fw, fh = torch.sqrt(area * ratio * h / w), torch.sqrt(area / ratio * w / h)
        first = ((fw <= 1) & (fh <= 1)).float().argmax(1, keepdim=True)
        fw, fh = fw.gather(1, first).squeeze(1).clamp(max=1), fh.gather(1, first).squeeze(1).clamp(max=1)
        cx, cy = (1 - fw) * (2 * u_geo[:, 0] - 1), (1 - fh) * (2 * u_geo[:, 1] - 1)
        sx = torch.where(u_geo[:, 2] < cfg.hflip, -1.0, 1.0)
        sy = torch.where(u_geo[:, 3] < cfg.vflip, -1.0, 1.0)
        angle = math.radians(cfg.rotate) * (2 * u_geo[:, 4] - 1)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # output (u, v) -> flip -> rotate (rigid: the output is square) -> scale into the crop.
        theta = torch.stack([
            torch.stack([fw * cos * sx, -fw * sin * sy, cx], 1),
            torch.stack([fh * sin * sx, fh * cos * sy, cy], 1),
        ], 1)
        limit = int(_MAX_DECIMATION * self.size)
        if h > limit or w > limit:
            x = F.interpolate(x, size=(min(h, limit), min(w, limit)), mode="bilinear",
                              align_corners=False, antialias=True)
        grid = F.affine_grid(theta, [n, c, self.size, self.size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
