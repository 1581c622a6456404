"""ssl_ft.checkpoint._files on small files made by hand: atomic writes and their errors, stale
temp files, the write log, file sniffing and the one-line read errors, each with its exact
result (found by mutation testing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from ssl_ft.checkpoint import _files as F
from ssl_ft.errors import DiskFullError, UserError


def test_write_json_is_indented_with_a_final_newline(tmp_path):
    out = F.write_json(tmp_path / "m.json", {"a": [1, 2], "b": None})
    assert out == tmp_path / "m.json"
    assert out.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": null\n}\n'


def test_atomic_write_errors_are_one_line_and_leave_nothing(tmp_path):
    with pytest.raises(UserError) as err:
        F.atomic_write(tmp_path, lambda f: f.write(b"x"))
    assert str(err.value) == f"cannot write {tmp_path}: it is a directory"
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError) as err:
        F.atomic_write(blocker / "sub" / "a.pt", lambda f: f.write(b"x"))
    assert str(err.value) == (f"cannot write {blocker / 'sub' / 'a.pt'}: cannot create "
                              f"{blocker / 'sub'}: Not a directory")

    def no_space(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(DiskFullError) as err:  # a UserError: one line, exit 2
        F.atomic_write(tmp_path / "b.pt", no_space)
    assert str(err.value).startswith(f"cannot write {tmp_path / 'b.pt'}: no space left on device;")
    with pytest.raises(KeyError):
        F.atomic_write(tmp_path / "c.pt", lambda f: {}["missing"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no temp file, no target


def test_the_write_log_lists_every_target(tmp_path, monkeypatch):
    log = tmp_path / "writes.log"
    monkeypatch.setenv(F.WRITE_LOG_ENV, str(log))
    monkeypatch.setenv(F.KILL_AT_WRITE_ENV, "not a number")  # ignored
    F.atomic_write(tmp_path / "a", lambda f: f.write(b"1"))
    F.write_json(tmp_path / "b.json", {})
    assert log.read_text() == f"{tmp_path / 'a'}\n{tmp_path / 'b.json'}\n"
    assert (tmp_path / "a").read_bytes() == b"1"


def test_a_file_that_is_not_the_runs_own_is_neither_logged_nor_killed_at(tmp_path, monkeypatch):
    log = tmp_path / "writes.log"
    monkeypatch.setenv(F.WRITE_LOG_ENV, str(log))
    monkeypatch.setenv(F.KILL_AT_WRITE_ENV, "1")  # would SIGKILL this process at a counted write
    monkeypatch.setattr(F, "_writes", 0)
    F.write_json(tmp_path / "cache.json", {"k": 1}, run_file=False)
    F.atomic_write(tmp_path / "c", lambda f: f.write(b"2"), run_file=False)
    assert not log.exists() and F._writes == 0
    assert json.loads((tmp_path / "cache.json").read_text()) == {"k": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "cache.json"]  # no temp file


def test_stale_temp_files_are_those_of_dead_writers_on_this_host(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    host = F._HOST
    names = {
        "dead": f".last.pt.tmp-{host}-{dead_pid}-0123abcd",
        "alive": f".last.pt.tmp-{host}-{os.getpid()}-0123abcd",
        "other_host": f".last.pt.tmp-otherhost-{dead_pid}-0123abcd",
        "bad_suffix": f".last.pt.tmp-{host}-{dead_pid}-xyz",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"")
    assert F.stale_temp_files(tmp_path) == [tmp_path / names["dead"]]
    assert F._pid_alive(os.getpid()) is True and F._pid_alive(dead_pid) is False


def test_asking_whether_a_process_lives_sends_it_no_signal():
    import signal

    got = []
    old = signal.signal(signal.SIGHUP, lambda sig, frame: got.append(sig))
    try:
        assert F._pid_alive(os.getpid()) is True  # signal 0: a check, nothing delivered
    finally:
        signal.signal(signal.SIGHUP, old)
    assert got == []


def test_a_process_of_another_user_counts_as_alive(monkeypatch):
    def denied(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(F.os, "kill", denied)
    assert F._pid_alive(12345) is True


def test_kill_at_write_fires_inside_the_nth_write_before_the_rename(tmp_path, monkeypatch):
    fired = []

    def fake_kill(pid, sig):  # record instead of dying
        fired.append((pid, sig, sorted(p.name for p in tmp_path.iterdir())))

    monkeypatch.setattr(F, "_writes", 0)
    monkeypatch.setattr(F.os, "kill", fake_kill)
    monkeypatch.setenv(F.KILL_AT_WRITE_ENV, "3")
    for i in range(4):
        F.atomic_write(tmp_path / f"w{i}", lambda f: f.write(b"x"))
    assert len(fired) == 1
    pid, sig, files = fired[0]
    import signal

    assert pid == os.getpid() and sig == signal.SIGKILL
    # during the third write: w0, w1 done, w2 only as its complete temp file
    assert len(files) == 3 and files[1:] == ["w0", "w1"]
    assert files[0].startswith(f".w2.tmp-{F._HOST}-{os.getpid()}-")
    assert F._writes == 4


def test_atomic_write_closes_what_it_opens(tmp_path):
    before = len(os.listdir("/proc/self/fd"))
    for i in range(5):
        F.atomic_write(tmp_path / f"f{i}", lambda f: f.write(b"x"))
    assert len(os.listdir("/proc/self/fd")) == before


def test_sniffing_files(tmp_path):
    st = tmp_path / "w.bin"
    header = b'{"a":1}'
    st.write_bytes(len(header).to_bytes(8, "little") + header)
    assert F.is_safetensors(st)
    st.write_bytes((len(header) + 1).to_bytes(8, "little") + header)  # header longer than file
    assert not F.is_safetensors(st)
    st.write_bytes(b"\x01\x00\x00\x00\x00\x00\x00\x00{")  # 9 bytes: header of 1, fits
    assert F.is_safetensors(st)
    st.write_bytes(b"\x01\x00\x00\x00\x00\x00\x00\x00")  # 8 bytes: too short
    assert not F.is_safetensors(st)
    st.write_bytes(b"\x01\x00\x00\x00\x00\x00\x00\x00[")
    assert not F.is_safetensors(st)
    assert F.is_safetensors(tmp_path / "missing.safetensors")  # by its name
    st.write_bytes(b"\x01\x00\x00\x00\x00\x00\x00\x00{")
    assert F._head(tmp_path / "missing.bin") == b""
    assert F._head(st, 3) == b"\x01\x00\x00"


def test_a_file_that_vanishes_while_sniffed_is_not_safetensors(tmp_path, monkeypatch):
    st = tmp_path / "w.bin"
    st.write_bytes(b"\x01\x00\x00\x00\x00\x00\x00\x00{")

    def gone(self, *args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(type(st), "stat", gone)
    assert F.is_safetensors(st) is False


def test_check_file_messages(tmp_path):
    with pytest.raises(UserError) as err:
        F.check_file(tmp_path / "nope.pt")
    assert str(err.value) == f"checkpoint file not found: {tmp_path / 'nope.pt'}"
    with pytest.raises(UserError) as err:
        F.check_file(tmp_path)
    assert str(err.value) == f"checkpoint path is a directory, not a file: {tmp_path}"
    (tmp_path / "a.pt").write_bytes(b"x")
    assert F.check_file(str(tmp_path / "a.pt")) == tmp_path / "a.pt"


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "the file is empty"),
    (b"plain text, not a checkpoint" * 4, "not a PyTorch or safetensors file"),
    (b"\x80\x02", "the file is truncated"),
])
def test_read_errors_give_the_reason(tmp_path, content, reason):
    p = tmp_path / "bad.pt"
    p.write_bytes(content)
    with pytest.raises(UserError) as err:
        F.load_torch(p)
    assert str(err.value) == f"cannot read checkpoint {p}: {reason}"


def test_a_truncated_zip_and_a_pickled_object_are_named(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(1000.0)}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(UserError) as err:
        F.load_torch(cut)
    assert str(err.value) == (f"cannot read checkpoint {cut}: the file is truncated or "
                              "corrupted (its zip archive has no central directory)")
    pickled = tmp_path / "obj.pt"
    torch.save(torch.nn.Identity(), pickled)
    with pytest.raises(UserError) as err:
        F.load_torch(pickled)
    assert str(err.value) == (
        f"cannot read checkpoint {pickled}: it stores Python objects "
        "(torch.nn.modules.linear.Identity) that torch.load(weights_only=True) refuses to "
        "unpickle; save plain state dicts (module.state_dict()) instead")


def test_reason_shortens_long_messages_to_their_first_sentence(tmp_path):
    p = tmp_path / "x.pt"
    p.write_bytes(b"PK\x05\x06 not really a zip")
    assert F._reason(p, ValueError("First sentence. Second one.")) == "ValueError: First sentence."
    zip_head = p.with_name("z.pt")
    zip_head.write_bytes(b"PK\x03\x04 a zip whose reader failed otherwise")
    assert F._reason(zip_head, ValueError("bad CRC")) == "ValueError: bad CRC"
    assert F._reason(p, ValueError("\x1b[31mred\x1b[0m\nmore")) == "ValueError: red"
    assert F._reason(p, ValueError("x" * 200)) == "ValueError: " + "x" * 157 + "..."
    assert F._reason(p, ValueError("x" * 160)) == "ValueError: " + "x" * 160
    assert F._reason(p, ValueError("x" * 161)) == "ValueError: " + "x" * 157 + "..."
    assert F._reason(p, ValueError("")) == "ValueError"
    assert F._reason(p, OSError(13, "Permission denied")) == "Permission denied"
    assert F._os_reason(OSError()) == "OSError"
