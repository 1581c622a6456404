"""Tests for ssl_ft.data with .npz sources: the shared offline datasets, MedMNIST names, paths,
subsets, the dataset wrapper, the data root and the (mocked) MedMNIST download path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import medmnist
import numpy as np
import pytest
import torch

from ssl_ft.data import (
    DEFAULT_DATA_ROOT,
    ImageArrayDataset,
    list_datasets,
    load_data,
    resolve_data_root,
    subsample,
)
from ssl_ft.data import npz as npz_module
from ssl_ft.data.medmnist_registry import medmnist_entry, medmnist_task, native_size_candidates
from ssl_ft.errors import UserError

# The reference: the summary table of ../shared/data/README.md.
# name -> (kind, (H, W[, C]), {split: per-class counts})
README_TABLE: dict[str, tuple[str, tuple[int, ...], dict[str, tuple[int, ...]]]] = {
    "pneumoniamnist": ("medmnist", (28, 28), {
        "train": (1214, 3494), "val": (135, 389), "test": (234, 390)}),
    "breastmnist": ("medmnist", (28, 28), {
        "train": (147, 399), "val": (21, 57), "test": (42, 114)}),
    "brain_tumor_mri_sartaj_64": ("npz", (64, 64), {
        "train": (720, 637, 204, 716), "val": (82, 72, 28, 82), "test": (82, 107, 81, 35)}),
    "ham10000_dermoscopy_unique_lesion_64": ("npz", (64, 64, 3), {
        "train": (159, 229, 509, 51, 430, 3782, 68), "val": (23, 33, 73, 7, 61, 540, 10),
        "test": (46, 65, 145, 15, 123, 1081, 20)}),
    "busi_breast_ultrasound_64": ("npz", (64, 64), {
        "train": (305, 147, 93), "val": (44, 19, 13), "test": (87, 42, 27)}),
    "busi_breast_ultrasound_128": ("npz", (128, 128), {
        "train": (305, 147, 93), "val": (44, 19, 13), "test": (87, 42, 27)}),
    "chest_xray_kermany_64": ("npz", (64, 64), {
        "train": (938, 2689), "val": (134, 387), "test": (268, 774)}),
    "lc25000_lung_colon_histology_64": ("npz", (64, 64, 3), {
        "train": (690, 696, 688, 687, 690), "val": (98, 100, 100, 100, 99),
        "test": (197, 200, 200, 200, 200)}),
}  # fmt: skip
SPLIT_SIZES = {"pneumoniamnist": (4708, 524, 624), "breastmnist": (546, 78, 156)}


def _sha256sums(root: Path) -> dict[str, str]:
    lines = (root / "SHA256SUMS").read_text().splitlines()
    return {name.strip(): digest for digest, name in (line.split(maxsplit=1) for line in lines)}


def _write_npz(path: Path, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> Path:
    arrays = {f"{s}_images": images[s] for s in images} | {f"{s}_labels": labels[s] for s in labels}
    np.savez(path, **arrays)
    return path


def _tiny_npz(path: Path, *, rgb: bool = False, n: int = 6, side: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    shape = (n, side, side, 3) if rgb else (n, side, side)
    images = {s: rng.integers(0, 256, shape, dtype=np.uint8) for s in ("train", "val", "test")}
    labels = {s: (np.arange(n) % 2).astype(np.uint8).reshape(-1, 1) for s in images}
    return _write_npz(path, images, labels)


# --- the shared datasets ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(README_TABLE))
def test_shared_npz_matches_readme_table(data_root: Path, name: str) -> None:
    kind, shape, counts = README_TABLE[name]
    splits = load_data(name, data_root=data_root)
    info = splits.info
    n_classes = len(counts["train"])
    assert info.kind == kind and info.name == name
    assert info.source == str((data_root / f"{name}.npz").resolve())
    assert info.num_classes == n_classes == len(info.label_names)
    assert info.task == ("binary-class" if n_classes == 2 else "multi-class")
    assert info.n_channels == (3 if len(shape) == 3 else 1)
    assert info.image_size == shape[0]
    assert info.max_value == 255
    assert len(info.mean) == len(info.std) == info.n_channels
    assert all(0 < m < 1 for m in info.mean) and all(0 < s < 1 for s in info.std)
    assert info.fingerprint == _sha256sums(data_root)[f"{name}.npz"]
    for split, expected in counts.items():
        images, labels = splits.images[split], splits.labels[split]
        assert images.shape == (sum(expected), info.n_channels, shape[0], shape[1])
        assert images.dtype == np.uint8 and images.flags.c_contiguous
        assert labels.dtype == np.int64 and labels.shape == (sum(expected),)
        assert labels.min() >= 0 and labels.max() < n_classes
        assert tuple(np.bincount(labels, minlength=n_classes)) == expected
        np.testing.assert_array_equal(splits.indices[split], np.arange(sum(expected)))
    if name in SPLIT_SIZES:
        assert tuple(len(splits.labels[s]) for s in ("train", "val", "test")) == SPLIT_SIZES[name]


def test_label_names_come_from_medmnist_info_and_manifest(data_root: Path) -> None:
    assert load_data("pneumoniamnist", data_root=data_root).info.label_names == (
        "normal",
        "pneumonia",
    )
    manifest = json.loads((data_root / "manifest.json").read_text())
    busi = load_data("busi_breast_ultrasound_64", data_root=data_root).info
    assert busi.label_names == tuple(manifest["datasets"]["busi_breast_ultrasound"]["labels"])
    assert busi.label_names == ("benign", "malignant", "normal")


def test_list_datasets(data_root: Path, tmp_path: Path) -> None:
    assert list_datasets(data_root) == sorted(README_TABLE)
    assert list_datasets(tmp_path / "missing") == []


def test_medmnist_name_is_case_insensitive(data_root: Path) -> None:
    assert load_data("BreastMNIST", data_root=data_root).info.name == "breastmnist"


def test_npz_cache_avoids_rereading_and_hands_out_copies(data_root: Path) -> None:
    first = load_data("breastmnist", data_root=data_root)
    before = npz_module._read_raw.cache_info()
    first.images["train"][:] = 0  # a caller scribbling on its arrays must not corrupt the cache
    second = load_data("breastmnist", data_root=data_root)
    after = npz_module._read_raw.cache_info()
    assert after.misses == before.misses
    assert second.images["train"].any()
    assert second.images["train"].flags.writeable


# --- .npz paths -----------------------------------------------------------------------------------


def test_path_to_npz_reads_manifest_beside_it(data_root: Path) -> None:
    path = data_root / "chest_xray_kermany_64.npz"
    for data in (path, str(path)):
        info = load_data(data).info
        assert (info.kind, info.name, info.label_names) == (
            "npz",
            "chest_xray_kermany_64",
            ("NORMAL", "PNEUMONIA"),
        )


def test_npz_without_manifest_gets_numbered_labels(data_root: Path, tmp_path: Path) -> None:
    shutil.copy(data_root / "brain_tumor_mri_sartaj_64.npz", tmp_path / "mri.npz")
    info = load_data(tmp_path / "mri.npz").info
    assert info.label_names == ("0", "1", "2", "3") and info.task == "multi-class"
    shutil.copy(data_root / "breastmnist.npz", tmp_path / "breastmnist_64.npz")  # MedMNIST stem
    assert load_data(tmp_path / "breastmnist_64.npz").info.label_names[0] == "malignant"


def test_npz_missing_key_names_the_key(tmp_path: Path) -> None:
    path = _tiny_npz(tmp_path / "t.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files if k != "val_labels"}
    np.savez(tmp_path / "broken.npz", **arrays)
    with pytest.raises(UserError, match=r"broken\.npz.*'val_labels'"):
        load_data(tmp_path / "broken.npz")


def test_npz_bad_contents(tmp_path: Path) -> None:
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file")
    with pytest.raises(UserError, match="garbage.npz"):
        load_data(tmp_path / "garbage.npz")
    rng = np.random.default_rng(0)
    images = {s: rng.integers(0, 255, (4, 8, 8), dtype=np.uint8) for s in ("train", "val", "test")}
    multi = {s: np.zeros((4, 3), np.uint8) for s in images}
    with pytest.raises(UserError, match="multi-label"):
        load_data(_write_npz(tmp_path / "multi.npz", images, multi))
    floats = {s: v.astype(np.float32) for s, v in images.items()}
    good_labels = {s: np.zeros((4, 1), np.uint8) for s in images}
    with pytest.raises(UserError, match="dtype float32"):
        load_data(_write_npz(tmp_path / "float.npz", floats, good_labels))


def test_label_out_of_manifest_range_names_the_file(tmp_path: Path) -> None:
    path = _tiny_npz(tmp_path / "two.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["test_labels"] = arrays["test_labels"].copy()
    arrays["test_labels"][0] = 2
    np.savez(path, **arrays)
    manifest = {
        "datasets": {"two": {"files": ["two.npz"], "labels": ["a", "b"], "task": "binary-class"}}
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"two\.npz.*test labels reach 2"):
        load_data(path)


# --- size and channels --------------------------------------------------------------------------


def test_size_and_channels_conversion(data_root: Path, tmp_path: Path) -> None:
    splits = load_data("breastmnist", data_root=data_root, size=32, channels=3)
    assert splits.images["val"].shape == (78, 3, 32, 32)
    assert (splits.info.image_size, splits.info.n_channels) == (32, 3)
    np.testing.assert_array_equal(splits.images["val"][:, 0], splits.images["val"][:, 2])
    small = load_data("breastmnist", data_root=data_root, size=14)
    assert small.images["train"].shape[1:] == (1, 14, 14)

    rgb = _tiny_npz(tmp_path / "rgb.npz", rgb=True)
    gray = load_data(rgb, channels=1)
    with np.load(rgb) as z:
        src = z["train_images"].astype(np.float64)
    luma = np.clip(np.rint(src @ np.array([0.299, 0.587, 0.114])), 0, 255)
    np.testing.assert_array_equal(gray.images["train"][:, 0], luma.astype(np.uint8))
    assert gray.info.n_channels == 1

    const = {s: np.full((2, 10, 10), 77, np.uint8) for s in ("train", "val", "test")}
    labels = {s: np.array([[0], [1]], np.uint8) for s in const}
    resized = load_data(_write_npz(tmp_path / "const.npz", const, labels), size=23)
    assert resized.images["test"].shape == (2, 1, 23, 23) and np.all(resized.images["test"] == 77)


@pytest.mark.parametrize("channels", [0, 2, 4, "3", True])
def test_bad_channels(data_root: Path, channels: object) -> None:
    with pytest.raises(UserError, match="channels"):
        load_data("breastmnist", data_root=data_root, channels=channels)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"size": 0}, "size"),
        ({"label_fraction": 0.0}, "label_fraction"),
        ({"label_fraction": 10}, "label_fraction"),
        ({"limit": 0}, "limit"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "val_fraction"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_bad_arguments(data_root: Path, kwargs: dict, word: str) -> None:
    with pytest.raises(UserError, match=word):
        load_data("breastmnist", data_root=data_root, **kwargs)


# --- names, roots, errors -----------------------------------------------------------------------


def test_unknown_name_and_missing_paths(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="'no_such_dataset'"):
        load_data("no_such_dataset", data_root=data_root)
    with pytest.raises(UserError, match="missing_folder"):
        load_data(tmp_path / "missing_folder")
    with pytest.raises(UserError, match="missing.npz"):
        load_data(str(tmp_path / "missing.npz"))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="notes.txt"):
        load_data(tmp_path / "notes.txt")


@pytest.mark.parametrize(("name", "word"), [("chestmnist", "multi-label"), ("organmnist3d", "3-D")])
def test_unsupported_medmnist(data_root: Path, name: str, word: str) -> None:
    with pytest.raises(UserError, match=word):
        load_data(name, data_root=data_root)


def test_medmnist_registry_rules(data_root: Path) -> None:
    key, info = medmnist_entry("retinamnist")
    assert medmnist_task(key, info) == "multi-class"  # ordinal regression counts as multi-class
    assert native_size_candidates(None) == [28] and native_size_candidates(64) == [64]
    assert native_size_candidates(32) == [64, 128, 224, 28]
    with pytest.raises(UserError, match=r"breastmnist_128\.npz.*sizes present there: 28.*download"):
        load_data("breastmnist", data_root=data_root, size=128)


def test_resolve_data_root_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SSL_FT_DATA", raising=False)
    assert resolve_data_root() == Path(DEFAULT_DATA_ROOT).expanduser().absolute()
    assert DEFAULT_DATA_ROOT == "~/.medmnist"
    monkeypatch.setenv("SSL_FT_DATA", str(tmp_path / "env"))
    assert resolve_data_root() == tmp_path / "env"
    assert resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_root("~/d") == tmp_path / "d"


def test_name_lookup_uses_env_root(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_FT_DATA", str(data_root))
    assert load_data("breastmnist").info.source == str((data_root / "breastmnist.npz").resolve())


# --- label fraction and limit -------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.01, 0.1, 1.0])
def test_label_fraction_is_stratified_and_seeded(data_root: Path, fraction: float) -> None:
    full = load_data("pneumoniamnist", data_root=data_root)
    a = load_data("pneumoniamnist", data_root=data_root, label_fraction=fraction, seed=1)
    b = load_data("pneumoniamnist", data_root=data_root, label_fraction=fraction, seed=1)
    c = load_data("pneumoniamnist", data_root=data_root, label_fraction=fraction, seed=2)
    n_full = len(full.labels["train"])
    idx = a.indices["train"]
    assert len(idx) == round(fraction * n_full)
    assert np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(idx, b.indices["train"])
    assert fraction == 1.0 or not np.array_equal(idx, c.indices["train"])
    np.testing.assert_array_equal(a.labels["train"], full.labels["train"][idx])
    np.testing.assert_array_equal(a.images["train"], full.images["train"][idx])
    ratio_full = full.labels["train"].mean()
    assert abs(a.labels["train"].mean() - ratio_full) < 0.02
    assert set(np.unique(a.labels["train"])) == {0, 1}
    for split in ("val", "test"):  # the label fraction touches train only
        assert len(a.labels[split]) == len(full.labels[split])
    assert a.info.mean == full.info.mean  # statistics of the full train split


def test_label_fraction_subsets_are_nested(data_root: Path) -> None:
    small = load_data("pneumoniamnist", data_root=data_root, label_fraction=0.01, seed=3)
    large = load_data("pneumoniamnist", data_root=data_root, label_fraction=0.1, seed=3)
    assert set(small.indices["train"]) <= set(large.indices["train"])


def test_limit_applies_to_every_split(data_root: Path) -> None:
    splits = load_data("pneumoniamnist", data_root=data_root, limit=50, seed=5)
    again = load_data("pneumoniamnist", data_root=data_root, limit=50, seed=6)
    for split in ("train", "val", "test"):
        assert len(splits.labels[split]) == 50
        assert set(np.unique(splits.labels[split])) == {0, 1}
    assert not np.array_equal(splits.indices["train"], again.indices["train"])
    np.testing.assert_array_equal(splits.indices["test"], again.indices["test"])  # fixed eval set
    both = load_data("pneumoniamnist", data_root=data_root, label_fraction=0.1, limit=30)
    assert [len(both.labels[s]) for s in ("train", "val", "test")] == [30, 30, 30]


def test_subsample_edge_cases() -> None:
    labels = np.array([0] * 1000 + [1] * 2 + [2] * 5)
    idx = subsample(labels, fraction=0.01, seed=0)
    assert set(labels[idx]) == {0, 1, 2}  # every class keeps at least one sample
    assert len(idx) == round(0.01 * len(labels))
    idx = subsample(labels, limit=2, seed=0)
    assert len(idx) == 2 and 0 in labels[idx]  # fewer slots than classes: the largest first
    idx = subsample(labels, limit=10, seed=0)
    assert len(idx) == 10 and set(labels[idx]) == {0, 1, 2}
    np.testing.assert_array_equal(subsample(labels), np.arange(len(labels)))
    assert len(subsample(np.zeros(0, np.int64), fraction=0.5)) == 0
    for bad in (0, -0.1, 1.01, float("nan"), "0.5"):
        with pytest.raises(UserError, match="fraction"):
            subsample(labels, fraction=bad)  # type: ignore[arg-type]
    for bad in (0, -3, 2.5, True):
        with pytest.raises(UserError, match="limit"):
            subsample(labels, limit=bad)  # type: ignore[arg-type]


# --- ImageArrayDataset --------------------------------------------------------------------------


def test_image_array_dataset(data_root: Path) -> None:
    splits = load_data("breastmnist", data_root=data_root)
    info = splits.info
    raw = splits.dataset("train", normalize=False)
    x, y = raw[3]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28) and isinstance(y, int)
    np.testing.assert_allclose(x.numpy() * 255, splits.images["train"][3], atol=1e-4)
    assert y == splits.labels["train"][3]
    assert len(raw) == 546 and raw.num_classes == 2 and raw.labels.dtype == np.int64

    norm = splits.dataset("train")
    xn, _ = norm[3]
    torch.testing.assert_close(xn, (x - info.mean[0]) / info.std[0])
    all_x, all_y = norm.tensors()
    assert all_x.shape == (546, 1, 28, 28) and all_y.dtype == torch.int64
    assert abs(all_x.mean().item()) < 1e-4 and abs(all_x.std().item() - 1) < 1e-3
    torch.testing.assert_close(all_x[3], xn)

    seen: list[torch.Tensor] = []

    def flip(t: torch.Tensor) -> torch.Tensor:
        seen.append(t)
        return torch.flip(t, dims=[-1])

    xt, _ = splits.dataset("train", transform=flip)[3]
    assert 0.0 <= seen[0].min() and seen[0].max() <= 1.0  # transform sees [0, 1] values
    torch.testing.assert_close(xt, torch.flip(xn, dims=[-1]))
    with pytest.raises(UserError, match="'dev'"):
        splits.dataset("dev")


def test_image_array_dataset_uint16_and_rgb() -> None:
    images = np.array([[[[0, 65535]], [[257, 0]], [[65535, 65535]]]], dtype=np.uint16)
    ds = ImageArrayDataset(images, np.array([1]), max_value=65535, mean=(0.5, 0.5, 0.5),
                           std=(0.5, 0.25, 1.0), num_classes=3)  # fmt: skip
    x, y = ds[0]
    expected = torch.tensor([[[-1.0, 1.0]], [[(257 / 65535 - 0.5) / 0.25, -2.0]], [[0.5, 0.5]]])
    torch.testing.assert_close(x, expected)
    assert (y, ds.num_classes) == (1, 3)
    with pytest.raises(ValueError):
        ImageArrayDataset(images, np.array([1, 2]), max_value=65535, mean=(0.5,), std=(0.5,))


# --- the MedMNIST download path (mocked, no network) ---------------------------------------------


class _FakeDownload:
    """Stands in for ``medmnist.PneumoniaMNIST``: "downloads" by copying the shared file."""

    calls: list[dict] = []
    source: Path

    def __init__(
        self, split: str, download: bool = False, root: str = "", size: int = 28, **kw: object
    ) -> None:
        type(self).calls.append({"split": split, "download": download, "root": root, "size": size})
        if download:
            shutil.copy(self.source, Path(root) / "pneumoniamnist.npz")


def test_download_path_uses_medmnist(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "fresh" / "root"
    _FakeDownload.calls = []
    _FakeDownload.source = data_root / "pneumoniamnist.npz"
    monkeypatch.setattr(medmnist, "PneumoniaMNIST", _FakeDownload)
    with pytest.raises(UserError, match=r"pneumoniamnist.*download"):
        load_data("pneumoniamnist", data_root=root)
    assert _FakeDownload.calls == []
    splits = load_data("pneumoniamnist", data_root=root, download=True)
    assert _FakeDownload.calls == [
        {"split": "train", "download": True, "root": str(root), "size": 28}
    ]
    assert splits.info.source == str((root / "pneumoniamnist.npz").resolve())
    assert len(splits.labels["train"]) == 4708
    load_data("pneumoniamnist", data_root=root, download=True)  # present now: no second download
    assert len(_FakeDownload.calls) == 1


def test_download_failure_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Offline:
        def __init__(self, **kwargs: object) -> None:
            raise RuntimeError("Automatic download failed!\nPlease download it manually.")

    monkeypatch.setattr(medmnist, "BreastMNIST", Offline)
    with pytest.raises(UserError, match=r"breastmnist_64\.npz.*Automatic download failed.*zenodo"):
        load_data("breastmnist", data_root=tmp_path, size=64, download=True)
