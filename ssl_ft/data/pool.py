"""Unlabelled pretraining pools: the train splits of several datasets and image folders at once.

A pool is what self-supervised pretraining reads: a list of sources, each a ``DATA`` of
:func:`ssl_ft.data.load_data` (MedMNIST name, ``.npz`` name or path, image folder) or a flat
folder of images with no class sub-folders (an unlabelled collection: all of it is used). Policy:

* **only train splits** of labelled sources are used (a folder with class or split sub-folders is
  split as :mod:`ssl_ft.data.folder` always splits it, seed 0, and only its train part is read);
* **one size**: every source is centre-cropped and resized to ``size`` (default: the largest
  native size among the sources);
* **one channel count**: ``channels`` if given, else 1 unless every source is RGB (grey sources
  are not made RGB behind the user's back; RGB sources become BT.601 luma);
* **one intensity range**: ``uint16`` if any source is 16-bit (8-bit sources scaled by 257);
* **sampling weights**: a source with ``weight`` w is drawn w times as often per image as a
  source of weight 1 (:func:`epoch_indices`); weights 1 everywhere is a plain shuffle;
* **exclusions**: images matching the val/test images of the datasets in ``exclude`` are dropped
  (:mod:`ssl_ft.leakage`), so that a general source can be fine-tuned on any of them.

Every source is recorded (name, file, fingerprint, images used, images excluded, weight), and
:func:`ssl_ft.leakage.image_codes` of every image used travel into the checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ssl_ft.data.arrays import DataInfo
from ssl_ft.data.convert import (
    channel_stats,
    check_channels,
    check_size,
    convert_channels,
    resize_images,
)
from ssl_ft.data.folder import IMAGE_SUFFIXES, read_image
from ssl_ft.data.load import load_data, resolve_data_root
from ssl_ft.data.npz import file_sha256
from ssl_ft.errors import UserError
from ssl_ft.leakage import DEFAULT_THRESHOLD, find_matches, image_codes

__all__ = ["Pool", "PoolSource", "epoch_indices", "load_pool"]


@dataclass
class PoolSource:
    """One entry of a pool: a ``DATA`` and its sampling weight."""

    name: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not (self.weight > 0 and np.isfinite(self.weight)):
            raise UserError(f"data source {self.name!r}: weight must be > 0, got {self.weight}")


@dataclass
class Pool:
    """The pooled train images and what they came from.

    Attributes:
        images: ``(N, C, H, W)`` ``uint8``/``uint16``.
        source_index: ``(N,)`` index into ``sources`` of each image.
        sources: one record a source (JSON-like, for recipes and checkpoints).
        codes: :func:`ssl_ft.leakage.image_codes` of ``images``.
        info: a :class:`DataInfo` of the pool (train mean/std of the pooled images).
    """

    images: np.ndarray
    source_index: np.ndarray
    sources: list[dict]
    codes: np.ndarray
    info: DataInfo
    weights: np.ndarray = field(default_factory=lambda: np.ones(0))

    @property
    def uniform(self) -> bool:
        return bool(np.all(self.weights == self.weights[0])) if len(self.weights) else True


def _as_sources(data: str | list) -> list[PoolSource]:
    items = data if isinstance(data, list | tuple) else [data]
    if not items:
        raise UserError("data.name is an empty list: name at least one dataset or folder")
    out = []
    for item in items:
        if isinstance(item, PoolSource):
            out.append(item)
        elif isinstance(item, str | os.PathLike):
            out.append(PoolSource(str(item)))
        elif isinstance(item, dict):
            out.append(PoolSource(str(item.get("name")), float(item.get("weight", 1.0))))
        elif hasattr(item, "name"):
            out.append(PoolSource(str(item.name), float(getattr(item, "weight", 1.0))))
        else:
            raise UserError(f"data source {item!r}: expected a name, a path or "
                            f"{{name: ..., weight: ...}}")
    return out


def _flat_folder(path: Path) -> list[Path] | None:
    """The images of a folder without sub-folders (an unlabelled collection), else ``None``."""
    if not path.is_dir() or any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir()):
        return None
    files = sorted(p for p in path.iterdir() if not p.name.startswith(".")
                   and (p.name.lower().endswith(IMAGE_SUFFIXES) or p.suffix == ""))
    if not files:
        raise UserError(f"{path}: no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def _read_flat(files: list[Path], size: int) -> np.ndarray:
    arrays = [read_image(p, size=size) for p in files]
    if len({a.dtype for a in arrays}) > 1:
        arrays = [a.astype(np.uint16) * np.uint16(257) if a.dtype == np.uint8 else a
                  for a in arrays]
    chans = {a.shape[0] for a in arrays}
    if len(chans) > 1:
        arrays = [convert_channels(a[None], 1)[0] for a in arrays]
    return np.stack(arrays)


def _source_size(name: str, root: Path) -> int:
    """A source's native size, read cheaply (for the default pool size)."""
    flat = _flat_folder(Path(name).expanduser())
    if flat is not None:
        return int(read_image(flat[0]).shape[-1])
    return load_data(name, data_root=root, limit=1).info.image_size


