"""tools/pretrain.py as a user runs it: run folder, checkpoint, errors, resume."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from ssl_ft.checkpoint import REQUIRED_META, load_checkpoint
from ssl_ft.pretrain import load_pretrain_recipe, pretrain

REPO = Path(__file__).resolve().parents[1]
TOOL = [sys.executable, str(REPO / "tools" / "pretrain.py")]
QUICK = REPO / "recipes" / "quickstart.yaml"


def tiny(data_root, out, *extra):
    return [f"data.root={data_root}", f"out={out}", "data.limit=96", "train.batch_size=32",
            "train.epochs=2", "eval.every=1", "eval.limit=64", "train.threads=1", *extra]


def run_tool(*args, **kw):
    return subprocess.run([*TOOL, *args], capture_output=True, text=True, cwd=REPO, **kw)


def run_in_process(capsys, tool, *args):
    """tools/pretrain.py's main through the same exit-status wrapper, without a new process."""
    from ssl_ft.cli import run

    code = run(tool("pretrain").main, list(args))
    return code, capsys.readouterr().err


def test_pretrain_cli_writes_run_folder(data_root, tmp_path):
    out = tmp_path / "run"
    res = run_tool(str(QUICK), *tiny(data_root, out))
    assert res.returncode == 0, res.stderr
    assert {"recipe.yaml", "last.pt", "checkpoint.pt", "metrics.jsonl", "tb"} <= {
        p.name for p in out.iterdir()}
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert set(REQUIRED_META) <= set(ckpt.meta)
    assert ckpt.meta["method"] == "simclr" and ckpt.meta["epoch"] == 2
    assert ckpt.meta["in_chans"] == 1 and ckpt.meta["image_size"] == 28
    assert ckpt.meta["recipe"]["data"]["limit"] == 96
    assert len(ckpt.meta["data_fingerprint"]) == 64
    assert "knn_auc" in (out / "metrics.jsonl").read_text()
    assert "epoch 0 (before training)  knn_auc" in res.stderr  # the baseline to beat
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["method_args"]["temperature"] == 0.2
    assert list((out / "tb").iterdir())
    # a second run into the same folder must not clobber it
    again = run_tool(str(QUICK), *tiny(data_root, out))
    assert again.returncode == 2 and "--resume" in again.stderr


@pytest.mark.parametrize(
    ("override", "needle"),
    [("train.epoch=3", "unknown key train.epoch"),
     ("train.epochs=many", "train.epochs = 'many'"),
     ("method=simclrr", "unknown SSL method 'simclrr'"),
     ("method_args.temprature=0.1", "unknown key method_args.temprature"),
     ("data.name=nosuchdata", "nosuchdata"),
     ("model.arch=resnet19", "resnet19")],
)
def test_bad_input_exits_2_with_one_line(data_root, tmp_path, capsys, tool, override, needle):
    code, err = run_in_process(capsys, tool, str(QUICK), *tiny(data_root, tmp_path / "r"), override)
    assert code == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and needle in lines[-1], err
    assert not (tmp_path / "r").exists()  # nothing written before the input was checked


def test_run_folder_that_is_a_file_is_a_user_error(data_root, tmp_path, capsys, tool):
    (tmp_path / "file").write_text("x")
    code, err = run_in_process(capsys, tool, str(QUICK), *tiny(data_root, tmp_path / "file"))
    assert code == 2 and "cannot create run folder" in err and "file" in err


def test_missing_recipe_exits_2(tmp_path):
    res = run_tool(str(tmp_path / "missing.yaml"))
    assert res.returncode == 2 and "missing.yaml" in res.stderr


def _weights(path):
    return load_checkpoint(path).backbone


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_resume_after_interrupt_matches_uninterrupted(data_root, tmp_path, monkeypatch, method):
    import ssl_ft.pretrain.engine as engine

    common = ["train.deterministic=true", "train.precision=fp32", "eval.every=0",
              f"method={method}", "method_args={}"]
    if method == "moco":  # a queue of 64 keys: full after two batches, so its restore matters
        common.append("method_args.queue_size=64")
    full = load_pretrain_recipe(QUICK, tiny(data_root, tmp_path / "a", *common))
    pretrain(full, progress=False)

    real_end = engine._end_of_epoch

    def killed_after_first(*args, **kwargs):
        real_end(*args, **kwargs)
        raise KeyboardInterrupt  # as if the process died right after epoch 1 was saved

    cut = load_pretrain_recipe(QUICK, tiny(data_root, tmp_path / "b", *common))
    monkeypatch.setattr(engine, "_end_of_epoch", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cut, progress=False)
    monkeypatch.setattr(engine, "_end_of_epoch", real_end)
    assert load_checkpoint(tmp_path / "b" / "last.pt").meta["epoch"] == 1
    pretrain(cut, resume=True, progress=False)

    a, b = _weights(tmp_path / "a" / "checkpoint.pt"), _weights(tmp_path / "b" / "checkpoint.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    torch.use_deterministic_algorithms(False)


def test_pretrain_on_a_folder_of_16bit_pngs(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(24):
            arr = rng.integers(0, 65535, size=(32, 32), dtype=np.uint16)
            Image.fromarray(arr).save(tmp_path / "img" / cls / f"{i}.png")
    cfg = load_pretrain_recipe(QUICK, [f"data.name={tmp_path / 'img'}", f"out={tmp_path / 'r'}",
                                       "train.batch_size=16", "train.epochs=1", "eval.every=1",
                                       "train.threads=1"])
    pretrain(cfg, progress=False)
    ckpt = load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    assert ckpt.meta["normalization"]["max_value"] == 65535
    assert ckpt.meta["in_chans"] == 1 and ckpt.meta["image_size"] == 32


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 900) -> None:
    """Poll until ``path`` exists (atomic writes rename a complete file into place); fail if
    ``proc`` ended first or ``timeout`` seconds passed (a generous bound for a loaded machine)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended ({proc.returncode}) before {path.name}"
        assert time.monotonic() < deadline, f"no {path.name} after {timeout:.0f} s"
        time.sleep(0.05)


def test_sigkill_leaves_a_resumable_checkpoint(data_root, tmp_path):
    """SIGKILL in the middle of the run, at an event rather than after a fixed sleep: as soon
    as epoch 1's snapshot is on disk, i.e. while epoch 2 trains (or epoch 2's writes run, if
    the poll is slow), so the kill lands inside the run however loaded the machine is."""
    out = tmp_path / "k"
    args = tiny(data_root, out, "train.epochs=6", "eval.every=0", "train.save_every=1")
    proc = subprocess.Popen([*TOOL, str(QUICK), *args], cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        _wait_for(out / "epoch_0001.pt", proc)
    finally:
        proc.kill()  # SIGKILL; a no-op if the process already ended
        proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed, not finished
    done = load_checkpoint(out / "last.pt").meta["epoch"]
    assert 1 <= done < 6
    res = run_tool(str(QUICK), *args, "--resume")
    assert res.returncode == 0, res.stderr
    assert load_checkpoint(out / "checkpoint.pt").meta["epoch"] == 6
    assert [load_checkpoint(out / f"epoch_{e:04d}.pt").meta["epoch"] for e in range(1, 7)] == [
        1, 2, 3, 4, 5, 6]  # every snapshot, also the one of the epoch the kill cut short
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
