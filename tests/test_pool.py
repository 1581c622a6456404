"""Pretraining pools: several sources (mixed sizes and channels, an unlabelled folder) in one run,
sampling weights, exclusions, and the run's best.pt / summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_ft.checkpoint import load_checkpoint
from ssl_ft.data.pool import epoch_indices, load_pool
from ssl_ft.errors import UserError
from ssl_ft.pretrain import load_pretrain_recipe, pretrain
from ssl_ft.pretrain.summary import best_epoch, run_summary

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "recipes" / "quickstart.yaml"


@pytest.fixture
def unlabelled(tmp_path: Path) -> Path:
    """A flat folder of 12 RGB and grey PNGs of another size (no class sub-folders)."""
    folder = tmp_path / "scans"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        shape = (40, 40, 3) if i % 2 else (40, 40)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_pool_mixes_sizes_channels_and_an_unlabelled_folder(data_root, unlabelled):
    pool = load_pool(["pneumoniamnist", "ham10000_dermoscopy_unique_lesion_64",
                      {"name": str(unlabelled), "weight": 3}], data_root=data_root, size=32,
                     limit=50)
    assert pool.images.shape == (50 + 50 + 12, 1, 32, 32)  # RGB dermoscopy made grey (policy)
    assert pool.images.dtype == np.uint8 and pool.info.n_channels == 1
    assert [r["images"] for r in pool.sources] == [50, 50, 12]
    assert [r["split"] for r in pool.sources] == ["train", "train", "all (unlabelled)"]
    assert pool.sources[2]["kind"] == "unlabelled folder" and pool.sources[2]["weight"] == 3
    assert all(len(r["fingerprint"]) == 64 for r in pool.sources)
    assert pool.codes.shape == (112, 9, 64)
    np.testing.assert_array_equal(np.bincount(pool.source_index), [50, 50, 12])
    assert not pool.uniform
    assert load_pool(["ham10000_dermoscopy_unique_lesion_64", "lc25000_lung_colon_histology_64"],
                     data_root=data_root, limit=20).info.n_channels == 3  # all RGB: kept
    big = load_pool(["pneumoniamnist", "chest_xray_kermany_64"], data_root=data_root, limit=5)
    assert big.info.image_size == 64                          # default: the largest native size


def test_pool_takes_only_train_splits_and_drops_excluded_images(data_root):
    pool = load_pool(["busi_breast_ultrasound_64"], data_root=data_root, size=28,
                     exclude=["breastmnist"], log=lambda msg: None)
    rec = pool.sources[0]
    assert rec["images"] + rec["excluded"] == 545            # BUSI's train split only
    assert rec["excluded"] > 100                              # BreastMNIST's val/test copies
    with pytest.raises(UserError, match="empty list"):
        load_pool([], data_root=data_root)
    with pytest.raises(UserError, match="weight must be > 0"):
        load_pool([{"name": "breastmnist", "weight": 0}], data_root=data_root)


def test_an_excluded_dataset_passes_the_guard_later(data_root):
    """PneumoniaMNIST's train split holds near-copies of Kermany val/test images (one source
    pool): excluding Kermany must leave nothing the guard would refuse at the pool's size."""
    from ssl_ft.data import load_data
    from ssl_ft.leakage import check_leakage

    pool = load_pool(["pneumoniamnist"], data_root=data_root, exclude=["chest_xray_kermany_64"],
                     log=lambda msg: None)
    assert pool.sources[0]["excluded"] > 100
    target = load_data("chest_xray_kermany_64", data_root=data_root, size=28)
    report = check_leakage(pool.codes, target.images, what="pool", target="kermany")
    assert report.leaked == 0


def test_epoch_indices_follow_the_weights():
    weights = np.array([1.0] * 100 + [3.0] * 100)
    idx = epoch_indices(weights, seed=0, epoch=0)
    assert len(idx) == 200
    share = (idx >= 100).mean()
    assert 0.68 < share < 0.82                                # expected 0.75
    np.testing.assert_array_equal(idx, epoch_indices(weights, 0, 0))
    assert not np.array_equal(idx, epoch_indices(weights, 0, 1))


def test_best_epoch_and_summary_on_known_histories():
    history = [{"epoch": 0, "knn_auc": 0.90}, {"epoch": 1, "knn_auc": 0.93},
               {"epoch": 2, "loss": 1.0}, {"epoch": 3, "knn_auc": 0.95},
               {"epoch": 4, "knn_auc": 0.94}]
    assert best_epoch(history, "knn_auc")["epoch"] == 3
    s = run_summary(history, "knn_auc")
    assert (s["best_epoch"], s["final_epoch"]) == (3, 4)
    assert s["gain_over_init"] == pytest.approx(0.05)
    assert "added +0.0500" in s["text"] and "-0.0100 from the best" in s["text"]
    flat = run_summary([{"epoch": 0, "knn_auc": 0.95}, {"epoch": 1, "knn_auc": 0.952}],
                       "knn_auc")
    assert "nothing measurable yet" in flat["text"]
    assert best_epoch([{"epoch": 0, "knn_auc": 0.99}], "knn_auc") is None  # init never "best"


def test_pretrain_on_a_pool_writes_sources_codes_best_and_summary(data_root, unlabelled,
                                                                  tmp_path):
    out = tmp_path / "run"
    cfg = load_pretrain_recipe(QUICK, [
        f"data.root={data_root}", f"data.name=[breastmnist, {unlabelled}]", "data.size=28",
        "train.epochs=2", "train.batch_size=32", "eval.every=1", "eval.limit=64",
        "train.threads=1", f"out={out}"])
    pretrain(cfg, progress=False)
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert [s["name"] for s in ckpt.meta["sources"]] == ["breastmnist", "scans"]
    assert ckpt.meta["data"] == "breastmnist+scans"
    assert ckpt.extra["seen_codes"].shape == (546 + 12, 9, 64)
    assert ckpt.meta["precision"] in ("bf16", "fp32")
    summary = json.loads((out / "summary.json").read_text())
    best = load_checkpoint(out / "best.pt")
    assert best.meta["epoch"] == summary["best_epoch"] in (1, 2)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(h["knn_auc"] for h in history) == summary["best"]
    assert summary["before"] is not None
    for key, value in best.backbone.items():
        if summary["best_epoch"] == 2:
            assert torch.equal(value, ckpt.backbone[key])
