"""Tests for folders of images (ssl_ft.data.folder through load_data): PNG 8/16 bit, JPEG, DICOM,
NIfTI, layouts with and without split folders, sizes, channels and error messages.

All images are tiny and written by the tests themselves."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from ssl_ft.data import load_data, split_stratified
from ssl_ft.errors import UserError

SIDE = 8


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _minmax_u16(arr: np.ndarray) -> np.ndarray:
    x = arr.astype(np.float64)
    return np.rint((x - x.min()) / (x.max() - x.min()) * 65535).astype(np.uint16)


def _write_png(path: Path, arr: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.dtype == np.uint16:
        Image.fromarray(arr).save(path)  # mode I;16
        assert Image.open(path).mode == "I;16"
    else:
        Image.fromarray(arr).save(path)
    return arr


def _write_dicom(path: Path, arr: np.ndarray, photometric: str = "MONOCHROME2") -> np.ndarray:
    """A minimal valid single-frame 16-bit DICOM (secondary capture)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality = "OT"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = arr.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return arr


def _write_nifti(path: Path, arr: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
    return arr


def _gray8(seed: int, shape: tuple[int, int] = (SIDE, SIDE)) -> np.ndarray:
    return _rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _class_folder(
    root: Path, counts: dict[str, int], ext: str = ".png", start: int = 0
) -> dict[bytes, int]:
    """``root/<class>/img<i>.png`` with unique random 8-bit images; returns {bytes: label}."""
    made: dict[bytes, int] = {}
    for label, (name, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            arr = _gray8(start + 1000 * label + i)
            _write_png(root / name / f"img{i:03d}{ext}", arr)
            made[arr.tobytes()] = label
    return made


def _check_against(
    splits, made: dict[bytes, int], split_names: Iterable[str] = ("train", "val", "test")
) -> None:
    """Every output image is one of the written ones, with its label, and each appears once."""
    seen: list[bytes] = []
    for split in split_names:
        for img, label in zip(splits.images[split], splits.labels[split], strict=True):
            key = img[0].tobytes()
            assert made[key] == label
            seen.append(key)
    assert sorted(seen) == sorted(made)


# --- formats ------------------------------------------------------------------------------------


def test_16bit_png_keeps_values(tmp_path: Path) -> None:
    made = {}
    for label, name in enumerate(("a", "b")):
        for i in range(5):
            arr = _rng(10 * label + i).integers(300, 65535, (SIDE, SIDE), dtype=np.uint16)
            made[_write_png(tmp_path / name / f"{i}.png", arr).tobytes()] = label
    splits = load_data(tmp_path)
    assert splits.images["train"].dtype == np.uint16 and splits.info.max_value == 65535
    assert splits.info.kind == "folder" and splits.info.name == tmp_path.name
    assert splits.info.label_names == ("a", "b") and splits.info.task == "binary-class"
    _check_against(splits, made)


def test_png_orientation_matches_pil(tmp_path: Path) -> None:
    arr = _gray8(1, (6, 10))  # not square, not symmetric
    for name in ("x", "y"):
        _write_png(tmp_path / name / "wide.png", arr)
    with pytest.raises(UserError, match=r"6x10, not square.*size"):
        load_data(tmp_path, val_fraction=0.0, test_fraction=0.0)
    splits = load_data(tmp_path, size=6, val_fraction=0.0, test_fraction=0.0)
    expected = np.asarray(Image.open(tmp_path / "x" / "wide.png"))[:, 2:8]  # centre crop, no resize
    np.testing.assert_array_equal(splits.images["train"][0, 0], expected)


def test_rgb_png_and_jpeg(tmp_path: Path) -> None:
    rgb = _rng(0).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    (tmp_path / "c0").mkdir()
    (tmp_path / "c1").mkdir()
    Image.fromarray(rgb).save(tmp_path / "c0" / "a.png")
    Image.fromarray(rgb[::-1].copy()).save(tmp_path / "c1" / "b.jpg", quality=95)
    splits = load_data(tmp_path, val_fraction=0.0, test_fraction=0.0)
    assert splits.info.n_channels == 3 and splits.images["train"].dtype == np.uint8
    np.testing.assert_array_equal(splits.images["train"][0].transpose(1, 2, 0), rgb)
    jpeg = np.asarray(Image.open(tmp_path / "c1" / "b.jpg"))
    np.testing.assert_array_equal(splits.images["train"][1].transpose(1, 2, 0), jpeg)
    assert list(splits.labels["train"]) == [0, 1]


def test_rgb_with_identical_channels_is_grayscale(tmp_path: Path) -> None:
    for i, name in enumerate(("n", "p")):
        gray = _gray8(i)
        (tmp_path / name).mkdir()
        Image.fromarray(gray).convert("RGB").save(tmp_path / name / "x.jpeg", quality=90)
        Image.fromarray(gray).convert("RGB").save(tmp_path / name / "y.png")
    splits = load_data(tmp_path, val_fraction=0.0, test_fraction=0.0)
    assert splits.info.n_channels == 1
    np.testing.assert_array_equal(splits.images["train"][3, 0], _gray8(1))  # p/y.png


def test_mixed_gray_and_rgb_needs_channels(tmp_path: Path) -> None:
    _write_png(tmp_path / "a" / "gray.png", _gray8(0))
    Image.fromarray(_rng(1).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)).save(
        tmp_path / "a" / "rgb.png"
    )
    _write_png(tmp_path / "b" / "gray.png", _gray8(2))
    with pytest.raises(UserError, match=r"gray\.png.*rgb\.png.*channels=1 or channels=3"):
        load_data(tmp_path, val_fraction=0.0, test_fraction=0.0)
    three = load_data(tmp_path, channels=3, val_fraction=0.0, test_fraction=0.0)
    assert three.info.n_channels == 3
    np.testing.assert_array_equal(three.images["train"][0, 2], _gray8(0))
    one = load_data(tmp_path, channels=1, val_fraction=0.0, test_fraction=0.0)
    assert one.images["train"].shape == (3, 1, SIDE, SIDE)


def test_palette_and_alpha_modes(tmp_path: Path) -> None:
    gray = _gray8(4)
    (tmp_path / "a").mkdir()
    Image.fromarray(gray).convert("P").save(tmp_path / "a" / "p.png")
    Image.fromarray(gray).convert("LA").save(tmp_path / "a" / "la.png")
    _write_png(tmp_path / "b" / "l.png", gray)
    splits = load_data(tmp_path, val_fraction=0.0, test_fraction=0.0)
    assert splits.info.n_channels == 1
    for img in splits.images["train"]:
        np.testing.assert_array_equal(img[0], gray)


def test_dicom_and_nifti(tmp_path: Path) -> None:
    made: dict[bytes, int] = {}
    for i in range(3):
        arr = _rng(i).integers(0, 4000, (SIDE, SIDE), dtype=np.uint16)
        made[_minmax_u16(_write_dicom(tmp_path / "ct" / f"s{i}.dcm", arr)).tobytes()] = 0
    arr = _rng(7).integers(0, 4000, (SIDE, SIDE), dtype=np.uint16)
    made[_minmax_u16(_write_dicom(tmp_path / "ct" / "IM0001", arr)).tobytes()] = 0  # no extension
    inverted = _rng(8).integers(0, 4000, (SIDE, SIDE), dtype=np.uint16)
    _write_dicom(tmp_path / "ct" / "mono1.dcm", inverted, photometric="MONOCHROME1")
    made[(65535 - _minmax_u16(inverted)).tobytes()] = 0
    for i in range(3):
        vol = _rng(20 + i).normal(size=(SIDE, SIDE)).astype(np.float32)
        made[_minmax_u16(_write_nifti(tmp_path / "mr" / f"v{i}.nii.gz", vol)).tobytes()] = 1
    vol = _rng(30).integers(-100, 100, (SIDE, SIDE, 1)).astype(np.int16)
    made[_minmax_u16(_write_nifti(tmp_path / "mr" / "w.nii", vol)[..., 0]).tobytes()] = 1
    (tmp_path / "mr" / "notes.txt").write_text("not an image")
    (tmp_path / "mr" / ".DS_Store").write_bytes(b"\x00garbage")
    splits = load_data(tmp_path, val_fraction=0.2, test_fraction=0.2)
    assert splits.info.max_value == 65535 and splits.info.label_names == ("ct", "mr")
    _check_against(splits, made)


def test_8bit_png_with_dicom_is_scaled_by_257(tmp_path: Path) -> None:
    png = _write_png(tmp_path / "a" / "x.png", _gray8(3))
    _write_dicom(tmp_path / "b" / "y.dcm", _rng(0).integers(0, 999, (SIDE, SIDE), dtype=np.uint16))
    splits = load_data(tmp_path, val_fraction=0.0, test_fraction=0.0)
    np.testing.assert_array_equal(splits.images["train"][0, 0], png.astype(np.uint16) * 257)


def test_3d_nifti_and_constant_image(tmp_path: Path) -> None:
    _write_nifti(tmp_path / "a" / "flat.nii", np.full((SIDE, SIDE), 5.0, np.float32))
    _write_nifti(tmp_path / "b" / "vol.nii.gz", np.zeros((SIDE, SIDE, 4), np.float32))
    with pytest.raises(UserError, match=r"vol\.nii\.gz.*3-D"):
        load_data(tmp_path, val_fraction=0.0, test_fraction=0.0)
    (tmp_path / "b" / "vol.nii.gz").unlink()
    _write_nifti(tmp_path / "b" / "ok.nii.gz", np.eye(SIDE, dtype=np.float32))
    splits = load_data(tmp_path, val_fraction=0.0, test_fraction=0.0)
    assert not splits.images["train"][0].any()  # a constant image maps to 0


def test_corrupt_png_names_the_file(tmp_path: Path) -> None:
    _class_folder(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "b" / "broken.png").write_bytes(b"this is not a png" * 10)
    with pytest.raises(UserError, match=r"cannot read image .*b/broken\.png"):
        load_data(tmp_path)


# --- layouts ------------------------------------------------------------------------------------


def test_seeded_stratified_split_without_split_folders(tmp_path: Path) -> None:
    counts = {"benign": 20, "malignant": 11, "normal": 7}
    made = _class_folder(tmp_path, counts)
    a = load_data(tmp_path, seed=0)
    b = load_data(tmp_path, seed=123, label_fraction=1.0)  # the split ignores the run seed
    _check_against(a, made)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(a.images[split], b.images[split])
    for label, n in enumerate(counts.values()):
        assert (a.labels["val"] == label).sum() == round(0.1 * n)
        assert (a.labels["test"] == label).sum() == round(0.2 * n)
        assert (a.labels["train"] == label).sum() == n - round(0.1 * n) - round(0.2 * n)
    c = load_data(tmp_path, val_fraction=0.25, test_fraction=0.0)
    assert len(c.labels["test"]) == 0 and len(c.labels["val"]) == 5 + 3 + 2
    assert a.info.fingerprint == b.info.fingerprint


def test_split_stratified_is_a_partition() -> None:
    labels = np.repeat([0, 1, 2], [50, 30, 3])
    parts = split_stratified(labels, val_fraction=0.1, test_fraction=0.2, seed=0)
    joined = np.concatenate(list(parts.values()))
    assert sorted(joined) == list(range(len(labels)))
    assert set(labels[parts["train"]]) == {0, 1, 2}
    again = split_stratified(labels, val_fraction=0.1, test_fraction=0.2, seed=0)
    for k in parts:
        np.testing.assert_array_equal(parts[k], again[k])
    rng = np.random.RandomState(0)  # the documented rule for class 0
    perm = np.flatnonzero(labels == 0)[rng.permutation(50)]
    np.testing.assert_array_equal(parts["val"][labels[parts["val"]] == 0], np.sort(perm[:5]))


def test_split_folders(tmp_path: Path) -> None:
    made_train = _class_folder(tmp_path / "train", {"x": 4, "y": 3}, start=0)
    made_val = _class_folder(tmp_path / "Validation", {"x": 2}, start=100)  # class y missing: fine
    made_test = _class_folder(tmp_path / "test", {"x": 2, "y": 2}, start=200)
    splits = load_data(tmp_path)
    assert [len(splits.labels[s]) for s in ("train", "val", "test")] == [7, 2, 4]
    _check_against(splits, made_train, ["train"])
    _check_against(splits, made_val, ["val"])
    _check_against(splits, made_test, ["test"])
    assert splits.info.label_names == ("x", "y")


def test_split_folders_carve_missing_val_and_test(tmp_path: Path) -> None:
    made = _class_folder(tmp_path / "train", {"x": 10, "y": 10})
    made_test = _class_folder(tmp_path / "test", {"x": 3, "y": 3}, start=500)
    splits = load_data(tmp_path)
    assert [len(splits.labels[s]) for s in ("train", "val", "test")] == [18, 2, 6]
    _check_against(splits, made, ["train", "val"])
    _check_against(splits, made_test, ["test"])
    for p in (tmp_path / "test").rglob("*.png"):
        p.unlink()  # only train left (an empty test folder counts as absent): carve both
    only = load_data(tmp_path)
    assert [len(only.labels[s]) for s in ("train", "val", "test")] == [14, 2, 4]
    _check_against(only, made)


def test_class_only_in_test_is_an_error(tmp_path: Path) -> None:
    _class_folder(tmp_path / "train", {"x": 3, "y": 3})
    _class_folder(tmp_path / "test", {"x": 1, "z": 1})
    with pytest.raises(UserError, match="'z'.*none in train"):
        load_data(tmp_path)


def test_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file or folder"):
        load_data(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no class sub-folders"):
        load_data(tmp_path / "empty")
    _class_folder(tmp_path / "mixed" / "train", {"x": 2})
    _class_folder(tmp_path / "mixed", {"cats": 2})
    with pytest.raises(UserError, match="mixes split folders"):
        load_data(tmp_path / "mixed")
    _class_folder(tmp_path / "hollow", {"x": 2})
    (tmp_path / "hollow" / "y").mkdir()
    with pytest.raises(UserError, match="holds no images"):
        load_data(tmp_path / "hollow")
    _class_folder(tmp_path / "loose", {"x": 2})
    _write_png(tmp_path / "loose" / "stray.png", _gray8(0))
    with pytest.raises(UserError, match="stray.png.*outside a class folder"):
        load_data(tmp_path / "loose")


# --- sizes and fingerprint ----------------------------------------------------------------------


def test_mixed_sizes_need_a_size(tmp_path: Path) -> None:
    _write_png(tmp_path / "a" / "small.png", _gray8(0, (8, 8)))
    _write_png(tmp_path / "b" / "large.png", np.full((12, 12), 200, np.uint8))
    with pytest.raises(UserError, match=r"small\.png is 8x8.*large\.png is 12x12.*pass a size"):
        load_data(tmp_path, val_fraction=0.0, test_fraction=0.0)
    splits = load_data(tmp_path, size=10, val_fraction=0.0, test_fraction=0.0)
    assert splits.images["train"].shape == (2, 1, 10, 10) and splits.info.image_size == 10
    assert np.all(splits.images["train"][1] == 200)  # a constant image stays constant


def test_fingerprint_tracks_file_contents(tmp_path: Path) -> None:
    _class_folder(tmp_path, {"a": 3, "b": 3})
    first = load_data(tmp_path).info.fingerprint
    assert load_data(tmp_path, size=4).info.fingerprint == first
    _write_png(tmp_path / "a" / "img000.png", _gray8(999))
    assert load_data(tmp_path).info.fingerprint != first
