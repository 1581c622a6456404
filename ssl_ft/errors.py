"""User-facing errors.

Every mistake a user can make (a bad recipe key, a missing file, an unreadable image, an
impossible layer range, a checkpoint that does not fit its architecture) raises
:class:`UserError` with a one-line message that names the bad value. The command-line tools catch
it, print ``error: <message>`` and exit with status 2 (:func:`ssl_ft.cli.run`).

``UserError`` subclasses ``ValueError``, so library callers that already catch ``ValueError``
keep working.

A full disk is not a bug either: a write that fails with ``ENOSPC`` (or ``EDQUOT``, a full
quota) raises :class:`DiskFullError`, a :class:`UserError` naming the file
(``cannot write runs/r1/last.pt: no space left on device; ...``). Every checkpoint and result
file is written atomically (:func:`ssl_ft.checkpoint.atomic_write`), so what was written before
stays readable and the run resumes from it once there is space again.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

__all__ = ["DiskFullError", "UserError", "is_disk_full", "writing"]


class UserError(ValueError):
    """A mistake in user input; the message is one line and names the bad value."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


#: the errno values of a full disk or a full quota
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is an ``OSError`` of a full disk or quota (or a :class:`DiskFullError`)."""
    return isinstance(exc, DiskFullError) or (isinstance(exc, OSError)
                                              and exc.errno in DISK_FULL)


class DiskFullError(UserError):
    """A write to ``path`` failed because the disk (or the quota) is full.

    Example:
        >>> raise DiskFullError("runs/r1/last.pt")
        DiskFullError: cannot write runs/r1/last.pt: no space left on device; free some space,
        then resume (files written before are intact)
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        super().__init__(f"cannot write {self.path}: no space left on device; free some space, "
                         "then resume (files written before are intact)")

    def __reduce__(self):  # picklable across a process pool (the message is rebuilt from path)
        return type(self), (self.path,)


@contextlib.contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Around a plain (non-atomic) write to ``path``: an ``OSError`` becomes a one-line
    :class:`UserError` naming ``path`` (:class:`DiskFullError` for a full disk or quota)."""
    try:
        yield
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(path) from exc
        raise UserError(f"cannot write {path}: {exc.strerror or type(exc).__name__}") from exc
