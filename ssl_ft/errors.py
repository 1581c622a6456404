"""User-facing errors.

Every mistake a user can make (a bad recipe key, a missing file, an unreadable image, an
impossible layer range, a checkpoint that does not fit its architecture) raises
:class:`UserError` with a one-line message that names the bad value. The command-line tools catch
it, print ``error: <message>`` and exit with status 2 (:func:`ssl_ft.cli.run`).

``UserError`` subclasses ``ValueError``, so library callers that already catch ``ValueError``
keep working.
"""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """A mistake in user input; the message is one line and names the bad value."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
