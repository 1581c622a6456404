"""Reuse the finished fine-tuning runs of other studies (``reuse:`` in a study recipe).

Two studies often share runs: ``recipes/study/auto.yaml``'s PneumoniaMNIST cells at 100 % and
10 % of the labels are Khan & Fang's (the same checkpoints, selections, budgets and seeds).
Running them twice is waste (issue 16, item 4). Before it runs anything, the study looks for
each unfinished fine-tuning cell in the ``reuse`` folders (other studies' ``out``): a finished
run whose resolved configuration (``metrics.json["recipe"]``: every ``FinetuneConfig`` field,
defaults included; for a ``layers: auto`` run, what it asked for, not what it chose, and the
chooser's options with their defaults as that run resolved them: a run of an older rule is
not reused for a cell of the new one) equals the cell's, except for ``out`` and ``threads``
(the thread count changes the order of float sums, not the run; so did the switch to the
fused Adam kernel, which the key does not see either), with the same checkpoint file (same
real path, not modified since that run ended), is copied into the cell's folder with a ``reused_from.txt``
naming its source. Anything else (another learning rate, seed, a retrained checkpoint) runs.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from ssl_ft.runlock import LOCK_NAME, is_temp_file
from ssl_ft.study.grid import Cell

__all__ = ["reuse_cells", "run_key"]

#: Fields that do not change what a run computes.
IGNORED = ("out", "threads")


def run_key(config: dict[str, Any]) -> str:
    """The canonical text of a fine-tuning configuration (a cell's, or a finished run's
    ``recipe``), without :data:`IGNORED` fields, checkpoint paths resolved."""
    from ssl_ft.config import from_dict, to_dict
    from ssl_ft.finetune import FinetuneConfig

    full = to_dict(from_dict(FinetuneConfig, {k: v for k, v in config.items()
                                              if k not in IGNORED}))
    for k in IGNORED:
        full.pop(k, None)
    if "auto" in (full.get("layers"), full.get("truncate")):
        from ssl_ft.auto_layers import AutoConfig

        full["auto_args"] = to_dict(from_dict(AutoConfig, full.get("auto_args") or {},
                                              where="auto_args"))
    else:
        full.pop("auto_args", None)  # read only by the chooser
    ckpt = full.get("checkpoint")
    if isinstance(ckpt, str) and ckpt != "none":
        full["checkpoint"] = os.path.realpath(ckpt)
    return json.dumps(full, sort_keys=True, default=str)


def _index(folders: list[str]) -> dict[str, Path]:
    """``{run key: run folder}`` of the finished fine-tuning runs under the folders."""
    import dataclasses

    from ssl_ft.auto_layers import AutoConfig

    auto_fields = {f.name for f in dataclasses.fields(AutoConfig)}
    index: dict[str, Path] = {}
    for root in folders:
        for path in sorted(Path(root).glob("cells/finetune/**/metrics.json")):
            try:
                m = json.loads(path.read_text())
                # an auto run's recipe holds the values it chose: it stands for what it asked,
                # with the chooser options it resolved (none recorded: an older rule, skipped)
                auto = m.get("auto") or {}
                recipe = {**m["recipe"], **auto.get("requested", {})}
                if auto:
                    recipe["auto_args"] = auto["auto_args"]
                    if set(recipe["auto_args"]) != auto_fields:  # options added since
                        continue
                index.setdefault(run_key(recipe), path.parent)
            except (OSError, ValueError, KeyError, TypeError):  # not a finished run we can read
                continue
    return index


def _checkpoint_older(config: dict[str, Any], metrics: Path) -> bool:
    ckpt = config.get("checkpoint")
    if not isinstance(ckpt, str) or ckpt == "none":
        return True
    try:
        return os.path.getmtime(ckpt) <= os.path.getmtime(metrics)
    except OSError:
        return False


def reuse_cells(cells: list[Cell], out: str | Path, folders: list[str]) -> int:
    """Copy the finished runs of ``folders`` that equal unfinished fine-tuning cells of this
    study (tuning trials and tuned cells excepted: their values are chosen later) into the
    cells' folders; returns how many."""
    if not folders:
        return 0
    index, n = _index(folders), 0
    for cell in cells:
        folder = cell.folder(out)
        if cell.kind != "finetune" or cell.trial is not None or cell.tune \
                or (folder / "metrics.json").is_file():
            continue
        source = index.get(run_key(cell.config))
        if source is None or source.resolve() == folder.resolve() \
                or not _checkpoint_older(cell.config, source / "metrics.json"):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for f in source.iterdir():
            if f.is_file() and f.name != LOCK_NAME and not is_temp_file(f) \
                    and f.name != "metrics.json":
                shutil.copy2(f, folder / f.name)
        (folder / "reused_from.txt").write_text(f"{source.resolve()}\n")
        shutil.copy2(source / "metrics.json", folder / "metrics.json")  # last: marks it done
        n += 1
    if n:
        print(f"reused {n} finished run(s) from {', '.join(folders)}", file=sys.stderr)
    return n
