"""``load_data``: one entry point for every kind of ``DATA``.

``data`` may be

1. a MedMNIST name (a 2-D, single-label key of ``medmnist.INFO``, any case, e.g.
   ``pneumoniamnist``): the file ``<name>.npz`` (28 px) or ``<name>_<size>.npz`` (64/128/224 px)
   in the data root; with ``download=True`` a missing file is fetched by the ``medmnist`` package;
2. the stem of any ``.npz`` in the data root (``chest_xray_kermany_64``); label names and task
   come from ``manifest.json`` in the root when it lists the file;
3. a path to a MedMNIST-layout ``.npz`` anywhere (a ``manifest.json`` beside it is read too);
4. a folder of images (see :mod:`ssl_ft.data.folder`).

A bare name is looked up in that order (MedMNIST, then the root, then as a relative path); a
string with a path separator or an ``.npz`` suffix, and any ``os.PathLike``, is a path. Without a
manifest entry the labels of an ``.npz`` are named after a MedMNIST key matching the file stem
(``pathmnist_64.npz``) or else ``"0"``, ``"1"``, ... (binary-class iff two classes); such
numbered classes must all have training images (no gaps), and in any dataset a class of val or
test must have training images (:mod:`ssl_ft.data.checks`).

The data root is, in order: the ``data_root`` argument, the ``SSL_FT_DATA`` environment
variable, then ``~/.medmnist`` (the medmnist package's own default).

Subsets: ``label_fraction`` subsamples the **train** split only (seeded by ``seed``, stratified,
nested across fractions); ``limit`` caps **every** split, train seeded by ``seed`` and val/test
by a fixed seed 0 so that all runs evaluate on the same images. ``val_fraction`` and
``test_fraction`` only matter for folders without split sub-folders (split seed fixed at 0).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ssl_ft.data.arrays import SPLITS, ArraySplits, DataInfo, SourceArrays
from ssl_ft.data.checks import check_labels_cover
from ssl_ft.data.convert import check_channels, check_size
from ssl_ft.data.folder import load_folder
from ssl_ft.data.medmnist_registry import (
    MEDMNIST_SIZES,
    download_medmnist,
    is_medmnist_name,
    medmnist_entry,
    medmnist_file_name,
    medmnist_label_names,
    medmnist_task,
    native_size_candidates,
)
from ssl_ft.data.npz import find_manifest_entry, normalise_task, read_npz
from ssl_ft.data.subsample import check_fraction, check_limit, check_split_fractions, subsample
from ssl_ft.errors import UserError

__all__ = ["DATA_ROOT_ENV", "DEFAULT_DATA_ROOT", "list_datasets", "load_data", "locate_data",
           "resolve_data_root"]

#: The medmnist package's own default root.
DEFAULT_DATA_ROOT = "~/.medmnist"
#: Environment variable that overrides the default data root.
DATA_ROOT_ENV = "SSL_FT_DATA"


def resolve_data_root(data_root: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``data_root`` if given, else ``$SSL_FT_DATA``, else ``~/.medmnist``.

    ``~`` is expanded; the folder need not exist.
    """
    if data_root is None or str(data_root) == "":
        data_root = os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT
    return Path(data_root).expanduser().absolute()


def list_datasets(data_root: str | os.PathLike[str] | None = None) -> list[str]:
    """Names usable as ``DATA``: the stems of the ``.npz`` files in the data root, sorted."""
    root = resolve_data_root(data_root)
    if not root.is_dir():
        return []
    return sorted(p.stem for p in root.glob("*.npz") if p.is_file() and not p.name.startswith("."))


