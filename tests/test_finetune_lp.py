"""``lp`` and ``lp-ft`` against their definitions (Kumar et al., ICLR 2022), on real images:

* ``lp``'s head is the converged logistic probe of ``tools/probe.py`` (same ``C``, the same
  predictions within float32 rounding), written into an ordinary linear head, and the backbone
  never changes (every tensor bitwise, BatchNorm statistics included);
* ``lp-ft``'s first optimiser step starts from exactly that head and the untouched backbone, and
  ``lp-ft`` takes as many optimiser steps as ``ft`` with the same epochs, at ``ft_lr_scale``
  times ``ft``'s learning rate.

Resume equality of both is in ``tests/test_strategy_resume.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import ssl_ft.finetune.engine as engine
from ssl_ft.checkpoint import load_checkpoint, save_checkpoint
from ssl_ft.data import load_data
from ssl_ft.features import extract_features, padded_proba, probe_features
from ssl_ft.finetune import FinetuneConfig, build_backbone, finetune, load_finetuned, predict_proba
from ssl_ft.models import DepthMap, create_backbone
from ssl_ft.probe import linear_probe
from tests.conftest import grey_meta

LIMIT, SEED, EPOCHS, BATCH = 120, 1, 2, 16
SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, pneumonia) -> Path:
    """A resnet18 checkpoint whose BatchNorm statistics are not the defaults (a few train-mode
    passes over real images), so that a run which updated them would be caught."""
    torch.manual_seed(5)
    backbone = create_backbone("resnet18", in_chans=1).train()
    with torch.no_grad():
        for i in range(0, 128, 32):
            backbone((pneumonia[i:i + 32] - 0.57) / 0.16)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    meta = grey_meta()
    save_checkpoint(path, backbone.state_dict(), meta)
    return path


def _cfg(data_root, ckpt, out, strategy, **kw) -> FinetuneConfig:
    return FinetuneConfig(checkpoint=str(ckpt), data="pneumoniamnist", data_root=str(data_root),
                          limit=LIMIT, batch_size=BATCH, epochs=EPOCHS, strategy=strategy,
                          seed=SEED, out=str(out), threads=1, device="cpu", **kw)


def _truncated(ckpt, data_root, truncate):
    splits = load_data("pneumoniamnist", data_root=str(data_root), limit=LIMIT, seed=SEED)
    backbone, source = build_backbone(str(ckpt), splits.info)
    DepthMap.from_backbone(backbone).select("0-100", truncate).apply(backbone)
    return splits, backbone, source


def test_lp_head_is_the_logistic_probe_and_the_backbone_never_moves(data_root, tmp_path, ckpt):
    out = finetune(_cfg(data_root, ckpt, tmp_path / "lp", "lp", truncate=75), progress=False)
    m = json.loads((out / "metrics.json").read_text())

    # the reference, computed here independently: frozen features at 75 %, the sklearn probe
    splits, backbone, source = _truncated(ckpt, data_root, 75)
    start = {k: v.clone() for k, v in backbone.state_dict().items()}
    feats = {s: extract_features(backbone, splits.images[s], max_value=255, mean=source["mean"],
                                 std=source["std"], device=torch.device("cpu")).numpy()
             for s in SPLITS}
    ref = probe_features(feats, splits.labels, task=splits.info.task, num_classes=2)
    want = padded_proba(ref["classifier"], ref["scaler"].transform(feats["test"]), 2)

    model = load_finetuned(out / "model.pt")
    assert isinstance(model.head, torch.nn.Linear) and model.head.weight.shape == (2, 256)
    got = predict_proba(model, splits.images["test"], max_value=255)
    np.testing.assert_allclose(got, want, atol=1e-4)   # the same classifier, float32 head
    assert m["probe"]["C"] == ref["C"] and m["probe"]["n_features"] == 256
    assert m["probe"]["converged"] and m["probe"]["fit_seconds"] > 0
    assert abs(m["test"]["auc"] - ref["test"]["auc"]) < 1e-3
    # ... and what tools/probe.py reports on the same checkpoint, data and depth
    tool = linear_probe(str(ckpt), "pneumoniamnist", data_root=str(data_root), truncate=75,
                        limit=LIMIT, seed=SEED)
    assert tool.C == m["probe"]["C"] and abs(tool.test["auc"] - m["test"]["auc"]) < 1e-3
    assert m["sgd_epochs"] == 0 and m["optimizer_steps"] == 0 and m["best_epoch"] == 0
    assert {"val", "test", "layers", "truncate", "strategy", "trainable_params", "seed",
            "label_fraction"} <= set(m)

    # the backbone never moved: every tensor, BatchNorm running statistics and counters too
    assert any(k.endswith("running_mean") and start[k].abs().sum() > 0 for k in start)
    for saved in (model.backbone.state_dict(), load_checkpoint(out / "last.pt").backbone):
        assert saved.keys() == start.keys()
        for k, v in start.items():
            assert torch.equal(saved[k], v), k


def _spy_optimizer(monkeypatch) -> dict[str, dict]:
    """Record, per strategy, the head/backbone/learning rates at the first optimiser step and
    the number of steps taken."""
    seen: dict[str, dict] = {}
    real = engine._optimizer

    def spy(cfg, strategy):
        opt = real(cfg, strategy)
        record = seen.setdefault(cfg.strategy, {"steps": 0})
        step = opt.step

        def counted(*args, **kwargs):
            if record["steps"] == 0:
                model = strategy.model
                record["head"] = {k: v.clone() for k, v in model.head.state_dict().items()}
                record["backbone"] = {k: v.clone()
                                      for k, v in model.backbone.state_dict().items()}
                record["lr"] = {g["name"]: g["lr"] for g in opt.param_groups}
            record["steps"] += 1
            return step(*args, **kwargs)

        opt.step = counted
        return opt

    monkeypatch.setattr(engine, "_optimizer", spy)
    return seen


def test_lp_ft_starts_from_the_probe_head_and_gets_fts_steps(data_root, tmp_path, ckpt,
                                                             monkeypatch):
    seen = _spy_optimizer(monkeypatch)
    metrics = {}
    for strategy in ("lp", "lp-ft", "ft"):
        out = finetune(_cfg(data_root, ckpt, tmp_path / strategy, strategy, layers="50-100"),
                       progress=False)
        metrics[strategy] = json.loads((out / "metrics.json").read_text())

    probe_head = load_checkpoint(tmp_path / "lp" / "model.pt").extra["head"]
    first = seen["lp-ft"]
    for k, v in probe_head.items():           # phase 2 starts from exactly lp's head ...
        assert torch.equal(first["head"][k], v), k
    assert not torch.equal(seen["ft"]["head"]["weight"], probe_head["weight"])  # (ft: random)
    # ... and from the untouched backbone: every tensor is the checkpoint's, BatchNorm
    # statistics included (lp-ft normalises with them, bn: frozen; ft's first forward in train
    # mode has moved its trained units' statistics already)
    start = load_checkpoint(ckpt).backbone
    assert first["backbone"].keys() == start.keys()
    for k, v in start.items():
        assert torch.equal(first["backbone"][k], v), k
    assert any(not torch.equal(seen["ft"]["backbone"][k], v) for k, v in start.items())

    steps = EPOCHS * (LIMIT // BATCH)
    assert seen["lp-ft"]["steps"] == seen["ft"]["steps"] == steps
    assert seen["lp"]["steps"] == 0
    assert metrics["lp-ft"]["optimizer_steps"] == metrics["ft"]["optimizer_steps"] == steps
    assert metrics["lp-ft"]["sgd_epochs"] == metrics["ft"]["sgd_epochs"] == EPOCHS
    assert metrics["lp"]["optimizer_steps"] == 0
    scale = 0.1  # the default ft_lr_scale
    for group, lr in seen["ft"]["lr"].items():
        assert first["lr"][group] == pytest.approx(scale * lr)
    assert metrics["lp-ft"]["probe"]["C"] == metrics["lp"]["probe"]["C"]
    assert metrics["lp-ft"]["probe"]["seconds"] > 0 and metrics["ft"]["probe"] is None
    assert metrics["lp-ft"]["history"][0]["phase"] == "probe"
    assert [h["epoch"] for h in metrics["lp-ft"]["history"]] == [0, 1, 2]


def test_lp_on_grey_images_with_imagenets_three_value_normalisation(data_root, tmp_path, ckpt):
    """ImageNet's mean/std (three values) on 1-channel images: the model averages them to one
    value, and so must the probe's feature extraction (it raised a shape error)."""
    out = finetune(_cfg(data_root, ckpt, tmp_path / "lp", "lp", normalization="imagenet"),
                   progress=False)
    m = json.loads((out / "metrics.json").read_text())
    splits, backbone, _ = _truncated(ckpt, data_root, 100)
    from ssl_ft.finetune.model import IMAGENET_MEAN, IMAGENET_STD  # noqa: PLC0415

    feats = {s: extract_features(backbone, splits.images[s], max_value=255,
                                 mean=[sum(IMAGENET_MEAN) / 3], std=[sum(IMAGENET_STD) / 3],
                                 device=torch.device("cpu")).numpy() for s in SPLITS}
    ref = probe_features(feats, splits.labels, task=splits.info.task, num_classes=2)
    assert m["test"]["auc"] == pytest.approx(ref["test"]["auc"], abs=1e-6)


def test_resuming_a_run_made_before_the_probe_phase_is_refused(data_root, tmp_path, ckpt):
    """A last.pt of an older lp-ft (no recorded probe) is past its first epochs: refitting the
    probe then would overwrite a trained head, so the resume stops with one line instead."""
    from ssl_ft.errors import UserError

    cfg = _cfg(data_root, ckpt, tmp_path / "old", "lp-ft")
    out = finetune(cfg, progress=False, stop_after=1)
    old = load_checkpoint(out / "last.pt")
    assert old.meta["epoch"] == 1 and "probe" in old.extra
    save_checkpoint(out / "last.pt", old.backbone, old.meta,
                    {k: v for k, v in old.extra.items() if k != "probe"})
    with pytest.raises(UserError, match="before lp-ft began with a converged linear probe"):
        finetune(cfg, resume=True, progress=False)
