"""tools/ensemble.py and ssl_ft.ensemble: dimensions, frozen weights, the cache, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import ssl_ft.ensemble.members as members_mod
from ssl_ft.checkpoint import load_checkpoint, save_checkpoint
from ssl_ft.ensemble import EnsembleConfig, FusionNet, ensemble, load_members
from ssl_ft.models import create_backbone


def _ckpt(path: Path, seed: int, method: str, family: str, size: int = 28) -> Path:
    torch.manual_seed(seed)
    meta = {"method": method, "family": family, "arch": "resnet18", "in_chans": 1,
            "image_size": size, "stem": "standard",
            "normalization": {"mean": [0.5], "std": [0.25], "max_value": 255},
            "recipe": {}, "data_fingerprint": "x", "epoch": 1}
    save_checkpoint(path, create_backbone("resnet18", in_chans=1).state_dict(), meta)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("ckpts")
    return [_ckpt(d / "simclr.pt", 1, "simclr", "contrastive"),
            _ckpt(d / "genesis.pt", 2, "genesis", "restorative")]


def _cfg(data_root, tmp_path, ckpts, **kw) -> EnsembleConfig:
    base = dict(checkpoints=[str(c) for c in ckpts], data="pneumoniamnist",
                data_root=str(data_root), limit=200, out=str(tmp_path / "out"),
                cache_dir=str(tmp_path / "cache"), threads=1)
    return EnsembleConfig(**{**base, **kw})


def test_default_depths_and_dimensions_add_up(data_root, tmp_path, ckpts):
    cfg = _cfg(data_root, tmp_path, ckpts)
    members = load_members(cfg)
    # contrastive at 50 % (end of layer2: 128 channels), restorative at 75 % (layer3: 256)
    assert [(m.name, m.depth, m.dim) for m in members] == [("simclr", 50.0, 128),
                                                           ("genesis", 75.0, 256)]
    norms = [(torch.zeros(m.dim), torch.ones(m.dim)) for m in members]
    net = FusionNet(members, norms, 2)
    assert net.head.in_features == 128 + 256
    assert net(torch.rand(3, 1, 28, 28)).shape == (3, 2)
    out, metrics = ensemble(cfg)
    assert [m["dim"] for m in metrics["models"]] == [128, 256]
    assert metrics["trainable_params"] == (128 + 256 + 1) * 2
    assert set(metrics["baselines"]) == {"simclr", "genesis", "late_fusion"}
    # every variant is scored on the same 200 test images, ACC is the confusion's trace share;
    # the AUC values themselves are recomputed independently in test_fusion_features.py
    for row in [metrics, *metrics["baselines"].values()]:
        confusion = np.array(row["test"]["confusion"])
        assert confusion.sum() == 200
        assert row["test"]["acc"] == pytest.approx(np.trace(confusion) / 200)
        assert sum(c["n"] for c in row["test"]["per_class"].values()) == 200
    assert json.loads((out / "metrics.json").read_text())["truncate"] == [50.0, 75.0]


def test_frozen_backbones_stay_bitwise_unchanged(data_root, tmp_path, ckpts, monkeypatch):
    import ssl_ft.ensemble.engine as engine

    seen = []
    real = engine.load_members
    monkeypatch.setattr(engine, "load_members", lambda cfg: seen.extend(real(cfg)) or seen)
    ensemble(_cfg(data_root, tmp_path, ckpts, strategy="lp-ft", layers=["75-100"],
                  depths=[100], epochs=1, batch_size=64))
    for member, path in zip(seen, ckpts, strict=True):
        start = load_checkpoint(path).backbone
        now = member.backbone.state_dict()
        same = [k for k in now if torch.equal(now[k], start[k])]
        changed = [k for k in now if k not in same]
        assert changed and all(k.startswith("layer4") for k in changed)
        assert any(k.startswith("layer1") for k in same)


def test_lp_leaves_every_weight_alone(data_root, tmp_path, ckpts, monkeypatch):
    import ssl_ft.ensemble.engine as engine

    seen = []
    real = engine.load_members
    monkeypatch.setattr(engine, "load_members", lambda cfg: seen.extend(real(cfg)) or seen)
    ensemble(_cfg(data_root, tmp_path, ckpts))
    for member, path in zip(seen, ckpts, strict=True):
        start = load_checkpoint(path).backbone
        for k, v in member.backbone.state_dict().items():
            assert torch.equal(v, start[k]), k


def test_cache_is_reused_and_invalidated(data_root, tmp_path, monkeypatch, capsys):
    d = tmp_path / "c"
    d.mkdir()
    ckpts = [_ckpt(d / "a.pt", 1, "simclr", "contrastive"),
             _ckpt(d / "b.pt", 2, "genesis", "restorative")]
    calls = []
    real = members_mod.extract_features
    monkeypatch.setattr(members_mod, "extract_features",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = _cfg(data_root, tmp_path, ckpts)
    _, first = ensemble(cfg)
    assert len(calls) == 6  # 2 models x 3 splits
    _, again = ensemble(cfg)
    assert len(calls) == 6 and "from the cache" in capsys.readouterr().err
    assert again["test"] == first["test"]
    _ckpt(d / "b.pt", 3, "genesis", "restorative")  # same path, new weights
    ensemble(cfg)
    assert len(calls) == 9  # only the changed model is recomputed
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3
    ensemble(_cfg(data_root, tmp_path, ckpts, label_fraction=0.02))  # other train images
    assert len(calls) == 15


def _run(tool, argv):
    mod = tool("ensemble")
    return mod.run(mod.main, argv)


def test_cli_as_a_user_runs_it(data_root, tmp_path, tool, ckpts):
    out = tmp_path / "cli"
    argv = ["--checkpoint", str(ckpts[0]), "--checkpoint", str(ckpts[1]), "--depth", "25",
            "--depth", "100", "--data", "pneumoniamnist", "--data-root", str(data_root),
            "--limit", "160", "--cache-dir", str(tmp_path / "cache"), "--seed", "2",
            "--out", str(out), "threads=1"]
    assert _run(tool, argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["truncate"] == [25.0, 100.0] and metrics["seed"] == 2
    assert [m["dim"] for m in metrics["models"]] == [64, 512]


@pytest.mark.parametrize("case", ["sizes", "arch", "one", "depths"])
def test_mismatched_inputs_fail_clearly(data_root, tmp_path, tool, capsys, ckpts, case):
    extra: list[str] = []
    paths = [str(c) for c in ckpts]
    if case == "sizes":
        paths[1] = str(_ckpt(tmp_path / "big.pt", 4, "genesis", "restorative", size=64))
        needle = "64 px"
    elif case == "arch":
        plain = tmp_path / "r50.pth"
        torch.save(create_backbone("resnet50", in_chans=1).state_dict(), plain)
        paths[1] = str(plain)
        extra = ["--arch", "resnet18", "--size", "28"]
        needle = "r50.pth"
    elif case == "one":
        paths = paths[:1]
        needle = "at least two"
    else:
        extra = ["--depth", "25", "--depth", "50", "--depth", "75"]
        needle = "3 --depth values for 2"
    argv = [a for p in paths for a in ("--checkpoint", p)] + [
        "--data", "pneumoniamnist", "--data-root", str(data_root), "--limit", "64",
        "--out", str(tmp_path / "bad"), *extra]
    assert _run(tool, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err


def test_shipped_recipe_loads():
    from ssl_ft.ensemble import load_ensemble_recipe

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "ensemble"
    cfg = load_ensemble_recipe(str(recipe / "simclr_genesis_pneumoniamnist.yaml"), ["seed=4"])
    assert cfg.depths == [50, 75] and cfg.seed == 4 and len(cfg.checkpoints) == 2


def test_models_may_differ_in_architecture_and_normalisation(data_root, tmp_path, ckpts):
    cfg = _cfg(data_root, tmp_path, [ckpts[0], "none"], arch="vgg11", limit=100)
    members = load_members(cfg)
    assert [(m.source["arch"], m.depth, m.dim) for m in members] == [("resnet18", 50.0, 128),
                                                                     ("vgg11", 100.0, 512)]
    info = members[1].splits.info
    assert members[0].source["mean"] == [0.5]  # the checkpoint's own normalisation
    assert members[1].source["mean"] == pytest.approx(list(info.mean))  # the data's
    _, metrics = ensemble(cfg)
    assert [m["arch"] for m in metrics["models"]] == ["resnet18", "vgg11"]
    assert set(metrics["baselines"]) == {"simclr", "none", "late_fusion"}


def test_fine_tuned_fusion_repeats_bit_for_bit_on_its_seed_series(data_root, tmp_path, ckpts,
                                                                   monkeypatch):
    """Fusion keeps nothing to resume from (no last.pt: a killed fusion runs again), so its
    guard is repetition: the same recipe gives the same numbers, every epoch of every trained
    net (each model alone, then the fusion) re-seeded from ``seed * 100_003 + epoch`` (its
    series, ssl_ft.scaffold.seed_epoch with stride 1), whatever ran before in the process."""
    import ssl_ft.ensemble.engine as engine

    seeds = []
    real = engine.seed_epoch
    monkeypatch.setattr(engine, "seed_epoch", lambda *a, **k: seeds.append(real(*a, **k)))
    cfg = _cfg(data_root, tmp_path, ckpts, strategy="lp-ft", layers=["75-100"],
               depths=[100], epochs=2, batch_size=32, seed=3, limit=96)
    _, first = ensemble(cfg)
    assert seeds == [3 * 100_003 + e for _ in range(3) for e in range(2)]  # 2 alone + fusion
    torch.rand(5)  # another state of the global generators
    _, again = ensemble(cfg)
    for row in [first, *first["baselines"].values()]:
        assert row["test"]["auc"] != 0.5  # the heads learned something to compare
    assert again["val"] == first["val"] and again["test"] == first["test"]
    assert again["baselines"] == first["baselines"]
