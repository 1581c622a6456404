"""The leakage guard: perceptual codes, matches across resizing pipelines on real data, and every
consumer of a checkpoint refusing a target whose val/test images pretraining saw."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_ft.data import load_data
from ssl_ft.errors import UserError
from ssl_ft.leakage import DEFAULT_THRESHOLD, VARIANTS, check_leakage, find_matches, image_codes
from ssl_ft.pretrain import load_pretrain_recipe, pretrain

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "recipes" / "quickstart.yaml"


def _npz(root: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(root / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}


def _nchw(x: np.ndarray) -> np.ndarray:
    return x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)


def test_codes_shape_and_a_resized_or_cropped_copy_matches(data_root):
    images = _nchw(_npz(data_root, "pneumoniamnist")["test_images"][:40])
    codes = image_codes(images)
    assert codes.shape == (40, len(VARIANTS), 64) and codes.dtype == np.uint8
    up = torch.nn.functional.interpolate(torch.from_numpy(images).float(), size=(75, 75),
                                         mode="bicubic").clamp(0, 255).round().byte().numpy()
    crop = np.ascontiguousarray(images[:, :, :, 4:24])  # the central 20 of 28 columns
    assert find_matches(codes, image_codes(up)).all()
    assert find_matches(codes, image_codes(crop)).mean() >= 0.9
    others = _nchw(_npz(data_root, "pneumoniamnist")["test_images"][40:140])
    assert not find_matches(codes, image_codes(others)).any()


def test_busi_vs_breastmnist_and_kermany_vs_pneumoniamnist(data_root):
    """The project's two shared-source pairs (shared/data/README.md) are found, and a split
    that shares nothing is not."""
    busi = _npz(data_root, "busi_breast_ultrasound_64")
    busi_all = np.concatenate([_nchw(busi[f"{s}_images"]) for s in ("train", "val", "test")])
    bm = _npz(data_root, "breastmnist")
    hit = find_matches(image_codes(busi_all), image_codes(_nchw(bm["test_images"])))
    assert hit.mean() > 0.9, hit.mean()
    kermany = image_codes(_nchw(_npz(data_root, "chest_xray_kermany_64")["train_images"]))
    pm = _npz(data_root, "pneumoniamnist")
    assert find_matches(kermany, image_codes(_nchw(pm["val_images"]))).sum() > 150
    assert find_matches(kermany, image_codes(_nchw(pm["test_images"]))).sum() == 0


def test_check_leakage_counts_per_split_and_exempts_the_targets_own_duplicates():
    rng = np.random.default_rng(0)
    train, val, test = (rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8) for n in (30, 8, 8))
    test[0] = train[5]                      # a duplicate inside the target's official split
    splits = {"train": train, "val": val, "test": test}
    seen = image_codes(np.concatenate([train, val[:3], test[:2]]))
    with pytest.raises(UserError, match=r"3 of its 8 val images, 1 of its 8 test images"):
        check_leakage(seen, splits, what="checkpoint c.pt", target="toy")
    warned = []
    report = check_leakage(seen, splits, what="c", target="toy", allow=True, warn=warned.append)
    assert report.seen == {"val": 3, "test": 1}
    assert report.own_duplicates == {"val": 0, "test": 1}
    assert len(warned) == 1 and warned[0].startswith("allowed overlap")
    clean = check_leakage(image_codes(train), splits, what="c", target="toy")
    assert clean.leaked == 0 and clean.own_duplicates == {"test": 1}
    subset = {**splits, "train": train[6:]}     # a label fraction without the duplicate
    with pytest.raises(UserError, match="1 of its 8 test images"):
        check_leakage(image_codes(train), subset, what="c", target="toy")
    whole = check_leakage(image_codes(train), subset, what="c", target="toy", own_train=train)
    assert whole.leaked == 0                   # the whole train split is the target's own data
    assert not check_leakage(None, splits, what="c", target="toy", warn=warned.append).checked
    assert "records no image fingerprints" in warned[-1]


@pytest.fixture(scope="module")
def busi_checkpoint(data_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("busi") / "run"
    cfg = load_pretrain_recipe(QUICK, [
        f"data.root={data_root}", "data.name=busi_breast_ultrasound_64", "data.size=28",
        f"out={out}", "train.epochs=1", "train.batch_size=64", "eval.every=0",
        "train.threads=1"])
    pretrain(cfg, progress=False)
    return out / "checkpoint.pt"


def _tool(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / f"{name}.py"), *args],
                          capture_output=True, text=True, cwd=REPO)


def test_finetune_probe_and_ensemble_refuse_busi_checkpoint_on_breastmnist(
        busi_checkpoint, data_root, tmp_path):
    common = ["--data", "breastmnist", "--data-root", str(data_root)]
    ft = _tool("finetune", "--checkpoint", str(busi_checkpoint), *common, "--epochs", "1",
               "--out", str(tmp_path / "ft"))
    assert ft.returncode == 2, ft.stderr
    lines = ft.stderr.strip().splitlines()
    assert len(lines) == 1 and "breastmnist's evaluation splits" in lines[0]
    assert "test images" in lines[0] and "--allow-overlap" in lines[0]
    assert not (tmp_path / "ft" / "metrics.json").exists()
    probe = _tool("probe", "--checkpoint", str(busi_checkpoint), *common)
    assert probe.returncode == 2 and "breastmnist's evaluation splits" in probe.stderr
    ens = _tool("ensemble", "--checkpoint", str(busi_checkpoint), "--checkpoint", "none",
                "--arch", "resnet18", *common, "--out", str(tmp_path / "ens"),
                "--cache-dir", str(tmp_path / "cache"))
    assert ens.returncode == 2 and "breastmnist's evaluation splits" in ens.stderr
    ok = _tool("finetune", "--checkpoint", str(busi_checkpoint), *common, "--epochs", "1",
               "--limit", "64", "--out", str(tmp_path / "ft2"), "--allow-overlap")
    assert ok.returncode == 0, ok.stderr
    assert "warning: allowed overlap" in ok.stderr


def test_pretraining_on_a_folder_with_a_resized_test_image_is_caught(data_root, tmp_path):
    """A user's unlabelled folder that holds one PneumoniaMNIST test image, upscaled to 80 px
    and saved as PNG, among unrelated ultrasound images (not Kermany X-rays: those share
    PneumoniaMNIST's val pool): fine-tuning on PneumoniaMNIST is refused."""
    folder = tmp_path / "scans"
    folder.mkdir()
    pm = _npz(data_root, "pneumoniamnist")
    Image.fromarray(pm["test_images"][17]).resize((80, 80), Image.BICUBIC).save(folder / "a.png")
    for i, img in enumerate(_npz(data_root, "busi_breast_ultrasound_64")["test_images"][:70]):
        Image.fromarray(img).save(folder / f"k{i:03d}.png")
    out = tmp_path / "run"
    cfg = load_pretrain_recipe(QUICK, [
        f"data.root={data_root}", f"data.name=[{folder}]", "data.size=28", f"out={out}",
        "train.epochs=1", "train.batch_size=32", "eval.every=0", "train.threads=1"])
    pretrain(cfg, progress=False)
    ft = _tool("finetune", "--checkpoint", str(out / "checkpoint.pt"), "--data",
               "pneumoniamnist", "--data-root", str(data_root), "--out", str(tmp_path / "ft"))
    assert ft.returncode == 2
    assert "1 of its 624 test images" in ft.stderr and "val images" not in ft.stderr


def test_pretraining_on_the_targets_own_train_split_passes(data_root, tmp_path):
    """BreastMNIST's official split holds near-copies across splits; pretraining on its train
    split sees nothing that its supervised training does not, so the guard lets it through."""
    from ssl_ft.leakage import guard_checkpoint

    out = tmp_path / "run"
    cfg = load_pretrain_recipe(QUICK, [
        f"data.root={data_root}", "data.name=breastmnist", f"out={out}", "train.epochs=1",
        "train.batch_size=64", "eval.every=0", "train.threads=1"])
    pretrain(cfg, progress=False)
    splits = load_data("breastmnist", data_root=data_root)
    report = guard_checkpoint(str(out / "checkpoint.pt"), splits.images, target="breastmnist")
    assert report.checked and report.leaked == 0
    assert report.own_duplicates.get("test", 0) > 10  # the official split's own near-copies
    # with 10 % of the labels the labelled subset lacks most of those train images, but the
    # whole train split is still the target's own: probe and fusion pass too (found by the
    # Khan & Fang study: its fusion cells at 1 % and 10 % were refused)
    from ssl_ft.ensemble import EnsembleConfig, ensemble
    from ssl_ft.probe import linear_probe

    ckpt = str(out / "checkpoint.pt")
    assert linear_probe(ckpt, "breastmnist", data_root=str(data_root), label_fraction=0.1).test
    ensemble(EnsembleConfig(checkpoints=[ckpt, ckpt], data="breastmnist", label_fraction=0.1,
                            data_root=str(data_root), out=str(tmp_path / "fusion"),
                            cache_dir=str(tmp_path / "cache"), threads=1))
    assert (tmp_path / "fusion" / "metrics.json").is_file()


LC = "lc25000_lung_colon_histology_64"


def test_rgb_codes_equal_the_codes_of_the_grey_a_pipeline_makes(data_root):
    """The guard's grey is convert_channels' luma grey: an RGB image and the grey copy a loader
    made of it have the same code (a plain channel mean put LC25000 images 31 levels apart)."""
    from ssl_ft.data.convert import convert_channels

    rgb = load_data(LC, data_root=data_root).images["val"][:200]
    a, b = image_codes(rgb), image_codes(convert_channels(rgb, 1))
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2        # the grey's uint8 rounding
    ua = torch.from_numpy(a.astype(np.float32)) - torch.from_numpy(a.astype(np.float32)).mean(-1, keepdim=True)
    ub = torch.from_numpy(b.astype(np.float32)) - torch.from_numpy(b.astype(np.float32)).mean(-1, keepdim=True)
    cos = 1 - torch.nn.functional.cosine_similarity(ua, ub, dim=-1)
    assert float(cos.max()) < 0.1 * DEFAULT_THRESHOLD


def test_a_pool_of_the_targets_own_train_split_passes_whatever_prepared_it(data_root):
    """LC25000's augmented copies cross its splits. A pool of its train split (resized to 28 px,
    then made grey, as load_pool does) against the target as a 28 px grey loader prepares it:
    val image 374 lies within the threshold of the pool's copy of a train image and just outside
    it of the loader's copy of the same train image (0.0099 / 0.0101, measured); it is the
    target's own train image, so it is exempt, and nothing is counted."""
    from ssl_ft.data.pool import load_pool

    pool = load_pool(LC, data_root=data_root, size=28, channels=1, log=lambda m: None)
    target = load_data(LC, data_root=data_root, size=28, channels=1)
    v = image_codes(target.images["val"][374:375])
    assert find_matches(pool.codes, v)[0]                      # the pool saw a copy of it
    assert not find_matches(image_codes(target.images["train"]), v)[0]  # the loader's: just not
    report = check_leakage(pool.codes, target.images, what="pool", target=LC)
    assert report.leaked == 0 and report.own_duplicates["val"] >= 1
    # a foreign image among what pretraining saw is still counted: the val image itself
    seen = np.concatenate([pool.codes, v])
    both = check_leakage(seen, {**target.images, "train": target.images["train"][:50]},
                         what="pool", target=LC, allow=True)
    assert both.seen["val"] >= 1


def _code(vec: np.ndarray) -> np.ndarray:
    """A (1, 9, 64) code whose every view is ``vec`` (0..255)."""
    return np.tile(np.clip(vec, 0, 255).round().astype(np.uint8), (1, len(VARIANTS), 1))


def _d(a: np.ndarray, b: np.ndarray) -> float:
    x, y = (c[0, 0].astype(np.float64) - c[0, 0].mean() for c in (a, b))
    return float(1 - x @ y / np.linalg.norm(x) / np.linalg.norm(y))


def test_a_foreign_copy_is_counted_though_an_own_train_image_lies_near_it():
    """Pretraining saw x, a near-exact copy (from another dataset) of val image v; the target's
    train split holds t, a little farther than the threshold from v. Not exempt: t is much
    farther from v than x is (the exemption allows 0.001), whatever x and t have in common."""
    rng = np.random.default_rng(0)
    v = rng.uniform(40, 215, 64)
    x = v + rng.normal(0, 2.5, 64)
    t = v + rng.normal(0, 12, 64)
    cv, cx, ct = _code(v), _code(x), _code(t)
    assert _d(cv, cx) < 0.005 and 0.01 < _d(cv, ct) < 0.03          # the case as described
    from ssl_ft.leakage import _own_duplicates

    assert not _own_duplicates(cx, cv, ct, DEFAULT_THRESHOLD)[0]
    # and the same train image prepared another way, just past the threshold, is exempt
    t2 = x + rng.normal(0, 0.4, 64)
    assert _own_duplicates(cx, cv, _code(t2), DEFAULT_THRESHOLD)[0]
