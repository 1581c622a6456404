"""What resuming a run needs besides its weights and optimiser state.

* :func:`check_same_recipe`: a resumed run continues the recipe it was started with. The whole
  resolved recipe is compared with the one stored in ``last.pt``; only the keys that do not
  change what is computed may differ (where the output goes, threads, device and precision,
  where the data lives, the online evaluation), and the first other difference is refused
  with one line naming the key.
* :func:`rewrite_jsonl`: ``metrics.jsonl`` is rewritten from the history stored in ``last.pt``
  when a run (re)starts, so that the rows of an epoch that was cut short (or half-written) by a
  kill are not repeated: the file always ends at the checkpoint's epoch.
* :func:`checkpoint_complete`: whether a run's final checkpoint is there, readable and of the
  right epoch (a finished run resumed after its ``checkpoint.pt`` was lost writes it again).

Example:
    >>> check_same_recipe(ckpt.meta["recipe"], resolved_recipe(cfg, info), PRETRAIN_MAY_CHANGE,
    ...                   "runs/r1/last.pt")
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from ssl_ft.checkpoint import load_checkpoint
from ssl_ft.checkpoint._files import atomic_write
from ssl_ft.errors import UserError

__all__ = ["PRETRAIN_MAY_CHANGE", "check_same_recipe", "checkpoint_complete", "flatten",
           "rewrite_jsonl"]

#: Pretraining recipe keys (and sections) that may change on ``--resume``: they do not change
#: the weights a run computes (``train.precision``, ``train.channels_last`` and ``train.compile``
#: change the order of the arithmetic; they may change so that a run can move between a GPU and
#: a CPU).
PRETRAIN_MAY_CHANGE = ("out", "data.root", "data.download", "train.threads", "train.device",
                       "train.precision", "train.channels_last", "train.compile",
                       "train.save_every", "eval")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and other values are leaves)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _may_change(key: str, may_change: Collection[str]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in may_change)


def check_same_recipe(old: Mapping[str, Any], new: Mapping[str, Any],
                      may_change: Collection[str], path: str | os.PathLike) -> None:
    """Raise a :class:`UserError` naming the first dotted key (outside ``may_change``, where a
    section name covers its keys) whose value differs between the stored recipe ``old`` and
    ``new``. Keys the stored recipe lacks (a checkpoint from an older ssl_ft) are skipped."""
    was, now = flatten(old), flatten(new)
    for key in sorted(set(was) | set(now)):
        if _may_change(key, may_change) or key not in was:
            continue
        if was[key] != now.get(key):
            allowed = ", ".join(may_change)
            raise UserError(f"cannot resume {path}: it was made with {key}={was[key]!r}, the "
                            f"recipe now says {now.get(key)!r} (only {allowed} may change on "
                            "resume; start a new run in another folder instead)")


def rewrite_jsonl(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``rows`` as JSON lines (``json.dumps`` each, as the training loops append them),
    atomically; an empty ``rows`` leaves an empty file."""
    text = "".join(json.dumps(dict(row)) + "\n" for row in rows)
    return atomic_write(path, lambda file: file.write(text.encode()))


def checkpoint_complete(path: str | os.PathLike, epoch: int) -> bool:
    """True if ``path`` loads as an ssl_ft checkpoint (finite weights) of epoch ``epoch``."""
    if not Path(path).is_file():
        return False
    try:
        return int(load_checkpoint(path).meta["epoch"]) == int(epoch)
    except (UserError, TypeError, ValueError):
        return False