def _load_source(src: PoolSource, root: Path, size: int, limit: int | None,
                 seed: int, download: bool) -> tuple[np.ndarray, dict]:
    flat = _flat_folder(Path(src.name).expanduser())
    if flat is not None:
        images = _read_flat(flat, size)
        if limit is not None and len(images) > limit:
            images = images[np.sort(np.random.default_rng(seed).permutation(len(images))[:limit])]
        digest = hashlib.sha256()
        for p in flat:
            digest.update(f"{p.name}\0{file_sha256(p)}\n".encode())
        record = {"name": Path(src.name).name, "kind": "unlabelled folder",
                  "source": str(Path(src.name).resolve()), "fingerprint": digest.hexdigest(),
                  "split": "all (unlabelled)"}
        return images, record
    splits = load_data(src.name, data_root=root, limit=limit, seed=seed, download=download)
    i, train = splits.info, splits.images["train"]
    if i.image_size != size:  # MedMNIST names too: resized here, not looked up at other sizes
        train = resize_images(train, size)
    return train, {"name": i.name, "kind": i.kind, "source": i.source,
                                    "fingerprint": i.fingerprint, "split": "train"}


#: Exclusion is stricter than the guard (twice its threshold): near-copies close to the guard's
#: threshold can land on either side of it once both are resized again, and a pool built with
#: ``exclude`` must never be refused later for the datasets it excluded.
EXCLUDE_MARGIN = 2.0


def _exclusion_codes(exclude: list[str], root: Path, size: int) -> tuple[np.ndarray, list[str]]:
    """Codes of the val/test images of every dataset in ``exclude``, at the pool's size."""
    codes, names = [], []
    for name in exclude:
        splits = load_data(name, data_root=root)
        names.append(splits.info.name)
        for split in ("val", "test"):
            images = splits.images[split]
            if splits.info.image_size != size:
                images = resize_images(images, size)
            codes.append(image_codes(images))
    return (np.concatenate(codes) if codes else np.zeros((0, 9, 64), np.uint8)), names


def load_pool(data: str | list, *, data_root: str | os.PathLike | None = None,
              size: int | None = None, channels: int | None = None, limit: int | None = None,
              seed: int = 0, download: bool = False, exclude: list[str] = (),
              log=lambda msg: print(msg, file=sys.stderr)) -> Pool:
    """Read the train images of every source in ``data`` into one :class:`Pool`.

    Args:
        data: one ``DATA`` or a list of them (strings, or ``{name, weight}`` mappings).
        size, channels: the pool's image size and channels (see the module docstring).
        limit: at most this many images per source (seeded).
        exclude: datasets whose val/test images are removed from the pool.
    """
    sources = _as_sources(data)
    size, channels = check_size(size), check_channels(channels)
    root = resolve_data_root(data_root)
    if size is None:
        size = max(_source_size(s.name, root) for s in sources)
    parts, records = [], []
    for src in sources:
        images, record = _load_source(src, root, size, limit, seed, download)
        parts.append(images)
        records.append({**record, "weight": src.weight})
    if channels is None:
        channels = 3 if all(p.shape[1] == 3 for p in parts) else 1
    wide = any(p.dtype == np.uint16 for p in parts)
    parts = [convert_channels(p, channels) for p in parts]
    if wide:
        parts = [p.astype(np.uint16) * np.uint16(257) if p.dtype == np.uint8 else p for p in parts]
    codes = [image_codes(p) for p in parts]
    if exclude:
        banned, names = _exclusion_codes(list(exclude), root, size)
        for k, (p, c) in enumerate(zip(parts, codes, strict=True)):
            drop = find_matches(banned, c, DEFAULT_THRESHOLD * EXCLUDE_MARGIN)
            records[k]["excluded"] = int(drop.sum())
            parts[k], codes[k] = p[~drop], c[~drop]
            if drop.any():
                log(f"pool: dropped {int(drop.sum())} of {len(drop)} {records[k]['name']} images "
                    f"that match val/test images of {', '.join(names)}")
    for rec, p in zip(records, parts, strict=True):
        rec["images"] = int(len(p))
        if not len(p):
            raise UserError(f"data source {rec['name']!r} has no images left to pretrain on")
    images = np.ascontiguousarray(np.concatenate(parts))
    index = np.concatenate([np.full(len(p), k) for k, p in enumerate(parts)])
    max_value = 65535 if wide else 255
    mean, std = channel_stats(images, max_value)
    single = len(records) == 1
    info = DataInfo(
        name=records[0]["name"] if single else "+".join(r["name"] for r in records),
        kind=records[0]["kind"] if single else "pool", source=records[0]["source"],
        task="unlabelled", label_names=(), n_channels=channels, image_size=size,
        max_value=max_value, mean=mean, std=std,
        fingerprint=records[0]["fingerprint"] if single else _pool_digest(records),
    )
    weights = np.asarray([records[k]["weight"] for k in index], dtype=np.float64)
    return Pool(images, index, records, np.concatenate(codes), info, weights)


def _pool_digest(records: list[dict]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r['fingerprint']}\0{r['images']}\0{r['weight']}\n".encode())
    return h.hexdigest()


def epoch_indices(weights: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The images of one epoch: ``len(weights)`` draws, each image with probability
    proportional to its weight (with replacement), seeded by ``(seed, epoch)``."""
    rng = np.random.default_rng([seed, epoch])
    p = weights / weights.sum()
    return rng.choice(len(weights), size=len(weights), replace=True, p=p)