def _npz_metadata(path: Path, labels: dict[str, np.ndarray]) -> tuple[str, tuple[str, ...], bool]:
    """Task, label names and whether the names are declared, for an ``.npz``: manifest entry,
    MedMNIST stem (both declared), or numbered after the largest label (not declared)."""
    entry = find_manifest_entry(path)
    if entry is not None:
        key, fields = entry
        source = f"{path.parent / 'manifest.json'} entry '{key}'"
        names = fields.get("labels")
        if not isinstance(names, list) or not names:
            raise UserError(f"{source}: 'labels' must be a non-empty list of class names")
        names_t = tuple(str(n) for n in names)
        default_task = "binary-class" if len(names_t) == 2 else "multi-class"
        task = normalise_task(fields.get("task", default_task), source=source)
        if task == "binary-class" and len(names_t) != 2:
            raise UserError(f"{source}: task binary-class but {len(names_t)} labels")
        return task, names_t, True
    stem = re.sub(r"_(28|64|128|224)$", "", path.stem).lower()
    if is_medmnist_name(stem):
        key, info = medmnist_entry(stem)
        return medmnist_task(key, info), medmnist_label_names(info), True
    top = max((int(v.max()) for v in labels.values() if len(v)), default=0)
    names_t = tuple(str(i) for i in range(top + 1))
    return ("binary-class" if len(names_t) == 2 else "multi-class"), names_t, False


def _check_label_range(labels: dict[str, np.ndarray], n_classes: int, source: Path) -> None:
    for split, values in labels.items():
        if len(values) and int(values.max()) >= n_classes:
            raise UserError(
                f"{source}: {split} labels reach {int(values.max())} but there are only "
                f"{n_classes} classes (labels must lie in [0, {n_classes}))"
            )


def _medmnist_path(name: str, root: Path, size: int | None, download: bool) -> tuple[str, Path]:
    key, _ = medmnist_entry(name)
    candidates = native_size_candidates(size)
    for native in candidates:
        path = root / medmnist_file_name(key, native)
        if path.is_file():
            return key, path
    wanted = medmnist_file_name(key, candidates[0])
    if not download:
        have = [s for s in MEDMNIST_SIZES if (root / medmnist_file_name(key, s)).is_file()]
        hint = f" (sizes present there: {', '.join(map(str, have))})" if have else ""
        raise UserError(
            f"MedMNIST dataset '{key}' not found: no {wanted} in {root}{hint}; pass download=True "
            f"(--download) to fetch it with the medmnist package, or point --data-root / "
            f"{DATA_ROOT_ENV} at a folder that holds it"
        )
    return key, download_medmnist(key, root, candidates[0])


def _is_path_like(data: str | os.PathLike[str]) -> bool:
    if not isinstance(data, str):
        return True
    return os.sep in data or "/" in data or data.startswith("~") or data.lower().endswith(".npz")


def _resolve(
    data: str | os.PathLike[str], root: Path, size: int | None, download: bool
) -> tuple[str, str, Path]:
    """``(kind, name, path)`` for ``data``; kind is "medmnist", "npz" or "folder"."""
    if not isinstance(data, (str, os.PathLike)) or str(data).strip() == "":
        raise UserError(f"data must be a dataset name, an .npz path or a folder, got {data!r}")
    if not _is_path_like(data):
        name = str(data)
        if is_medmnist_name(name):
            key, path = _medmnist_path(name, root, size, download)
            return "medmnist", key, path.resolve()
        if (root / f"{name}.npz").is_file():
            return "npz", name, (root / f"{name}.npz").resolve()
        if not Path(name).exists():
            available = list_datasets(root)
            listed = ", ".join(available[:20]) + (", ..." if len(available) > 20 else "")
            raise UserError(
                f"unknown dataset '{name}': not a MedMNIST name, no {name}.npz in {root} "
                f"(available there: {listed or 'none'}), and no such file or folder"
            )
    path = Path(data).expanduser()
    if not path.exists() and isinstance(data, str) and not path.is_absolute():
        if (root / path).exists():  # "foo.npz" relative to the data root
            path = root / path
    if not path.exists():
        raise UserError(f"no such file or folder: {path}")
    path = path.resolve()
    if path.is_dir():
        return "folder", path.name, path
    if path.suffix.lower() != ".npz":
        raise UserError(f"{path}: expected a MedMNIST-layout .npz file or a folder of images")
    return "npz", path.stem, path


