"""Folders of images: PNG/JPEG (8 or 16 bit), DICOM and 2-D NIfTI, read through MONAI's readers.

Layouts:

* ``root/<class>/...`` -- one pool, split into train/val/test by :func:`split_stratified` with
  ``val_fraction`` / ``test_fraction`` and a **fixed seed 0**, so that the split never changes with
  the run's seed (only the label fraction does).
* ``root/<split>/<class>/...`` with split folders ``train`` (also ``training``), ``val`` (also
  ``valid``, ``validation``) and ``test`` (also ``testing``), in any case. ``train`` is required;
  a missing ``val`` (and/or ``test``) is carved out of train with the same seeded rule.

Images may sit at any depth below their class folder. Class names are the sorted class folder
names of the train split (plain string order), shared by every split; a class may be missing
from val or test, but a class in val/test that has no training images is an error. Hidden files
and folders (``.*``, ``__MACOSX``) and non-image files (``.txt``, ``.csv``, ...) are skipped; a
file without a known image suffix is read as DICOM if it carries the DICOM preamble.

Decoding (``monai.data``): ``PILReader(reverse_indexing=False)`` so that arrays have PIL's own
``(H, W[, 3])`` orientation, ``PydicomReader(swap_ij=False)`` (rows x columns, as
``pydicom``'s ``pixel_array``; rescale slope/intercept applied; MONOCHROME1 inverted) and
``NibabelReader`` (the stored voxel array, axes not reoriented; a ``(H, W, 1)`` volume is fine, a
real 3-D volume is an error). Palette, alpha and other PIL modes become ``L`` or ``RGB``; an RGB
file whose three channels are identical counts as grayscale.

Intensities: if every image is 8-bit the arrays are ``uint8`` (``max_value`` 255). Otherwise
they are ``uint16`` (``max_value`` 65535): 8-bit images are multiplied by 257 (so 255 -> 65535),
16-bit PNGs are kept as they are, and every DICOM / NIfTI image (and any float image) is rescaled
linearly from its own min..max to 0..65535 (per image; a constant image becomes all 0).

Size: with ``size`` each image is centre-cropped to a square and resized (antialiased bilinear);
without it all images must share one square size. Channels: without ``channels`` the images must
be all grayscale or all RGB.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from ssl_ft.data.arrays import SPLITS, SourceArrays
from ssl_ft.data.convert import channel_stats, convert_channels, max_value_of, resize_images
from ssl_ft.data.npz import file_sha256
from ssl_ft.data.subsample import check_split_fractions, split_stratified
from ssl_ft.errors import UserError

__all__ = ["IMAGE_SUFFIXES", "SPLIT_FOLDER_NAMES", "load_folder", "read_image"]

_PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_DICOM_SUFFIXES = (".dcm", ".dicom")
_NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: File suffixes read as images (plus extension-less DICOM files).
IMAGE_SUFFIXES: tuple[str, ...] = _PIL_SUFFIXES + _DICOM_SUFFIXES + _NIFTI_SUFFIXES
#: Accepted split folder names (lower-cased) and the split they stand for.
SPLIT_FOLDER_NAMES: dict[str, str] = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}  # fmt: skip
_NO_SUFFIX_CHECK = (".txt", ".csv", ".json", ".md", ".yaml", ".yml", ".xml", ".py", ".npz", ".npy")


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _kind(path: Path) -> str | None:
    """``"pil"``, ``"dicom"``, ``"nifti"`` or ``None`` (not an image)."""
    name = path.name.lower()
    if name.endswith(_NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(_PIL_SUFFIXES):
        return "pil"
    if name.endswith(_DICOM_SUFFIXES):
        return "dicom"
    if name.endswith(_NO_SUFFIX_CHECK):
        return None
    try:
        return "dicom" if pydicom.misc.is_dicom(str(path)) else None
    except OSError:
        return None


def _images_below(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder`` (hidden entries skipped), sorted by path."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
        found.extend(Path(dirpath, f) for f in filenames if not _hidden(f))
    return sorted(p for p in found if _kind(p) is not None)


def _subfolders(folder: Path) -> list[Path]:
    loose = [p for p in folder.iterdir() if p.is_file() and not _hidden(p.name) and _kind(p)]
    if loose:
        raise UserError(
            f"image file {sorted(loose)[0]} lies outside a class folder; expected "
            f"<folder>/<class>/<image> or <folder>/<split>/<class>/<image>"
        )
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _hidden(p.name))


def _scan(root: Path) -> dict[str, dict[str, list[Path]]]:
    """``{split or "all": {class name: [image paths]}}`` for the layouts in the module docstring."""
    dirs = _subfolders(root)
    if not dirs:
        raise UserError(
            f"{root}: no class sub-folders (expected {root}/<class>/<image> or "
            f"{root}/train/<class>/<image>)"
        )
    splits = {d: SPLIT_FOLDER_NAMES.get(d.name.lower()) for d in dirs}
    if not any(splits.values()):
        return {"all": {d.name: _images_below(d) for d in dirs}}
    if not all(splits.values()):
        others = ", ".join(d.name for d, s in splits.items() if s is None)
        raise UserError(
            f"{root}: mixes split folders with other folders ({others}); use either "
            f"<folder>/<class>/ or <folder>/<train|val|test>/<class>/"
        )
    layout: dict[str, dict[str, list[Path]]] = {}
    for d, split in splits.items():
        if split in layout:
            raise UserError(f"{root}: more than one folder for the {split} split ({d.name})")
        layout[split] = {c.name: _images_below(c) for c in _subfolders(d)}
    if "train" not in layout:
        raise UserError(f"{root}: has {', '.join(d.name for d in dirs)} but no train folder")
    return layout


def _pil_mode(img: Image.Image) -> Image.Image:
    """Bring a PIL image to ``L``, ``RGB``, 16/32-bit integer or float mode."""
    img.load()
    if img.mode in ("L", "RGB", "I", "F") or img.mode.startswith("I;16"):
        return img
    if img.mode in ("1", "LA", "La"):
        return img.convert("L")
    if img.mode in ("P", "PA"):
        return img.convert("RGBA").convert("RGB")
    return img.convert("RGB")


def _rescale_u16(array: np.ndarray) -> np.ndarray:
    """Linear per-image min..max -> 0..65535 (non-finite values count as the minimum)."""
    x = np.asarray(array, dtype=np.float64)
    finite = np.isfinite(x)
    if not finite.any():
        return np.zeros(x.shape, dtype=np.uint16)
    lo, hi = float(x[finite].min()), float(x[finite].max())
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.uint16)
    x = np.where(finite, x, lo)
    return np.rint((x - lo) / (hi - lo) * 65535.0).astype(np.uint16)


class _Readers:
    """One MONAI reader per format, created once per folder load."""

    def __init__(self) -> None:
        from monai.data import NibabelReader, PILReader, PydicomReader  # heavy: import on use

        self.pil = PILReader(converter=_pil_mode, reverse_indexing=False)
        self.dicom = PydicomReader(swap_ij=False)
        self.nifti = NibabelReader()

    def decode(self, path: Path, kind: str) -> np.ndarray:
        """``(H, W)`` or ``(H, W, 3)`` ``uint8`` / ``uint16`` array (see the intensity rules)."""
        if kind == "pil":
            arr = np.asarray(self.pil.get_data(self.pil.read(str(path)))[0])
            if arr.dtype == np.uint8:
                return arr
            if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:
                return arr.astype(np.uint16)
            if arr.dtype.kind in "iu" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
                return arr.astype(np.uint16)
            return _rescale_u16(arr)
        if kind == "dicom":
            ds = self.dicom.read(str(path))
            with warnings.catch_warnings():  # affine tags are irrelevant for 2-D classification
                warnings.simplefilter("ignore")
                arr = np.asarray(self.dicom.get_data(ds)[0])
            frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
            samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
            if frames == 1 and samples == 1 and arr.ndim == 3 and arr.shape[0] == 1:
                arr = arr[0]
            if frames > 1 or arr.ndim != (3 if samples > 1 else 2):
                raise UserError(
                    f"{path}: DICOM pixel data of shape {arr.shape} ({frames} frames) is not a "
                    f"2-D image; only single-frame DICOM is supported"
                )
            out = _rescale_u16(arr)
            if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
                out = np.uint16(65535) - out
            return out
        arr = np.asarray(self.nifti.get_data(self.nifti.read(str(path)))[0])
        while arr.ndim > 2 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim != 2:
            raise UserError(
                f"{path}: NIfTI image of shape {arr.shape} is a 3-D volume; only 2-D images "
                f"(H, W) or (H, W, 1) are supported"
            )
        return _rescale_u16(arr)


def read_image(
    path: str | Path, *, size: int | None = None, readers: _Readers | None = None
) -> np.ndarray:
    """Read one image file as a ``(C, H, W)`` ``uint8``/``uint16`` array (C = 1 or 3).

    Applies the intensity and grayscale rules of the module docstring and, with ``size``, the
    centre crop and resize. Any decoding failure is a :class:`UserError` naming the file.
    """
    path = Path(path)
    kind = _kind(path)
    if kind is None:
        raise UserError(f"{path}: not an image file (suffixes: {', '.join(IMAGE_SUFFIXES)})")
    readers = readers or _Readers()
    try:
        arr = readers.decode(path, kind)
    except UserError:
        raise
    except Exception as exc:  # decoders raise many types (OSError, InvalidDicomError, ...)
        raise UserError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc
    if arr.ndim == 3 and arr.shape[-1] == 3:
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            arr = arr[..., 0]
        else:
            arr = arr.transpose(2, 0, 1)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise UserError(f"{path}: decoded to shape {arr.shape}; expected a grayscale or RGB image")
    arr = np.ascontiguousarray(arr)
    if size is not None:
        arr = resize_images(arr[None], size)[0]
    return arr


def _check_uniform(
    records: list[tuple[Path, np.ndarray, tuple[int, int]]], size: int | None, channels: int | None
) -> None:
    """Raise :class:`UserError` for mixed sizes (without ``size``) or mixed channels (without
    ``channels``), naming two files."""
    first_path, first, first_hw = records[0]
    for path, arr, hw in records[1:]:
        if size is None and hw != first_hw:
            raise UserError(
                f"images differ in size ({first_path} is {first_hw[0]}x{first_hw[1]}, {path} is "
                f"{hw[0]}x{hw[1]}); pass a size to centre-crop and resize them all"
            )
        if channels is None and arr.shape[0] != first.shape[0]:
            gray, rgb = (first_path, path) if first.shape[0] == 1 else (path, first_path)
            raise UserError(
                f"images mix grayscale ({gray}) and RGB ({rgb}); pass channels=1 or channels=3"
            )
    if size is None and first_hw[0] != first_hw[1]:
        raise UserError(
            f"images are {first_hw[0]}x{first_hw[1]}, not square ({first_path}); pass a size"
        )


def load_folder(
    root: str | Path,
    *,
    size: int | None = None,
    channels: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> tuple[SourceArrays, tuple[str, ...]]:
    """Read a folder of images into full splits; return them and the class names.

    See the module docstring for layouts, formats, intensity, size and channel rules.
    """
    check_split_fractions(val_fraction, test_fraction)
    root = Path(root).resolve()
    if not root.is_dir():
        raise UserError(f"no such folder: {root}")
    layout = _scan(root)
    pool = layout.get("train", layout.get("all", {}))
    for name, files in pool.items():
        if not files:
            raise UserError(f"class folder {root / name} holds no images")
    classes = tuple(sorted(pool))
    index = {name: i for i, name in enumerate(classes)}
    for split, groups in layout.items():
        for name, files in groups.items():
            if files and name not in index:
                raise UserError(
                    f"class '{name}' has images in {split} but none in train "
                    f"(train classes: {', '.join(classes)})"
                )
    layout = {s: g for s, g in layout.items() if s in ("all", "train") or any(g.values())}
    readers = _Readers()
    records: dict[str, list[tuple[Path, np.ndarray, tuple[int, int]]]] = {}
    labels: dict[str, np.ndarray] = {}
    for split, groups in layout.items():
        files = sorted((p, index[name]) for name, paths in groups.items() for p in paths)
        records[split] = []
        for path, _ in files:
            arr = read_image(path, readers=readers)
            native = (arr.shape[1], arr.shape[2])
            if size is not None:
                arr = resize_images(arr[None], size)[0]
            records[split].append((path, arr, native))
        labels[split] = np.asarray([label for _, label in files], dtype=np.int64)
    everything = [r for split in layout for r in records[split]]
    _check_uniform(everything, size, channels)
    wide = any(arr.dtype == np.uint16 for _, arr, _ in everything)
    images: dict[str, np.ndarray] = {}
    for split in layout:
        arrs = [arr for _, arr, _ in records[split]]
        if wide:
            arrs = [
                a.astype(np.uint16) * np.uint16(257) if a.dtype == np.uint8 else a for a in arrs
            ]
        if channels is not None:
            arrs = [convert_channels(a[None], channels)[0] for a in arrs]
        images[split] = np.stack(arrs)
    _carve(images, labels, val_fraction, test_fraction)
    max_value = max_value_of(images["train"].dtype)
    mean, std = channel_stats(images["train"], max_value)
    digest = hashlib.sha256()
    for rel, path in sorted((r[0].relative_to(root).as_posix(), r[0]) for r in everything):
        digest.update(f"{rel}\0{file_sha256(path)}\n".encode())
    source = SourceArrays(
        images=images, labels=labels, max_value=max_value, mean=mean, std=std,
        fingerprint=digest.hexdigest(),
    )  # fmt: skip
    return source, classes


def _carve(
    images: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    val_fraction: float,
    test_fraction: float,
) -> None:
    """Fill missing splits in place from the pool (``"all"``) or from train (seed 0)."""
    pool = "all" if "all" in images else "train"
    want_val = 0.0 if "val" in images else val_fraction
    want_test = 0.0 if "test" in images else test_fraction
    parts = split_stratified(labels[pool], val_fraction=want_val, test_fraction=want_test, seed=0)
    pool_images, pool_labels = images.pop(pool), labels.pop(pool)
    for split in SPLITS:
        if split == "train" or split not in images:
            images[split] = np.ascontiguousarray(pool_images[parts[split]])
            labels[split] = pool_labels[parts[split]]
    order = {s: i for i, s in enumerate(SPLITS)}
    for d in (images, labels):
        items = sorted(d.items(), key=lambda kv: order[kv[0]])
        d.clear()
        d.update(items)
