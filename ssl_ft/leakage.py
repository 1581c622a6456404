"""The leakage guard: did pretraining see the images a model is now evaluated on?

A checkpoint records a compact perceptual code of every image it was pretrained on
(:func:`image_codes`); every consumer of a checkpoint (fine-tuning, fusion, probes, studies)
compares those codes with the target's validation and test images (:func:`check_leakage`) and
stops with one line when pretraining saw any of them.

The code must recognise the *same source image* prepared another way: BreastMNIST (28 px) and
BUSI (64/128 px here) are the same ultrasound scans, resized by different pipelines; PneumoniaMNIST
centre-crops the Kermany chest X-rays to a square while ``chest_xray_kermany_64`` squashes the
whole image. So an image's code is a stack of :data:`VARIANTS` views -- the whole image, and
centre crops of 90/80/70/60 % of its width or its height, each stretched back to a square -- every
view reduced to an 8x8 grey thumbnail (area average) with its own min..max stretched to 0..255
(``uint8``, 9 x 64 bytes an image). Two images match when the cosine distance between their
mean-centred thumbnails is below ``threshold`` for the whole view of one against *any* view of the
other (so a crop on either side is found).

Measured on the project's data (``docs/pretraining.md``, "Leakage guard"): at the default
threshold 0.01, 151 of the 156 BreastMNIST test images match a BUSI image and 252 of the 524
PneumoniaMNIST validation images match one of the 3627 Kermany training images (about 70 % of the
source pool is in that split), while unrelated pairs stay above it (PneumoniaMNIST test vs Kermany
train: smallest distance 0.019; PneumoniaMNIST test vs its own train split 0.013; across
modalities > 0.037).

Images that a target's *own* training split already duplicates (official splits such as
BreastMNIST's hold near-copies across splits) are not counted against a checkpoint: pretraining
on a target's train split sees nothing its supervised training does not. An evaluation image is
exempt when an image of the target's own train split is within the threshold of it, or no more
than :data:`OWN_TOLERANCE` (0.001) farther from it than the nearest pretraining image, so that
two preparations of one train image, the pool's and the target loader's, cannot straddle the
threshold (measured on LC25000: val image 374 lies 0.0099 from the pool's copy of a train image
and 0.0101 from the loader's). A foreign image much nearer than anything of the target's own is
never exempt.

Checkpoints made before the luma grey (below) recorded RGB pools' codes from a channel mean; the
guard compares them with luma codes and may miss near-copies in such (RGB-pool) checkpoints.

RGB images are made grey with the luma weights of :func:`ssl_ft.data.convert.convert_channels`,
so a code does not depend on whether a pipeline converted the image to grey before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ssl_ft.data.convert import LUMA_WEIGHTS
from ssl_ft.errors import UserError

__all__ = [
    "DEFAULT_THRESHOLD",
    "VARIANTS",
    "LeakageReport",
    "check_leakage",
    "find_matches",
    "guard_checkpoint",
    "image_codes",
    "own_train_split",
    "recorded_codes",
]

#: ``(axis, fraction)``: the whole image, then centre crops of the width ("w") or height ("h").
VARIANTS: tuple[tuple[str, float], ...] = (("w", 1.0),) + tuple(
    (axis, r) for axis in "wh" for r in (0.9, 0.8, 0.7, 0.6))
#: Cosine distance below which two codes are the same image (see the module docstring).
DEFAULT_THRESHOLD = 0.01
_SIDE = 8
_CHUNK = 2048
_LUMA = torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)


def image_codes(images: np.ndarray | torch.Tensor, max_value: int = 255) -> np.ndarray:
    """Perceptual codes ``(N, len(VARIANTS), 64)`` ``uint8`` of ``(N, C, H, W)`` images.

    RGB images are made grey first with the luma weights of ``convert_channels`` (the grey a
    pipeline makes of them); the result does not depend on ``max_value`` or the image size beyond
    resampling noise (``max_value`` is accepted for symmetry with the loaders).
    """
    del max_value  # every view is stretched to its own min..max
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(x.shape)}")
    out = np.empty((len(x), len(VARIANTS), _SIDE * _SIDE), dtype=np.uint8)
    for start in range(0, len(x), _CHUNK):
        grey = x[start:start + _CHUNK].float()
        if grey.shape[1] == 3:
            grey = (grey * _LUMA).sum(1, keepdim=True)
        elif grey.shape[1] != 1:
            grey = grey.mean(1, keepdim=True)
        out[start:start + len(grey)] = _codes_of(grey).numpy()
    return out


def _codes_of(grey: torch.Tensor) -> torch.Tensor:
    n, side = len(grey), max(32, grey.shape[-1])
    views = []
    for axis, r in VARIANTS:
        theta = torch.tensor([[r if axis == "w" else 1.0, 0, 0], [0, r if axis == "h" else 1.0, 0]])
        grid = F.affine_grid(theta.expand(n, 2, 3), [n, 1, side, side], align_corners=False)
        view = F.grid_sample(grey, grid, mode="bilinear", align_corners=False)
        view = F.interpolate(view, size=(_SIDE, _SIDE), mode="area").reshape(n, -1)
        lo, hi = view.amin(1, keepdim=True), view.amax(1, keepdim=True)
        views.append(((view - lo) / (hi - lo).clamp_min(1e-6) * 255).round().to(torch.uint8))
    return torch.stack(views, 1)


def _unit(codes: np.ndarray) -> torch.Tensor:
    c = torch.from_numpy(np.ascontiguousarray(codes)).float()
    c = c - c.mean(-1, keepdim=True)
    return c / c.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def find_matches(seen: np.ndarray, target: np.ndarray,
                 threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Boolean mask over ``target``: which of its images match any image of ``seen``.

    Both arguments are :func:`image_codes` outputs. A pair matches when the whole view of one is
    within ``threshold`` (cosine distance) of any view of the other.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    if len(seen) == 0 or len(target) == 0:
        return np.zeros(len(target), dtype=bool)
    return (_nearest(seen, target) < threshold).numpy()


def _nearest(seen: np.ndarray, target: np.ndarray) -> torch.Tensor:
    """Per ``target`` code, the smallest distance to any ``seen`` code (:func:`find_matches`'
    rule: the whole view of one against every view of the other, both ways)."""
    a, b = _unit(target), _unit(seen)
    best = torch.full((len(a),), 2.0)
    for start in range(0, len(b), 8 * _CHUNK):
        part = b[start:start + 8 * _CHUNK]
        for v in range(a.shape[1]):
            best = torch.minimum(best, 1 - (a[:, 0] @ part[:, v].T).amax(1))
            if v:
                best = torch.minimum(best, 1 - (a[:, v] @ part[:, 0].T).amax(1))
    return best


#: How much farther than the pretraining image an evaluation image's nearest own-train image may
#: lie and still count as the same image prepared another way (the pool's and the loader's copy
#: of one LC25000 train image: 0.0099 and 0.0101 from val image 374).
OWN_TOLERANCE = 0.001


def _own_duplicates(seen: np.ndarray, hits: np.ndarray, train: np.ndarray,
                    threshold: float) -> np.ndarray:
    """Mask over ``hits`` (codes of evaluation images that ``seen`` matched): exempt, because an
    image of the target's own ``train`` split is within ``threshold`` of it, or no more than
    :data:`OWN_TOLERANCE` farther from it than the nearest pretraining image."""
    own = _nearest(train, hits)
    return ((own < threshold) | (own <= _nearest(seen, hits) + OWN_TOLERANCE)).numpy()


@dataclass(frozen=True)
class LeakageReport:
    """What :func:`check_leakage` found, per split: images pretraining saw, and those of them
    the target's own train split already duplicates (not counted)."""

    seen: dict[str, int]
    own_duplicates: dict[str, int]
    checked: bool

    @property
    def leaked(self) -> int:
        return sum(self.seen.values())

    def as_dict(self) -> dict:
        return {"checked": self.checked, "seen": dict(self.seen),
                "own_train_duplicates": dict(self.own_duplicates)}