def locate_data(data: str | os.PathLike[str], *, data_root: str | os.PathLike[str] | None = None,
                size: int | None = None, download: bool = False) -> Path:
    """The file or folder that :func:`load_data` would read for ``data``, without reading it
    (a missing MedMNIST file is downloaded when ``download``); a :class:`UserError` names what
    is missing."""
    return _resolve(data, resolve_data_root(data_root), size, download)[2]


def _subset(
    source: SourceArrays, label_fraction: float, limit: int | None, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    images: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    indices: dict[str, np.ndarray] = {}
    for split in SPLITS:
        if split == "train":
            idx = subsample(source.labels[split], fraction=label_fraction, limit=limit, seed=seed)
        else:
            idx = subsample(source.labels[split], limit=limit, seed=0)
        indices[split] = idx
        images[split] = np.ascontiguousarray(source.images[split][idx])
        labels[split] = source.labels[split][idx].astype(np.int64)
    return images, labels, indices


def load_data(
    data: str | os.PathLike[str],
    *,
    data_root: str | os.PathLike[str] | None = None,
    size: int | None = None,
    channels: int | None = None,
    label_fraction: float = 1.0,
    limit: int | None = None,
    seed: int = 0,
    download: bool = False,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> ArraySplits:
    """Load ``data`` (see the module docstring) as train/val/test arrays.

    Args:
        data: a MedMNIST name, an ``.npz`` stem in the data root, an ``.npz`` path or a folder.
        data_root: where names are looked up (see :func:`resolve_data_root`).
        size: output side length; images are centre-cropped to a square and resized
            (antialiased). ``None`` keeps the stored size (folders: all images must share it).
        channels: 1 or 3; ``1 -> 3`` replicates, ``3 -> 1`` uses BT.601 luma. ``None`` keeps
            the data's own channels.
        label_fraction: share of the train split to keep, in (0, 1] (stratified, seeded).
        limit: cap on the number of samples of every split (stratified).
        seed: seeds the label-fraction / limit draw of the train split.
        download: fetch a missing MedMNIST file with the ``medmnist`` package.
        val_fraction, test_fraction: shares carved out of a folder without split folders.

    Returns:
        :class:`ArraySplits` with private copies of the selected arrays.

    Raises:
        UserError: for any bad value, missing file or unreadable image (one line, naming it).
    """
    size = check_size(size)
    channels = check_channels(channels)
    label_fraction = check_fraction(label_fraction)
    limit = check_limit(limit)
    check_split_fractions(val_fraction, test_fraction)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise UserError(f"seed must be an integer, got {seed!r}")
    root = resolve_data_root(data_root)
    kind, name, path = _resolve(data, root, size, download)
    declared = True
    if kind == "folder":
        source, label_names = load_folder(
            path, size=size, channels=channels, val_fraction=val_fraction,
            test_fraction=test_fraction,
        )  # fmt: skip
        task = "binary-class" if len(label_names) == 2 else "multi-class"
    else:
        source = read_npz(path, size=size, channels=channels)
        if kind == "medmnist":
            key, info = medmnist_entry(name)
            task, label_names = medmnist_task(key, info), medmnist_label_names(info)
        else:
            task, label_names, declared = _npz_metadata(path, source.labels)
    _check_label_range(source.labels, len(label_names), path)
    check_labels_cover(source.labels, len(label_names), path, declared=declared)
    images, labels, indices = _subset(source, label_fraction, limit, int(seed))
    train = source.images["train"]
    info = DataInfo(
        name=name,
        kind=kind,
        source=str(path),
        task=task,
        label_names=tuple(label_names),
        n_channels=int(train.shape[1]),
        image_size=int(train.shape[2]),
        max_value=source.max_value,
        mean=source.mean,
        std=source.std,
        fingerprint=source.fingerprint,
    )
    return ArraySplits(info=info, images=images, labels=labels, indices=indices)
