"""The MedMNIST registry (names, tasks, labels) and its download path, via the ``medmnist`` package.

Only the 2-D, single-label MedMNIST datasets are supported: ``chestmnist`` (multi-label) and the
``*mnist3d`` volumes raise :class:`UserError`. ``retinamnist`` (ordinal regression) is treated as
multi-class.

Files follow medmnist 3's naming in the data root: ``<name>.npz`` for 28 px and
``<name>_<size>.npz`` for 64, 128 and 224 px. Downloading goes through the package's own code
(``medmnist.<PythonClass>(split="train", download=True, root=..., size=...)``), which fetches the
file from Zenodo and checks its MD5.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from ssl_ft.data.npz import normalise_task
from ssl_ft.errors import UserError

__all__ = [
    "MEDMNIST_SIZES",
    "download_medmnist",
    "is_medmnist_name",
    "medmnist_entry",
    "medmnist_file_name",
    "medmnist_label_names",
    "medmnist_task",
    "native_size_candidates",
    "supported_medmnist_names",
]

#: Image sizes the MedMNIST files come in.
MEDMNIST_SIZES: tuple[int, ...] = (28, 64, 128, 224)


def _medmnist() -> ModuleType:
    """The ``medmnist`` package, imported on first use (it pulls in scikit-learn and pandas)."""
    return importlib.import_module("medmnist")


def is_medmnist_name(name: str) -> bool:
    """True if ``name`` (any case) is a key of ``medmnist.INFO`` (2-D or 3-D)."""
    return str(name).lower() in _medmnist().INFO


def _is_3d(key: str, info: dict[str, Any]) -> bool:
    medmnist = _medmnist()
    cls = getattr(medmnist, str(info.get("python_class", "")), None)
    base = getattr(medmnist, "MedMNIST3D", None)
    if isinstance(cls, type) and base is not None and issubclass(cls, base):
        return True
    return key.endswith("3d")


def supported_medmnist_names() -> list[str]:
    """The MedMNIST names ``load_data`` accepts: 2-D and single-label."""
    return [
        k
        for k, v in _medmnist().INFO.items()
        if not _is_3d(k, v) and "multi-label" not in str(v.get("task", ""))
    ]


def medmnist_entry(name: str) -> tuple[str, dict[str, Any]]:
    """``(key, INFO entry)`` for a supported MedMNIST name; UserError for 3-D / multi-label."""
    medmnist = _medmnist()
    key = str(name).lower()
    if key not in medmnist.INFO:
        raise UserError(
            f"unknown MedMNIST dataset '{name}'; valid: {', '.join(supported_medmnist_names())}"
        )
    info = medmnist.INFO[key]
    if _is_3d(key, info):
        raise UserError(
            f"MedMNIST dataset '{key}' is 3-D, which ssl_ft does not support; "
            f"use a 2-D one ({', '.join(supported_medmnist_names())})"
        )
    if "multi-label" in str(info.get("task", "")):
        raise UserError(
            f"MedMNIST dataset '{key}' is multi-label ({info['task']}), which ssl_ft does not "
            f"support; use a binary-class or multi-class dataset"
        )
    return key, info


def medmnist_label_names(info: dict[str, Any]) -> tuple[str, ...]:
    """Label names of an INFO entry, in label order."""
    labels = info["label"]
    return tuple(str(labels[k]) for k in sorted(labels, key=int))


def medmnist_task(key: str, info: dict[str, Any]) -> str:
    """``"binary-class"`` or ``"multi-class"`` for an INFO entry."""
    return normalise_task(info["task"], source=f"MedMNIST '{key}'")


def medmnist_file_name(key: str, native_size: int) -> str:
    """``<key>.npz`` for 28 px, ``<key>_<size>.npz`` otherwise (medmnist 3 naming)."""
    return f"{key}.npz" if native_size == 28 else f"{key}_{native_size}.npz"


def native_size_candidates(size: int | None) -> list[int]:
    """MedMNIST file sizes to look for, best first, for a requested ``size``.

    ``None`` -> ``[28]``; a MedMNIST size (28/64/128/224) -> just that size, so a 28 px file is
    never silently upsampled to a size MedMNIST ships; any other size -> the MedMNIST sizes at
    least as large, smallest first (downsampled), then the smaller ones, largest first
    (upsampled, e.g. 28 -> 32). A download fetches the first candidate.
    """
    if size is None:
        return [28]
    if size in MEDMNIST_SIZES:
        return [size]
    larger = [s for s in MEDMNIST_SIZES if s >= size]
    smaller = [s for s in reversed(MEDMNIST_SIZES) if s < size]
    return larger + smaller


def download_medmnist(key: str, root: Path, native_size: int) -> Path:
    """Download ``<key>[_<size>].npz`` into ``root`` with the medmnist package; return its path.

    Raises :class:`UserError` (with the manual download URL) when the download fails.
    """
    _, info = medmnist_entry(key)
    target = root / medmnist_file_name(key, native_size)
    flag = "" if native_size == 28 else f"_{native_size}"
    url = info.get(f"url{flag}", "https://medmnist.com")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create data root {root}: {exc}") from exc
    dataset_class = getattr(_medmnist(), info["python_class"])
    try:
        dataset_class(split="train", download=True, root=str(root), size=native_size)
    except Exception as exc:  # medmnist raises RuntimeError (and asserts) on any failure
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"could not download {target.name} into {root} ({first}); download it by hand from "
            f"{url} and put it there"
        ) from exc
    if not target.is_file():
        raise UserError(f"medmnist reported a download of '{key}' but {target} does not exist")
    return target
