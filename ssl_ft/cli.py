"""Shared plumbing for the scripts in ``tools/``: exit status 2 with a one-line message on bad input."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from ssl_ft.errors import UserError

__all__ = ["run"]


def run(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)``; turn a :class:`UserError` into ``error: ...`` on stderr and status 2.

    ``argparse`` already exits with status 2 on bad flags. Anything else that escapes is a bug in
    ssl_ft and keeps its traceback.
    """
    try:
        main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
