"""Reading MedMNIST-layout ``.npz`` files (and the ``manifest.json`` beside them).

A MedMNIST-layout file holds ``train_images, train_labels, val_images, val_labels, test_images,
test_labels``; images are ``uint8`` (or ``uint16``) ``(N, H, W)`` for grayscale or
``(N, H, W, 3)`` for RGB, labels ``(N, 1)`` or ``(N,)`` integers. Files are read with
``allow_pickle=False``.

Reads are cached per process: the same file (same path, modification time and byte size) is
neither re-read nor re-hashed, and the resized / channel-converted full splits and their
statistics are cached per ``(size, channels)`` as well. Cached arrays are read-only;
:func:`ssl_ft.data.load_data` hands out copies.
"""

from __future__ import annotations

import functools
import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ssl_ft.data.arrays import SPLITS, SourceArrays
from ssl_ft.data.convert import (
    channel_stats,
    convert_channels,
    max_value_of,
    resize_images,
    to_nchw,
)
from ssl_ft.errors import UserError

__all__ = [
    "NPZ_KEYS",
    "clear_cache",
    "file_sha256",
    "find_manifest_entry",
    "normalise_task",
    "read_npz",
]

#: The keys a MedMNIST-layout ``.npz`` must hold.
NPZ_KEYS: tuple[str, ...] = tuple(f"{s}_{k}" for s in SPLITS for k in ("images", "labels"))


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _labels(raw: np.ndarray, n_images: int, *, source: str, key: str) -> np.ndarray:
    """``(N,)`` or ``(N, 1)`` integer labels -> ``(N,)`` int64; anything else is a UserError."""
    if raw.ndim == 2 and raw.shape[1] > 1:
        raise UserError(
            f"{source}: '{key}' has shape {raw.shape} (multi-label); only single-label "
            f"classification is supported"
        )
    if raw.ndim not in (1, 2):
        raise UserError(f"{source}: '{key}' has shape {raw.shape}; expected (N, 1) or (N,)")
    flat = raw.reshape(-1)
    if len(flat) != n_images:
        raise UserError(f"{source}: '{key}' has {len(flat)} labels for {n_images} images")
    if flat.dtype.kind == "f" and np.all(np.isfinite(flat)) and np.all(flat == np.round(flat)):
        flat = flat.astype(np.int64)
    if flat.dtype.kind not in "iu":
        raise UserError(f"{source}: '{key}' must hold integer class labels, got dtype {raw.dtype}")
    flat = flat.astype(np.int64)
    if len(flat) and flat.min() < 0:
        raise UserError(f"{source}: '{key}' holds a negative label ({flat.min()})")
    return flat


@functools.lru_cache(maxsize=4)
def _read_raw(
    path: str, mtime_ns: int, nbytes: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], str]:
    """Images as read-only ``(N, C, H, W)``, labels as read-only int64, and the file's SHA-256.

    ``mtime_ns`` and ``nbytes`` are only part of the cache key.
    """
    del mtime_ns, nbytes
    sha = file_sha256(path)
    images: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in NPZ_KEYS:
                if key not in npz.files:
                    raise UserError(
                        f"{path}: missing key '{key}' (a MedMNIST-layout .npz needs "
                        f"{', '.join(NPZ_KEYS)}; found {', '.join(npz.files) or 'none'})"
                    )
            for split in SPLITS:
                arr = npz[f"{split}_images"]
                if arr.dtype not in (np.uint8, np.uint16):
                    raise UserError(
                        f"{path}: '{split}_images' has dtype {arr.dtype}; expected uint8 or uint16"
                    )
                images[split] = _readonly(to_nchw(arr, source=path, key=f"{split}_images"))
                labels[split] = _readonly(
                    _labels(npz[f"{split}_labels"], len(arr), source=path, key=f"{split}_labels")
                )
    except UserError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise UserError(f"cannot read {path} as a MedMNIST-layout .npz: {exc}") from exc
    shapes = {split: images[split].shape[1:] for split in SPLITS}
    dtypes = {images[split].dtype for split in SPLITS}
    if len(set(shapes.values())) > 1 or len(dtypes) > 1:
        detail = ", ".join(f"{s}={shapes[s]} {images[s].dtype}" for s in SPLITS)
        raise UserError(f"{path}: the splits' images differ in shape or dtype ({detail})")
    return images, labels, sha


@functools.lru_cache(maxsize=4)
def _prepare(
    path: str, mtime_ns: int, nbytes: int, size: int | None, channels: int | None
) -> SourceArrays:
    images, labels, sha = _read_raw(path, mtime_ns, nbytes)
    _, height, width = images["train"].shape[1:]
    if size is None and height != width:
        raise UserError(f"{path}: images are {height}x{width}, not square; pass a size")
    out: dict[str, np.ndarray] = {}
    for split in SPLITS:
        arr = convert_channels(images[split], channels)
        if size is not None and (height != size or width != size):
            arr = resize_images(arr, size)
        out[split] = arr if arr is images[split] else _readonly(arr)
    if len(out["train"]) == 0:
        raise UserError(f"{path}: the train split is empty")
    max_value = max_value_of(out["train"].dtype)
    mean, std = channel_stats(out["train"], max_value)
    return SourceArrays(
        images=out, labels=labels, max_value=max_value, mean=mean, std=std, fingerprint=sha
    )


def read_npz(
    path: str | Path, *, size: int | None = None, channels: int | None = None
) -> SourceArrays:
    """Read (through the cache) a MedMNIST-layout ``.npz`` as full ``(N, C, H, W)`` splits.

    ``size`` resizes (centre-crop first if not square); ``channels`` converts 1 <-> 3. The returned
    arrays are read-only and shared with the cache.
    """
    p = Path(path).resolve()
    if not p.is_file():
        raise UserError(f"no such .npz file: {p}")
    st = p.stat()
    return _prepare(str(p), st.st_mtime_ns, st.st_size, size, channels)


def clear_cache() -> None:
    """Forget every cached ``.npz`` read."""
    _prepare.cache_clear()
    _read_raw.cache_clear()


def find_manifest_entry(npz_path: str | Path) -> tuple[str, dict[str, Any]] | None:
    """The ``(key, entry)`` of ``manifest.json`` beside ``npz_path`` whose ``files`` list holds its
    file name, or ``None`` when there is no manifest or no such entry.

    A manifest that is not valid JSON (or not shaped ``{"datasets": {...}}``) is a
    :class:`UserError` naming it.
    """
    npz_path = Path(npz_path)
    manifest = npz_path.parent / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {manifest}: {exc}") from exc
    datasets = doc.get("datasets") if isinstance(doc, dict) else None
    if not isinstance(datasets, dict):
        raise UserError(f"{manifest}: expected an object with a 'datasets' mapping")
    for key, entry in datasets.items():
        if isinstance(entry, dict) and npz_path.name in (entry.get("files") or []):
            return str(key), entry
    return None


def normalise_task(task: str, *, source: str) -> str:
    """Map a MedMNIST task string onto ``"binary-class"`` or ``"multi-class"``.

    Ordinal regression is treated as multi-class; multi-label tasks raise :class:`UserError`.
    """
    text = str(task).strip().lower()
    if "multi-label" in text:
        raise UserError(
            f"{source}: task '{task}' is multi-label, which ssl_ft does not support "
            f"(binary-class and multi-class only)"
        )
    if text in ("binary-class", "multi-class"):
        return text
    if text == "ordinal-regression":
        return "multi-class"
    raise UserError(
        f"{source}: unknown task '{task}' (valid: binary-class, multi-class, ordinal-regression)"
    )
