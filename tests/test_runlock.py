"""The run-folder lock: a second writer is refused naming the holder, a killed holder's lock is
taken over, and every writing tool (pretrain, finetune, ensemble, study) takes it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_ft.cli import run
from ssl_ft.errors import UserError
from ssl_ft.runlock import LOCK_NAME, RunLock, holder_of

REPO = Path(__file__).resolve().parents[1]
QUICK = str(REPO / "recipes" / "quickstart.yaml")
HOLD = ("import sys, time\nfrom ssl_ft.runlock import RunLock\n"
        "RunLock(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(600)\n")


def _holder(folder: Path) -> subprocess.Popen:
    """Another process that holds ``folder``'s lock until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture
def held(tmp_path):
    folder = tmp_path / "run"
    proc = _holder(folder)
    yield folder, proc
    if proc.poll() is None:
        _kill(proc)


def test_a_second_process_is_refused_naming_the_holder(held):
    folder, proc = held
    with pytest.raises(UserError) as err:
        RunLock(folder).acquire()
    text = str(err.value)
    assert f"pid {proc.pid} on {socket.gethostname()}" in text and str(folder) in text
    assert "\n" not in text


def test_a_killed_holder_leaves_a_stale_lock_that_is_taken_over(held, capsys):
    folder, proc = held
    _kill(proc)
    assert holder_of(folder)["pid"] == proc.pid  # the file outlives the process...
    (folder / ".last.pt.tmp-123-0badf00d").write_bytes(b"half a checkpoint")
    with RunLock(folder) as lock:  # ...but its flock died with it
        assert lock.stale["pid"] == proc.pid
        assert holder_of(folder)["pid"] == os.getpid()
        assert not (folder / ".last.pt.tmp-123-0badf00d").exists()  # a dead writer's temp
    err = capsys.readouterr().err
    assert f"pid {proc.pid}" in err and "stale" in err and len(err.splitlines()) == 1
    assert list(folder.iterdir()) == []  # the lock file goes with a clean exit


def test_the_lock_is_reentrant_and_removes_only_what_it_created(tmp_path):
    folder = tmp_path / "a" / "b"
    with RunLock(folder), RunLock(folder):
        assert (folder / LOCK_NAME).is_file()
    assert not (tmp_path / "a").exists()
    folder.mkdir(parents=True)
    with RunLock(folder):
        (folder / "metrics.json").write_text("{}")
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize("tool_name", ["pretrain", "finetune", "ensemble", "study"])
def test_every_writing_tool_is_refused_in_a_folder_in_use(held, tool, capsys, data_root,
                                                          monkeypatch, tool_name):
    folder, proc = held
    monkeypatch.setenv("SSL_FT_DATA", str(data_root))
    monkeypatch.setenv("SSL_FT_CACHE", str(folder.parent / "cache"))
    argv = {
        "pretrain": [QUICK, f"out={folder}", "train.threads=1", "data.limit=64"],
        "finetune": ["--checkpoint", "none", "--arch", "resnet18", "--limit", "64",
                     "--out", str(folder), "threads=1"],
        "ensemble": ["--checkpoint", "none", "--checkpoint", "none", "--arch", "resnet18",
                     "--limit", "64", "--out", str(folder), "threads=1"],
        "study": [str(REPO / "recipes" / "study" / "tiny.yaml"), f"out={folder}"],
    }[tool_name]
    code = run(tool(tool_name).main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"is in use by pid {proc.pid}" in err[0]
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # nothing written


def test_two_real_pretrainings_into_one_folder(data_root, tmp_path):
    """The issue's case: both used to succeed, interleaving metrics.jsonl."""
    out = tmp_path / "r"
    cmd = [sys.executable, str(REPO / "tools" / "pretrain.py"), QUICK, f"out={out}",
           f"data.root={data_root}", "data.limit=64", "train.batch_size=32", "train.epochs=8",
           "eval.every=0", "train.threads=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    both = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(2)]  # started together: one takes the folder, the other is refused
    codes = [p.wait() for p in both]
    errs = [p.stderr.read() for p in both]
    assert sorted(codes) == [0, 2], errs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    (line,) = errs[loser].strip().splitlines()
    assert line.startswith(f"error: run folder {out} is in use by pid {both[winner].pid} on "
                           f"{socket.gethostname()} since "), line
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 9))
    assert not (out / LOCK_NAME).exists()