def check_leakage(seen: np.ndarray | None, images: dict[str, np.ndarray], *,
                  what: str, target: str, allow: bool = False,
                  threshold: float = DEFAULT_THRESHOLD, warn=None,
                  own_train: np.ndarray | None = None) -> LeakageReport:
    """Refuse (``UserError``) a target whose val/test images ``seen`` (a checkpoint's codes)
    contains, unless ``allow``.

    Args:
        seen: the codes a checkpoint recorded, or ``None`` when it recorded none (an older or
            foreign checkpoint: nothing can be checked, ``warn`` is called once).
        images: the target's splits, ``{"train", "val", "test"}`` ``(N, C, H, W)`` arrays.
        what: the checkpoint, for the message; target: the dataset's name, likewise.
        allow: report the overlap through ``warn`` instead of stopping.
        own_train: the target's *whole* train split, when ``images["train"]`` is a labelled
            subset of it (``label_fraction``): all of it is the target's own unlabelled data.
    """
    if seen is None:
        if warn is not None:
            warn(f"{what} records no image fingerprints: cannot check that pretraining never "
                 f"saw {target}'s val/test images")
        return LeakageReport({}, {}, checked=False)
    found: dict[str, int] = {}
    own: dict[str, int] = {}
    train_codes = None
    for split in ("val", "test"):
        codes = image_codes(images[split])
        hit = find_matches(seen, codes, threshold)
        if hit.any():
            if train_codes is None:
                train_codes = image_codes(images["train"] if own_train is None else own_train)
            dup = _own_duplicates(seen, codes[hit], train_codes, threshold)
            own[split] = int(dup.sum())
            hit[np.flatnonzero(hit)[dup]] = False
        found[split] = int(hit.sum())
    report = LeakageReport(found, own, checked=True)
    if report.leaked:
        counts = ", ".join(f"{n} of its {len(images[s])} {s} images" for s, n in found.items() if n)
        msg = (f"{what} was pretrained on images of {target}'s evaluation splits ({counts}); "
               f"pretrain without them (data.exclude) or pass --allow-overlap")
        if not allow:
            raise UserError(msg)
        if warn is not None:
            warn("allowed overlap: " + msg.split(" (data.exclude)")[0])
    return report


