"""Atomic writes and weights-only reads of checkpoint files, with one-line error messages."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import secrets
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from ssl_ft.errors import DiskFullError, UserError, is_disk_full

__all__ = ["atomic_write", "check_file", "is_safetensors", "load_safetensors", "load_torch",
           "stale_temp_files"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object], *,
                 run_file: bool = True) -> Path:
    """Call ``write(file)`` on a temp file beside ``path``, fsync it and rename it onto ``path``.

    Readers see either the previous file or the complete new one, even if the process is killed
    mid-write (a killed process may leave a ``.NAME.tmp-HOST-PID-XXXXXXXX`` file behind, never a
    truncated ``path``; :func:`stale_temp_files` finds those of dead processes). On any exception the temp file is removed and ``path`` is untouched.
    A symlink at ``path`` is replaced by the new file; the file it pointed to is left alone (so
    a ``last.pt -> epoch3.pt`` link never overwrites ``epoch3.pt``). ``OSError`` (no
    permission) becomes :class:`UserError`, a full disk or quota :class:`DiskFullError`; other
    exceptions propagate unchanged. ``run_file=False`` marks a file that is not one of a run's
    own (a per-machine cache): ``tools/killtest.py``'s hooks neither count nor log it.
    """
    target = Path(path)
    if target.is_dir():
        raise UserError(f"cannot write {target}: it is a directory")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(target) from exc
        raise UserError(f"cannot write {target}: cannot create {parent}: {_os_reason(exc)}") from exc
    tmp = parent / f".{target.name}.tmp-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "xb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if run_file:
            _fault_point(target)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if is_disk_full(exc) or _torch_writer_out_of_space(exc, parent):
            raise DiskFullError(target) from exc
        if isinstance(exc, OSError):
            raise UserError(f"cannot write {target}: {_os_reason(exc)}") from exc
        raise
    _fsync_dir(parent)
    return target


#: What torch's zip writer (``torch.save``) raises instead of ``OSError(ENOSPC)`` when a write
#: comes up short: ``[enforce fail at inline_container.cc:...] . unexpected pos ...`` or
#: ``PytorchStreamWriter failed writing file ...``.
_TORCH_WRITER = ("inline_container", "PytorchStreamWriter")
#: Free bytes below which such a failure is taken for a full disk.
LOW_SPACE_BYTES = 64 * 2**20


def _torch_writer_out_of_space(exc: BaseException, folder: Path) -> bool:
    """Whether ``exc`` is torch's zip writer failing on a (nearly) full disk: its own
    ``RuntimeError`` carries no errno, so the free space of ``folder`` decides."""
    if not (isinstance(exc, RuntimeError) and any(m in str(exc) for m in _TORCH_WRITER)):
        return False
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE_BYTES
    except OSError:
        return False


#: Testing hooks (tools/killtest.py): ``SSL_FT_KILL_AT_WRITE=N`` makes the process SIGKILL itself
#: inside its N-th atomic write, after the temp file is complete and before the rename;
#: ``SSL_FT_WRITE_LOG=FILE`` appends the target of every atomic write to FILE.
KILL_AT_WRITE_ENV = "SSL_FT_KILL_AT_WRITE"
WRITE_LOG_ENV = "SSL_FT_WRITE_LOG"
_HOST = re.sub(r"[^A-Za-z0-9.]+", "_", socket.gethostname()) or "host"
_TEMP = re.compile(r"^\..+\.tmp-(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-[0-9a-f]{8}$")
_writes = 0


def _fault_point(target: Path) -> None:
    global _writes
    _writes += 1
    log = os.environ.get(WRITE_LOG_ENV)
    if log:
        with open(log, "a") as fh:
            fh.write(f"{target}\n")
    wanted = os.environ.get(KILL_AT_WRITE_ENV)
    if wanted and wanted.isdigit() and _writes == int(wanted):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The temp files of :func:`atomic_write` in ``folder`` whose writer, a process of this
    host, no longer runs (killed mid-write); files of other hosts are left alone."""
    found = []
    for path in Path(folder).glob(".*.tmp-*"):
        m = _TEMP.match(path.name)
        if m and m["host"] == _HOST and not _pid_alive(int(m["pid"])):
            found.append(path)
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def write_json(path: str | os.PathLike[str], obj: object, *, run_file: bool = True) -> Path:
    """Write ``obj`` as indented JSON through :func:`atomic_write` (a reader never sees half a
    ``metrics.json``; ``run_file`` as there)."""
    text = json.dumps(obj, indent=2) + "\n"
    return atomic_write(path, lambda file: file.write(text.encode()), run_file=run_file)


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_file(path: str | os.PathLike[str]) -> Path:
    """``Path(path)`` if it is an existing regular file, else :class:`UserError`."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"checkpoint file not found: {p}")
    if p.is_dir():
        raise UserError(f"checkpoint path is a directory, not a file: {p}")
    return p


def _head(path: Path, n: int = 16) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(n)
    except OSError:
        return b""


def is_safetensors(path: Path) -> bool:
    """True for a ``.safetensors`` name or a file that starts like one (u64 header size + ``{``)."""
    if path.suffix == ".safetensors":
        return True
    head = _head(path, 9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    try:
        return 8 + int.from_bytes(head[:8], "little") <= path.stat().st_size
    except OSError:
        return False


def load_torch(path: Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, map_location, weights_only=True)``; failures become one-line UserErrors."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc) or not _head(path).startswith((b"PK", b"\x80")):
            raise UserError(f"cannot read checkpoint {path}: {_reason(path, exc)}") from exc
        found = _GLOBAL.search(str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise UserError(
            f"cannot read checkpoint {path}: it stores Python objects{what} that "
            "torch.load(weights_only=True) refuses to unpickle; save plain state dicts "
            "(module.state_dict()) instead"
        ) from exc
    except Exception as exc:
        raise UserError(f"cannot read checkpoint {path}: {_reason(path, exc)}") from exc


def load_safetensors(path: Path, map_location: Any = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Tensors of a safetensors file and the ssl_ft metadata stored in it (``None`` if absent)."""
    from safetensors import safe_open

    device = str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu"
    try:
        with safe_open(str(path), framework="pt", device=device) as file:
            header = file.metadata() or {}
            tensors = {key: file.get_tensor(key) for key in file.keys()}
    except Exception as exc:
        raise UserError(f"cannot read checkpoint {path}: {_reason(path, exc)}") from exc
    if "ssl_ft" not in header:
        return tensors, None
    try:
        meta = json.loads(header["ssl_ft"])
    except ValueError as exc:
        raise UserError(f"cannot read checkpoint {path}: its 'ssl_ft' metadata is not JSON") from exc
    if not isinstance(meta, dict):
        raise UserError(f"cannot read checkpoint {path}: its 'ssl_ft' metadata is not a JSON object")
    return tensors, meta


def _reason(path: Path, exc: BaseException) -> str:
    """A short, one-line reason why ``path`` could not be read."""
    head = _head(path)
    if isinstance(exc, OSError):
        return _os_reason(exc)
    if not head:
        return "the file is empty"
    message = _ANSI.sub("", str(exc)).strip()
    if head.startswith(b"PK\x03\x04") and "central directory" in message:
        return "the file is truncated or corrupted (its zip archive has no central directory)"
    if isinstance(exc, EOFError):
        return "the file is truncated"
    if not head.startswith((b"PK", b"\x80")) and not is_safetensors(path):
        return "not a PyTorch or safetensors file"
    first = re.split(r"(?<=\.)\s|\n", message, maxsplit=1)[0].strip() if message else ""
    if len(first) > 160:
        first = first[:157] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
