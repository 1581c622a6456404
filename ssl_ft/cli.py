"""Shared plumbing for the scripts in ``tools/``: one-line errors and exit statuses.

Exit status 0 on success; 2 with ``error: <one line>`` on bad input (:class:`UserError`, and
bad flags: the tools' :class:`ArgumentParser` reports them in one line too, without argparse's
usage block); 3 with ``error: <one line>`` when training or evaluation met a NaN or an
infinity (:class:`~ssl_ft.finite.NonFiniteError`; nothing non-finite was written and the last
checkpoint is the last good one); 130 when interrupted; 1 for a study with failed cells. A full
disk or quota is status 2 with ``error: cannot write PATH: no space left on device; ...``
(:class:`~ssl_ft.errors.DiskFullError`; the files written before it are intact).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import NoReturn

from ssl_ft.errors import DiskFullError, UserError, is_disk_full
from ssl_ft.finite import EXIT_NONFINITE, NonFiniteError

__all__ = ["ArgumentParser", "add_recipe_flags", "recipe_and_overrides", "run"]


def run(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)``; turn a :class:`UserError` into ``error: ...`` on stderr and status 2,
    a :class:`~ssl_ft.finite.NonFiniteError` into ``error: ...`` and status 3.

    Bad flags of an :class:`ArgumentParser` are a :class:`UserError` too; a plain argparse
    parser exits with status 2 itself. A full disk is status 2 too: a write the library did not
    name (an ``OSError`` with ``ENOSPC``/``EDQUOT`` from a third-party writer) is reported with
    the file the error names, and a background thread's full-disk error (TensorBoard's event
    writer) prints nothing of its own, as the main thread reports it at its next write.
    Anything else that escapes is a bug in ssl_ft and keeps its traceback.
    """
    try:
        with _quiet_disk_full_threads():
            main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        print(f"error: {DiskFullError(exc.filename or 'a file')}", file=sys.stderr)
        return 2
    except NonFiniteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NONFINITE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


@contextlib.contextmanager
def _quiet_disk_full_threads() -> Iterator[None]:
    """No traceback from a thread that died of a full disk (its owner re-raises the error in
    the main thread, which :func:`run` turns into one line); other thread errors as before."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or not is_disk_full(args.exc_value):
            previous(args)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors (an unknown flag, a value of the wrong type, a
    missing required flag) are one line: ``error: PROG: MESSAGE (PROG --help lists the
    options)`` and exit status 2 through :func:`run`, instead of the usage block and the error.
    """

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message} ({self.prog} --help lists the options)")


def add_recipe_flags(parser: argparse.ArgumentParser, flags: Mapping[str, dict]) -> None:
    """Add ``--some-key`` flags that stand for the recipe key ``some_key`` (default None: only
    given flags override the recipe), plus the positional ``RECIPE.yaml | key=value`` items."""
    parser.add_argument("items", nargs="*", metavar="RECIPE.yaml | key=value",
                        help="an optional YAML recipe, then recipe overrides")
    for flag, kw in flags.items():
        parser.add_argument(flag, dest=flag[2:].replace("-", "_"), default=None, **kw)


def recipe_and_overrides(args: argparse.Namespace,
                         flags: Sequence[str]) -> tuple[str | None, list[str]]:
    """The recipe path and the ``key=value`` overrides: the positional ones first, then one per
    given flag (so flags win over both the recipe and positional overrides). ``flags`` are
    ``--some-key`` flags or plain ``some_key`` destinations."""
    recipe, overrides = None, []
    for item in args.items:
        if "=" in item:
            overrides.append(item)
        elif recipe is None:
            recipe = item
        else:
            raise UserError(f"unexpected argument {item!r}: give one recipe, then key=value")
    for flag in flags:
        key = flag.lstrip("-").replace("-", "_")
        value = getattr(args, key)
        if value is None:
            continue
        if isinstance(value, list):  # a repeated flag: a YAML list
            import yaml

            value = yaml.safe_dump(value, default_flow_style=True).strip()
        overrides.append(f"{key}={value}")
    return recipe, overrides
