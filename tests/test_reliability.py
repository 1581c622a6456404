"""Issue 17 regressions, each through a tool as a user runs it: numbers YAML reads as strings,
lost final checkpoints, changed recipes on resume, duplicated metrics rows, temporary files,
unlearnable data, and paths under regular files."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from ssl_ft.checkpoint import load_checkpoint
from ssl_ft.cli import run

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "recipes" / "quickstart.yaml"


def call(capsys, tool, name: str, *argv: str) -> tuple[int, str, str]:
    """``tools/<name>.py``'s main through the tools' exit-status wrapper: (status, out, err)."""
    code = run(tool(name).main, [str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_lr_1e6_is_a_float_for_pretrain_and_finetune(capsys, tool, data_root):
    code, out, err = call(capsys, tool, "pretrain", QUICK, "train.lr=1e6", "--print-recipe")
    assert code == 0, err
    assert yaml.safe_load(out)["train"]["lr"] == 1e6
    code, out, err = call(capsys, tool, "finetune", "lr=1e6", "--lr", "2e-3", "--checkpoint",
                          "none", "--arch", "resnet18", "--dry-run", "--limit", "8",
                          "--data", "pneumoniamnist", "--data-root", str(data_root))
    assert code == 0, err  # the flag wins; the positional 1e6 parsed as a float first


def _pretrain_args(data_root, out, *extra):
    return [QUICK, f"data.root={data_root}", f"out={out}", "data.limit=64",
            "train.batch_size=32", "train.epochs=2", "eval.every=0", "train.threads=1",
            "train.deterministic=true", *extra]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_finished_run_resumed_writes_its_lost_or_torn_checkpoint(data_root, tmp_path, tool,
                                                                   capsys):
    out = tmp_path / "r1"
    args = _pretrain_args(data_root, out)
    assert call(capsys, tool, "pretrain", *args)[0] == 0
    last = load_checkpoint(out / "last.pt")
    for damage in ("missing", "torn"):
        if damage == "missing":
            (out / "checkpoint.pt").unlink()
        else:
            data = (out / "checkpoint.pt").read_bytes()
            (out / "checkpoint.pt").write_bytes(data[: len(data) // 2])
        code, _, err = call(capsys, tool, "pretrain", *args, "--resume")
        assert code == 0, err
        assert f"wrote {out / 'checkpoint.pt'}" in err
        final = load_checkpoint(out / "checkpoint.pt")
        assert final.meta["epoch"] == 2
        assert all(torch.equal(final.backbone[k], v) for k, v in last.backbone.items())
    code, _, err = call(capsys, tool, "pretrain", *args, "--resume")  # complete: left alone
    assert code == 0 and "wrote" not in err


def test_resume_refuses_a_changed_recipe_naming_the_key(data_root, tmp_path, tool, capsys):
    out = tmp_path / "r"
    args = _pretrain_args(data_root, out, "train.epochs=1")
    assert call(capsys, tool, "pretrain", *args)[0] == 0
    recipe = (out / "recipe.yaml").read_text()
    for change, key in (("train.lr=0.1", "train.lr=0.3"), ("train.epochs=2", "train.epochs=1"),
                        ("method_args.temperature=0.5", "method_args.temperature=0.2"),
                        ("augment.hflip=0.0", "augment.hflip=")):
        code, _, err = call(capsys, tool, "pretrain", *args, change, "--resume")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"it was made with {key}" in err, err
    assert (out / "recipe.yaml").read_text() == recipe  # not rewritten as if it had been used
    # where the output goes, threads and the online evaluation may change
    code, _, err = call(capsys, tool, "pretrain", *args, "train.threads=2", "eval.every=1",
                        "eval.k=5", "--resume")
    assert code == 0, err


def test_resumed_runs_neither_repeat_metrics_rows_nor_leave_temp_files(data_root, tmp_path, tool,
                                                                      capsys):
    out = tmp_path / "r"
    args = _pretrain_args(data_root, out)
    assert call(capsys, tool, "pretrain", *args)[0] == 0
    rows = _rows(out / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2]
    # the state a kill leaves between the epoch's metrics row and its last.pt: a repeated row,
    # half a row, a 92 MB temp file of the checkpoint being written, no checkpoint.pt
    with (out / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps(rows[-1]) + "\n" + '{"loss": 5.')
    (out / f".last.pt.tmp-{2**22 + 17}-0badf00d").write_bytes(b"\0" * 1000)
    (out / "checkpoint.pt").unlink()
    code, _, err = call(capsys, tool, "pretrain", *args, "--resume")
    assert code == 0, err
    assert _rows(out / "metrics.jsonl") == rows
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_finetune_resume_rewrites_metrics_to_the_checkpoint(data_root, tmp_path, tool, capsys):
    out = tmp_path / "ft"
    args = ["--checkpoint", "none", "--arch", "resnet18", "--data-root", str(data_root),
            "--limit", "64", "--epochs", "2", "--batch-size", "32", "--out", str(out),
            "threads=1"]
    assert call(capsys, tool, "finetune", *args)[0] == 0
    rows = _rows(out / "metrics.jsonl")
    before = json.loads((out / "metrics.json").read_text())
    (out / "metrics.json").unlink()  # as if killed before the final metrics.json
    with (out / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps(rows[-1]) + "\n")
    code, _, err = call(capsys, tool, "finetune", *args, "--resume")
    assert code == 0, err
    assert _rows(out / "metrics.jsonl") == rows
    assert json.loads((out / "metrics.json").read_text())["test"] == before["test"]


def test_stale_temp_files_are_those_of_dead_writers_of_this_host(tmp_path):
    import os
    import subprocess
    import sys

    from ssl_ft.checkpoint._files import _HOST, atomic_write, stale_temp_files

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = [f".a.npz.tmp-{_HOST}-{dead.pid}-0badf00d",      # killed writer: stale
             f".b.npz.tmp-{_HOST}-{os.getpid()}-0badf00d",   # a live writer (this process)
             f".c.npz.tmp-otherhost-{dead.pid}-0badf00d",    # another host's: left alone
             "d.npz"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    assert stale_temp_files(tmp_path) == [tmp_path / names[0]]
    atomic_write(tmp_path / "e.npz", lambda f: f.write(b"y"))  # leaves no temp of its own
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names, "e.npz"])