def own_train_split(label_fraction: float, data: str, **load_kwargs: Any) -> np.ndarray | None:
    """The target's whole train split (``load_data(data, **load_kwargs)``) when a consumer
    trains on a labelled subset of it (``label_fraction`` < 1): the ``own_train`` of
    :func:`check_leakage`. ``None`` when the consumer's train split is already all of it."""
    if label_fraction == 1:
        return None
    from ssl_ft.data import load_data

    return load_data(data, **load_kwargs).images["train"]


def recorded_codes(checkpoint: str | None) -> tuple[np.ndarray | None, bool]:
    """``(codes, is_ssl_ft)``: the perceptual codes an ssl_ft checkpoint recorded (``None`` if
    it recorded none), and whether ``checkpoint`` is an ssl_ft checkpoint at all (random init,
    ``imagenet`` and foreign state dicts are not: there is nothing to check)."""
    from pathlib import Path

    from ssl_ft.checkpoint.core import FORMAT

    if checkpoint in (None, "", "none", "imagenet") or not Path(str(checkpoint)).is_file():
        return None, False
    try:
        raw = torch.load(str(checkpoint), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001  (safetensors or foreign files: the loaders report those)
        return None, False
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        return None, False
    codes = (raw.get("extra") or {}).get("seen_codes")
    return (codes.numpy() if isinstance(codes, torch.Tensor) else None), True


def guard_checkpoint(checkpoint: str | None, images: dict[str, np.ndarray], *, target: str,
                     allow: bool = False, warn=None,
                     own_train: np.ndarray | None = None) -> LeakageReport | None:
    """:func:`check_leakage` for the checkpoint file a consumer was given; ``None`` when the
    checkpoint is not an ssl_ft one (nothing recorded, nothing to check)."""
    codes, ours = recorded_codes(checkpoint)
    if not ours:
        return None
    return check_leakage(codes, images, what=f"checkpoint {checkpoint}", target=target,
                         allow=allow, warn=warn, own_train=own_train)
