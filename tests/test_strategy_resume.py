"""Resume equality for every registered fine-tuning strategy: a run killed after its first
checkpoint and resumed ends bit for bit where the uninterrupted run ends (weights, optimiser
state, strategy state, per-epoch history and test metrics). The first checkpoint is epoch 1's,
or for ``lp`` and ``lp-ft`` the one written right after the probe phase (epoch 0); ``lp-ft`` is
also killed after epoch 1. A resumed ``lp``/``lp-ft`` run must load its probed head, never refit.

Parametrised over the strategy registry, so a new strategy is covered the day it registers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import ssl_ft.finetune.engine as engine
from ssl_ft.checkpoint import load_checkpoint, save_checkpoint
from ssl_ft.finetune import STRATEGIES, FinetuneConfig, finetune, get_strategy
from ssl_ft.models import create_backbone
from tests.conftest import grey_meta

# a strategy that needs arguments to be interesting over 3 epochs
ARGS = {"l1-sp": {"alpha": 0.01}, "l2-sp": {"alpha": 1.0},
        "auto-rgn": {"measure_batches": 1}}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    meta = grey_meta()
    save_checkpoint(path, create_backbone("resnet18", in_chans=1).state_dict(), meta)
    return path


def _cfg(data_root, ckpt, out, strategy) -> FinetuneConfig:
    return FinetuneConfig(checkpoint=str(ckpt), data="pneumoniamnist", data_root=str(data_root),
                          limit=48, batch_size=16, epochs=3, layers="50-100", strategy=strategy,
                          strategy_args=ARGS.get(strategy, {}), optimizer="sgd", lr=0.05,
                          seed=1, out=str(out), threads=1, device="cpu",
                          checkpoint_every_s=0)  # last.pt every epoch: a kill after each


def _untimed(row: dict | None) -> dict | None:
    """``row`` without its wall-clock entries (speeds and seconds differ between two runs)."""
    if row is None:
        return None
    return {k: v for k, v in row.items() if k != "images_per_s" and not k.endswith("seconds")}


def _history(out: Path) -> list[dict]:
    rows = json.loads((out / "metrics.json").read_text())["history"]
    return [_untimed(r) for r in rows]


@pytest.mark.parametrize("strategy,kill_after", [(s, 1) for s in sorted(STRATEGIES)] +
                         [("lp-ft", 2)])
def test_killed_and_resumed_run_equals_the_uninterrupted_one(data_root, tmp_path, ckpt,
                                                              monkeypatch, strategy, kill_after):
    finetune(_cfg(data_root, ckpt, tmp_path / "a", strategy), progress=False)
    real, saved = engine.save_last, []

    def killed(*args, **kwargs):
        real(*args, **kwargs)
        saved.append(1)
        if len(saved) == kill_after:
            raise KeyboardInterrupt  # as if the process died right after that checkpoint

    monkeypatch.setattr(engine, "save_last", killed)
    with pytest.raises(KeyboardInterrupt):
        finetune(_cfg(data_root, ckpt, tmp_path / "b", strategy), progress=False)
    monkeypatch.setattr(engine, "save_last", real)
    probes = get_strategy(strategy).fits_probe
    first = kill_after - 1 if probes else kill_after   # the probe's checkpoint is epoch 0
    assert load_checkpoint(tmp_path / "b" / "last.pt").meta["epoch"] == first

    def refit(*args, **kwargs):
        raise AssertionError("a resumed run fitted its probe again")

    monkeypatch.setattr(engine, "fit_linear_head", refit)
    finetune(_cfg(data_root, ckpt, tmp_path / "b", strategy), resume=True, progress=False)

    a, b = (load_checkpoint(tmp_path / r / "last.pt") for r in ("a", "b"))
    end = 0 if strategy == "lp" else 3  # lp: the probe is the whole run
    assert a.meta["epoch"] == b.meta["epoch"] == end
    assert _untimed(a.extra["probe"]) == _untimed(b.extra["probe"])
    assert (a.extra["probe"] is not None) == probes
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
