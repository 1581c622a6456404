"""A run-folder lock: one process at a time writes into a run folder.

Pretraining, fine-tuning, fusion, a study and each of its cells lock their run folder while they
write into it. The lock is the file ``<folder>/.lock``, held with ``flock(2)``: the kernel drops
it when its holder exits or is killed, so a lock never outlives its process, and the file
records the holder (pid, host, start time, command) for the message a second process gets::

    error: run folder runs/r1 is in use by pid 4242 on node7 since 2024-05-01T12:00:00+02:00
    (python tools/pretrain.py ...); wait for it to end or choose another out

A ``.lock`` file whose ``flock`` is free was left by a process that died (``SIGKILL``, a power
cut): it is recognised as stale, reported in one line and taken over. A clean exit deletes the
file (and the folder, if the lock created it and nothing was written). Taking a lock also
deletes the temporary files that killed writers left in the folder
(``.NAME.tmp-HOST-PID-XXXXXXXX``, see :func:`ssl_ft.checkpoint._files.atomic_write`): only the holder writes there, so they are
garbage.

Locks are re-entrant within a process (the study tool locks its folder around
:func:`ssl_ft.study.run_study`, which locks it too). On network file systems ``flock`` works
across hosts where the mount supports locks (NFSv4, NFSv3 with lockd); without ``fcntl``
(Windows) a lock whose recorded pid no longer runs on this host is taken as stale.

Example:
    >>> with RunLock("runs/r1"):
    ...     train_and_write_checkpoints()
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from ssl_ft.errors import UserError, writing

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = ["LOCK_NAME", "RunLock", "holder_of", "is_temp_file"]

LOCK_NAME = ".lock"
_HELD: dict[Path, list] = {}  # folder -> [fd, depth] of the locks this process holds


def is_temp_file(path: Path) -> bool:
    """True for the temporary files of :func:`~ssl_ft.checkpoint._files.atomic_write`."""
    return path.name.startswith(".") and ".tmp-" in path.name


def holder_of(folder: str | os.PathLike) -> dict[str, Any] | None:
    """What ``<folder>/.lock`` says about its holder (``None`` if absent or unreadable)."""
    try:
        info = json.loads((Path(folder) / LOCK_NAME).read_text() or "null")
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process"
    text = f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')}"
    return text + (f" ({info['command']})" if info.get("command") else "")


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError) as exc:
        return isinstance(exc, PermissionError)
    return True


class RunLock:
    """``with RunLock(folder):`` holds ``folder``'s lock (creating the folder) or raises a
    :class:`UserError` naming the holder. ``enabled=False`` (e.g. DDP ranks other than 0,
    which write nothing) makes it a no-op."""

    def __init__(self, folder: str | os.PathLike, *, enabled: bool = True) -> None:
        self.folder = Path(folder).expanduser()
        self.enabled = enabled
        self.stale: dict[str, Any] | None = None  # the dead holder whose lock was taken over
        self._created: list[Path] = []

    def __enter__(self) -> RunLock:
        if self.enabled:
            self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.release()

    def _key(self) -> Path:
        return self.folder.resolve()

    def acquire(self) -> None:
        self._make_folder()
        key = self._key()
        if key in _HELD:
            _HELD[key][1] += 1
            return
        try:
            fd = self._lock_file()
        except BaseException:
            self._remove_created()
            raise
        _HELD[key] = [fd, 1]
        self._clean_temp_files()

    def release(self) -> None:
        key = self._key()
        held = _HELD.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] > 0:
            return
        del _HELD[key]
        with contextlib.suppress(OSError):
            (self.folder / LOCK_NAME).unlink()
        os.close(held[0])  # after the unlink: a waiting process then sees a new inode
        self._remove_created()

    def _make_folder(self) -> None:
        missing = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create run folder {self.folder}: "
                            f"{exc.strerror or exc}") from None
        self._created = missing  # deepest first

    def _remove_created(self) -> None:
        for folder in self._created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
        self._created = []

    def _lock_file(self) -> int:
        path = self.folder / LOCK_NAME
        for _ in range(100):  # retried while a releasing holder unlinks the file under us
            with writing(path):  # a full disk: one line naming the lock file
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if not self._try_lock(fd, path):
                    raise UserError(f"run folder {self.folder} is in use by "
                                    f"{_describe(holder_of(self.folder))}; wait for it to end "
                                    "or choose another out")
                if os.fstat(fd).st_ino != os.stat(path).st_ino:
                    raise FileNotFoundError(path)
            except FileNotFoundError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            try:
                self._record(fd)
            except BaseException:
                os.close(fd)
                raise
            return fd
        raise UserError(f"cannot lock run folder {self.folder}: {path} keeps changing")

    def _try_lock(self, fd: int, path: Path) -> bool:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True
        info = holder_of(self.folder)  # no flock: a recorded live pid on this host holds it
        return not (info and info.get("host") == socket.gethostname()
                    and _pid_alive(info.get("pid")) and info.get("pid") != os.getpid())

    def _record(self, fd: int) -> None:
        previous = os.read(fd, 4096)
        if previous.strip():
            try:
                self.stale = json.loads(previous)
            except ValueError:
                self.stale = {}
            print(f"note: run folder {self.folder}: the lock of {_describe(self.stale)} is stale "
                  "(that process is gone); taking it over", file=sys.stderr)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.now().astimezone().isoformat(timespec="seconds"),
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]}
        with writing(self.folder / LOCK_NAME):
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(info).encode())
            os.fsync(fd)

    def _clean_temp_files(self) -> None:
        for path in self.folder.iterdir():
            if is_temp_file(path) and path.is_file():
                with contextlib.suppress(OSError):
                    path.unlink()
