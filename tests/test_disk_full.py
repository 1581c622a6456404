"""A full disk (ENOSPC) in the middle of a run, as a user meets it: the tool's ``main`` with argv
through :func:`ssl_ft.cli.run`. Exit 2, one ``error:`` line naming the file and "no space left on
device", no traceback; what was written before stays readable, the last good checkpoint loads,
and the same command resumes once there is space."""

from __future__ import annotations

import errno
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
import yaml

from ssl_ft.checkpoint import load_checkpoint
from ssl_ft.cli import run
from ssl_ft.errors import DiskFullError, UserError, is_disk_full, writing

REPO = Path(__file__).resolve().parents[1]
QUICK = str(REPO / "recipes" / "quickstart.yaml")
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _full_at(monkeypatch, name: str, epoch: int, nth: int = 1) -> list[str]:
    """``torch.save`` fails like a full disk (half the bytes written, then ENOSPC) on the
    ``nth`` checkpoint named ``name`` whose meta says ``epoch``; returns the failed temp files."""
    real, seen, failed = torch.save, [0], []

    def save(obj, f, *args, **kwargs):
        meta = obj.get("meta", {}) if isinstance(obj, dict) else {}
        if f".{name}.tmp-" in str(getattr(f, "name", "")) and meta.get("epoch") == epoch:
            seen[0] += 1
            if seen[0] == nth:
                failed.append(f.name)
                real(obj, f, *args, **kwargs)
                f.seek(f.tell() // 2)
                f.truncate()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    return failed


def _one_error_line(err: str, path: Path) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err and "Exception in thread" not in err, err
    assert f"cannot write {path}: no space left on device" in lines[0], lines[0]
    return lines[0]


def test_disk_full_error_is_a_one_line_user_error_that_crosses_processes(tmp_path):
    err = DiskFullError(tmp_path / "last.pt")
    assert isinstance(err, UserError) and "\n" not in str(err)
    back = pickle.loads(pickle.dumps(err))  # a process pool sends it back to the study
    assert type(back) is DiskFullError and str(back) == str(err) and back.path == err.path
    assert is_disk_full(ENOSPC) and is_disk_full(OSError(errno.EDQUOT, "quota"))
    assert not is_disk_full(OSError(errno.EACCES, "denied")) and not is_disk_full(ValueError())
    with pytest.raises(DiskFullError, match="cannot write x.txt: no space left on device"), \
            writing("x.txt"):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(UserError, match="^cannot write x.txt: Permission denied$"), \
            writing("x.txt"):
        raise PermissionError(errno.EACCES, "Permission denied")


def test_cli_turns_an_unnamed_full_disk_error_into_one_line(capsys):
    def main(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/events.bin")

    assert run(main, []) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "error: cannot write /data/out/events.bin: no space left on device")

    def other(argv):
        raise OSError(errno.EIO, "I/O error")

    with pytest.raises(OSError):  # not a full disk: a bug or a broken machine, traceback kept
        run(other, [])


def test_pretraining_on_a_full_disk_keeps_the_last_good_checkpoint(data_root, tmp_path, tool,
                                                                     capsys, monkeypatch):
    out = tmp_path / "r"
    argv = [QUICK, f"data.root={data_root}", f"out={out}", "data.limit=64",
            "train.batch_size=32", "train.threads=1", "train.epochs=2", "eval.every=0"]
    failed = _full_at(monkeypatch, "last.pt", epoch=2)
    assert run(tool("pretrain").main, argv) == 2
    _one_error_line(capsys.readouterr().err, out / "last.pt")
    assert failed and not Path(failed[0]).exists()  # the half-written temp file is gone
    assert load_checkpoint(out / "last.pt").meta["epoch"] == 1  # the last good one
    assert [json.loads(r)["epoch"] for r in (out / "metrics.jsonl").read_text().splitlines()
            ] == [1, 2]  # (the resumed run rewrites it from last.pt)
    monkeypatch.undo()  # space again: the same command with --resume finishes the run
    assert run(tool("pretrain").main, [*argv, "--resume"]) == 0
    assert load_checkpoint(out / "checkpoint.pt").meta["epoch"] == 2
    assert [json.loads(r)["epoch"] for r in (out / "metrics.jsonl").read_text().splitlines()
            ] == [1, 2]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runtime"]["precision"] in ("bf16", "fp32")  # what `auto` resolved to
    assert summary["runtime"]["channels_last"] is True  # the default


def _finetune_argv(data_root, out):
    return ["--checkpoint", "none", "--arch", "resnet18", "--data", "pneumoniamnist",
            "--data-root", str(data_root), "--limit", "64", "--batch-size", "32", "--epochs",
            "2", "--layers", "75-100", "--out", str(out), "threads=1",
            "checkpoint_every_s=0"]  # last.pt every epoch: epoch 2's write is the one that fails


def test_finetuning_on_a_full_disk_keeps_the_last_good_checkpoint(data_root, tmp_path, tool,
                                                                    capsys, monkeypatch):
    out = tmp_path / "ft"
    _full_at(monkeypatch, "last.pt", epoch=2)
    assert run(tool("finetune").main, _finetune_argv(data_root, out)) == 2
    _one_error_line(capsys.readouterr().err, out / "last.pt")
    assert load_checkpoint(out / "last.pt").meta["epoch"] == 1
    assert not (out / "metrics.json").exists()  # not finished, so a study re-runs it
    monkeypatch.undo()
    assert run(tool("finetune").main, [*_finetune_argv(data_root, out), "--resume"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["runtime"] == {"device": "cpu", "precision": "fp32", "threads": 1}


@pytest.mark.parametrize("where", ["metrics.jsonl", "tensorboard"])
def test_a_full_disk_in_a_plain_write_is_one_line_too(data_root, tmp_path, tool, capsys,
                                                      monkeypatch, where):
    """Writes that are not atomic: the appended metrics.jsonl, TensorBoard's event file (written
    by a background thread, whose error the next add_scalar raises)."""
    out = tmp_path / "ft"
    if where == "metrics.jsonl":
        real_open = Path.open

        def full_open(self, mode="r", *args, **kwargs):
            if self.name == "metrics.jsonl" and mode == "a":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_open(self, mode, *args, **kwargs)

        monkeypatch.setattr(Path, "open", full_open)
        path = out / "metrics.jsonl"
    else:
        from tensorboard.summary.writer.record_writer import RecordWriter

        def full_write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(RecordWriter, "write", full_write)
        path = out / "tb"
    assert run(tool("finetune").main, _finetune_argv(data_root, out)) == 2
    _one_error_line(capsys.readouterr().err, path)


def _study(tmp_path, data_root) -> Path:
    recipe = {"name": "full", "out": str(tmp_path / "study"), "workers": 1, "threads": 1,
              "finetune": {"base": {"checkpoint": "none", "arch": "resnet18",
                                    "data_root": str(data_root), "limit": 64, "epochs": 2,
                                    "batch_size": 32, "checkpoint_every_s": 0},
                           "grid": {"data": ["pneumoniamnist"], "layers": ["50-100", "75-100"],
                                    "seed": [0]}}}
    path = tmp_path / "full.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_study_on_a_full_disk_stops_with_one_line_and_resumes(data_root, tmp_path, tool,
                                                                capsys, monkeypatch):
    recipe = _study(tmp_path, data_root)
    cells = tmp_path / "study" / "cells" / "finetune"
    _full_at(monkeypatch, "last.pt", epoch=2, nth=2)  # the second cell's last epoch
    mod = tool("study")
    assert run(mod.main, [str(recipe)]) == 2
    err = capsys.readouterr().err
    first, second = sorted(cells.iterdir())
    _one_error_line(err, second / "last.pt")
    assert "FAILED" not in err and not (second / "error.txt").exists()  # not a cell's failure
    metrics = json.loads((first / "metrics.json").read_text())  # the finished cell: readable
    assert metrics["layers"] == "50-100" and (first / "model.pt").is_file()
    assert load_checkpoint(second / "last.pt").meta["epoch"] == 1  # the last good checkpoint
    assert not (second / "metrics.json").exists()
    assert not (tmp_path / "study" / "results.csv").exists()  # no report of a stopped study
    monkeypatch.undo()
    assert run(mod.main, [str(recipe)]) == 0  # the same command: the first cell is not re-run
    assert json.loads((first / "metrics.json").read_text()) == metrics
    assert json.loads((second / "metrics.json").read_text())["layers"] == "75-100"
    assert (tmp_path / "study" / "results.csv").is_file()


def test_a_full_disk_in_a_pool_worker_stops_the_study(tmp_path, monkeypatch):
    """With workers > 1 the error comes back through a future; it stops the study too."""
    from concurrent.futures import ThreadPoolExecutor

    import ssl_ft.study.runner as runner
    from ssl_ft.study import expand, load_study

    study = load_study(_study(tmp_path, tmp_path), ["workers=2"])
    calls: list[str] = []

    def cell(kind, config, folder, threads):
        calls.append(folder)
        raise DiskFullError(Path(folder) / "last.pt")

    monkeypatch.setattr(runner, "check_inputs", lambda study, cells: None)
    monkeypatch.setattr(runner, "_pool", lambda study, workers: ThreadPoolExecutor(workers))
    monkeypatch.setattr(runner, "run_cell", cell)
    with pytest.raises(DiskFullError, match="no space left on device"):
        runner.run_study(study, expand(study), progress=False)
    assert calls


@pytest.mark.parametrize(("free", "full"), [(0, True), (10 * 2**30, False)])
def test_torch_writer_failing_on_a_full_disk_is_a_disk_full_error(tmp_path, monkeypatch, free,
                                                                  full):
    """torch's zip writer raises its own RuntimeError (no errno) when a write comes up short: on a
    disk with (almost) no space left that is a full disk; with space, the error is torch's and
    propagates unchanged. Either way the old checkpoint is untouched and no temp file is left."""
    import shutil

    from ssl_ft.checkpoint import save_checkpoint
    from tests.conftest import grey_meta

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"w": torch.ones(2)}, {**grey_meta(), "epoch": 1})
    real = torch.save

    def short_write(obj, f, *args, **kwargs):
        real(obj, f, *args, **kwargs)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1664 vs 1556")

    monkeypatch.setattr(torch, "save", short_write)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=free))
    with pytest.raises(DiskFullError if full else RuntimeError, match="no space left" if full
                       else "unexpected pos"):
        save_checkpoint(path, {"w": torch.zeros(2)}, {**grey_meta(), "epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path).meta["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
