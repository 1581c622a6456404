"""The NaN/inf policy: a non-finite loss, gradient, statistic or feature stops a run with one line
and exit status 3 before anything non-finite is written; non-finite checkpoints are refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from ssl_ft.checkpoint import load_checkpoint, read_state_dict
from ssl_ft.cli import run
from ssl_ft.errors import UserError
from ssl_ft.finite import (
    EXIT_NONFINITE,
    NonFiniteError,
    check_gradients,
    check_loss,
    check_state,
    first_non_finite,
    warn_if_diverging,
)

REPO = Path(__file__).resolve().parents[1]
QUICK = str(REPO / "recipes" / "quickstart.yaml")


def _call(capsys, tool, name, *argv):
    code = run(tool(name).main, [str(a) for a in argv])
    return code, capsys.readouterr().err


def _finite_rows(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float)), row
    return rows


def _pretrain_args(data_root, out, *extra):
    return [QUICK, f"data.root={data_root}", f"out={out}", "data.limit=128",
            "train.batch_size=32", "train.threads=1", "eval.limit=64", *extra]


def test_pretraining_at_lr_1e6_stops_with_exit_3_and_writes_nothing_non_finite(
        data_root, tmp_path, tool, capsys):
    out = tmp_path / "r"
    code, err = _call(capsys, tool, "pretrain", *_pretrain_args(
        data_root, out, "train.lr=1000000.0", "train.epochs=3", "eval.every=1"))
    assert code == EXIT_NONFINITE == 3
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "nan" in lines[0] and "Traceback" not in err, err
    assert "stopped before writing anything non-finite" in lines[0]
    _finite_rows(out / "metrics.jsonl")
    for name in ("last.pt", "checkpoint.pt"):
        if (out / name).exists():
            load_checkpoint(out / name)  # refuses non-finite tensors


def test_inf_batchnorm_statistics_stop_the_run_and_the_last_good_checkpoint_resumes(
        data_root, tmp_path, tool, capsys, monkeypatch):
    """The issue's case: the loss stays finite while a BatchNorm running variance overflows."""
    import ssl_ft.pretrain.engine as engine

    real = engine.train_one_epoch

    def overflowing(model, method, *args, epoch, **kwargs):
        result = real(model, method, *args, epoch=epoch, **kwargs)
        if epoch == 1:
            method.backbone.layer1[0].bn1.running_var.fill_(float("inf"))
        return result

    out = tmp_path / "r"
    args = _pretrain_args(data_root, out, "train.epochs=3", "eval.every=0",
                          "train.deterministic=true")
    monkeypatch.setattr(engine, "train_one_epoch", overflowing)
    code, err = _call(capsys, tool, "pretrain", *args)
    assert code == 3
    assert err.strip().splitlines()[-1] == (
        "error: backbone.layer1.0.bn1.running_var is inf at the end of epoch 2; the run "
        "stopped before writing anything non-finite; lower the learning rate (or use fp32)")
    last = load_checkpoint(out / "last.pt")  # finite, loads: the last good state
    assert last.meta["epoch"] == 1 and first_non_finite(last.backbone) is None
    assert [r["epoch"] for r in _finite_rows(out / "metrics.jsonl")] == [1]
    assert not (out / "checkpoint.pt").exists()
    monkeypatch.setattr(engine, "train_one_epoch", real)
    code, err = _call(capsys, tool, "pretrain", *args, "--resume")
    assert code == 0, err
    assert load_checkpoint(out / "checkpoint.pt").meta["epoch"] == 3
    torch.use_deterministic_algorithms(False)


def test_finetune_sgd_at_lr_1e6_stops_and_adam_warns(data_root, tmp_path, tool, capsys):
    common = ["--checkpoint", "none", "--arch", "resnet18", "--data-root", str(data_root),
              "--limit", "128", "--batch-size", "32", "--lr", "1e6", "threads=1"]
    code, err = _call(capsys, tool, "finetune", *common, "--epochs", "2", "--out",
                      tmp_path / "sgd", "optimizer=sgd")
    assert code == 3 and err.strip().splitlines()[-1].startswith("error: the loss is nan at epoch 1")
    assert not (tmp_path / "sgd" / "last.pt").exists()
    code, err = _call(capsys, tool, "finetune", *common, "--epochs", "1", "--out",
                      tmp_path / "adam")
    assert code == 0, err  # Adam's loss is huge but finite: one warning, the run goes on
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "diverges" in warnings[0], err
    assert "the chance-level loss 0.6931" in warnings[0]


def test_checks_name_what_is_not_finite():
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    check_state(net, "here")
    net(torch.randn(4, 3)).sum().backward()
    check_gradients(net, "step 0")
    net[0].bias.grad[1] = float("nan")
    with pytest.raises(NonFiniteError, match="the gradient of 0.bias is nan at step 0"):
        check_gradients(net, "step 0")
    net[1].running_var[0] = float("inf")
    with pytest.raises(NonFiniteError, match="1.running_var is inf at here"):
        check_state(net, "here")
    with pytest.raises(NonFiniteError, match="the loss is inf at epoch 2"):
        check_loss(torch.tensor(float("inf")), "epoch 2")
    assert first_non_finite({"a": [torch.ones(2), {"b": torch.tensor([1.0, float("nan")])}],
                             "n": torch.tensor([2**31])}) == ("a.1.b", "nan")


def test_non_finite_checkpoints_are_refused_on_load(tmp_path):
    from ssl_ft.checkpoint import save_checkpoint

    state = {"conv1.weight": torch.ones(2, 2), "bn1.running_var": torch.ones(2)}
    state["bn1.running_var"][1] = float("inf")
    meta = {k: 1 for k in ("method", "arch", "in_chans", "image_size", "stem", "normalization",
                           "recipe", "data_fingerprint", "epoch")}
    save_checkpoint(tmp_path / "inf.pt", state, meta)
    torch.save(state, tmp_path / "plain.pt")
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "plain.safetensors"))
    for name in ("inf.pt", "plain.pt", "plain.safetensors"):
        with pytest.raises(UserError, match=f"{name} holds inf values in bn1.running_var"):
            read_state_dict(tmp_path / name)
    with pytest.raises(UserError, match="holds inf values in bn1.running_var"):
        load_checkpoint(tmp_path / "inf.pt")
    good = dict(state, **{"bn1.running_var": torch.ones(2)})
    save_checkpoint(tmp_path / "opt.pt", good, meta,
                    extra={"optimizer": {"state": {0: {"exp_avg": torch.tensor([float("nan")])}}}})
    with pytest.raises(UserError, match="nan values in extra.optimizer.state.0.exp_avg"):
        load_checkpoint(tmp_path / "opt.pt")


def test_divergence_warning_is_printed_once(capsys):
    history = [{"loss": 1.0}, {"loss": 50.0}, {"loss": 500.0}]
    assert not warn_if_diverging(history[:2], "loss")
    assert warn_if_diverging(history, "loss")
    assert not warn_if_diverging([*history, {"loss": 900.0}], "loss")  # already said
    assert len(capsys.readouterr().err.splitlines()) == 1
