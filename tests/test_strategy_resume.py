"""Resume equality for every registered fine-tuning strategy: a run killed after its first
epoch and resumed ends bit for bit where the uninterrupted run ends (weights, optimiser state,
strategy state, per-epoch history and test metrics).

Parametrised over the strategy registry, so a new strategy is covered the day it registers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import ssl_ft.finetune.engine as engine
from ssl_ft.checkpoint import load_checkpoint, save_checkpoint
from ssl_ft.finetune import STRATEGIES, FinetuneConfig, finetune
from ssl_ft.models import create_backbone

# a strategy that needs arguments to be interesting over 3 epochs
ARGS = {"lp-ft": {"lp_epochs": 1}, "l1-sp": {"alpha": 0.01}, "l2-sp": {"alpha": 1.0},
        "auto-rgn": {"measure_batches": 1}}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    meta = {"method": "simclr", "family": "contrastive", "arch": "resnet18", "in_chans": 1,
            "image_size": 28, "stem": "standard",
            "normalization": {"mean": [0.57], "std": [0.16], "max_value": 255},
            "recipe": {}, "data_fingerprint": "x", "epoch": 1}
    save_checkpoint(path, create_backbone("resnet18", in_chans=1).state_dict(), meta)
    return path


def _cfg(data_root, ckpt, out, strategy) -> FinetuneConfig:
    return FinetuneConfig(checkpoint=str(ckpt), data="pneumoniamnist", data_root=str(data_root),
                          limit=48, batch_size=16, epochs=3, layers="50-100", strategy=strategy,
                          strategy_args=ARGS.get(strategy, {}), optimizer="sgd", lr=0.05,
                          seed=1, out=str(out), threads=1, device="cpu")


def _history(out: Path) -> list[dict]:
    rows = json.loads((out / "metrics.json").read_text())["history"]
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in rows]


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_killed_and_resumed_run_equals_the_uninterrupted_one(data_root, tmp_path, ckpt,
                                                              monkeypatch, strategy):
    finetune(_cfg(data_root, ckpt, tmp_path / "a", strategy), progress=False)
    real = engine._end_of_epoch

    def killed_after_first(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # as if the process died right after epoch 1 was saved

    monkeypatch.setattr(engine, "_end_of_epoch", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        finetune(_cfg(data_root, ckpt, tmp_path / "b", strategy), progress=False)
    monkeypatch.setattr(engine, "_end_of_epoch", real)
    assert load_checkpoint(tmp_path / "b" / "last.pt").meta["epoch"] == 1
    finetune(_cfg(data_root, ckpt, tmp_path / "b", strategy), resume=True, progress=False)

    a, b = (load_checkpoint(tmp_path / r / "last.pt") for r in ("a", "b"))
    assert a.meta["epoch"] == b.meta["epoch"] == 3
    for key in a.backbone:
        assert torch.equal(a.backbone[key], b.backbone[key]), key
    for key in a.extra["head"]:
        assert torch.equal(a.extra["head"][key], b.extra["head"][key]), key
    opt_a, opt_b = a.extra["optimizer"], b.extra["optimizer"]
    assert opt_a["param_groups"] == opt_b["param_groups"]  # lr_scale of every group included
    for i, state in opt_a["state"].items():
        for k, v in state.items():
            assert torch.equal(v, opt_b["state"][i][k]) if torch.is_tensor(v) else v == opt_b[
                "state"][i][k], (i, k)
    assert a.extra["strategy"] == b.extra["strategy"]
    assert a.extra["step"] == b.extra["step"] and a.extra["best"] == b.extra["best"]
    assert _history(tmp_path / "a") == _history(tmp_path / "b")
    ma, mb = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("a", "b"))
    assert ma["test"] == mb["test"] and ma["val"] == mb["val"]
    # the run really trained: the backbone or the head moved from the checkpoint
    start = load_checkpoint(ckpt).backbone
    moved = [k for k in start if not torch.equal(start[k], a.backbone[k])]
    assert moved or strategy == "lp", strategy
