"""Where a study's wall time went (issue 16, item 4): ``profile.md``, ``profile.json`` and
``profile.png`` from the runner's ``timing.jsonl`` (every cell's wall seconds, every call's
wall time) and each fine-tuning cell's phase seconds (``metrics.json["profile_s"]``,
:mod:`ssl_ft.profile`).

Rows group the fine-tuning cells by data, labels and selection (fusion cells by data and
labels); columns are the phases a run meets: the layer chooser (``auto``), ``setup`` (data,
model, checkpoint, leakage guard), the frozen-prefix cache, the linear probe, training (and,
within it, the first epoch's warm-up: its time above the median epoch), validation, checkpoint
writes, the final test evaluation, and ``other`` (the rest of the run). The study line adds
what happened outside the cells: input checks, leakage guards, worker start-up, pruning.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import median
from typing import Any

from ssl_ft.profile import PHASES
from ssl_ft.study.grid import Cell

__all__ = ["study_profile", "write_profile"]

COLUMNS = (*PHASES, "other")


def _timing(out: Path) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """``({cell id: last wall seconds}, [runner calls])`` from ``out/timing.jsonl``; a cell's
    seconds only if its own process measured them (``own``; lines written before that field
    existed timed pooled cells from their queueing: left out)."""
    cells: dict[str, float] = {}
    calls: list[dict[str, Any]] = []
    path = out / "timing.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if "cell" in rec and rec.get("own"):
                cells[rec["cell"]] = float(rec["wall_s"])
            elif "study" in rec:
                calls.append(rec)
    return cells, calls


def _warmup(m: dict[str, Any]) -> float:
    """The first epoch's seconds above the median epoch's (epoch time = train images / rate)."""
    rates = [h["images_per_s"] for h in m.get("history", []) if h.get("images_per_s")]
    if len(rates) < 2:
        return 0.0
    times = [m.get("n_train", 0) / r for r in rates]
    return max(0.0, times[0] - median(times[1:]))


def _group(cell: Cell, m: dict[str, Any]) -> str:
    frac = f"{float(m.get('label_fraction', 1.0)):.0%}"
    if cell.kind == "ensemble":
        return f"{m.get('data')} {frac} fusion"
    t = float(m.get("truncate", 100))
    sel = f"{m.get('layers')}" + (f" t{t:g}" if t < 100 else "")
    if "auto" in m:
        sel = "auto"
    return f"{m.get('data')} {frac} {sel}"


def study_profile(cells: list[Cell], out: str | Path) -> dict[str, Any]:
    """Per group of cells: count, wall seconds and seconds per phase (summed over cells); and the
    study's wall time, the cells' total and what was spent outside them."""
    out = Path(out)
    walls, calls = _timing(out)
    groups: dict[str, dict[str, float]] = {}
    for cell in cells:
        path = cell.folder(out) / "metrics.json"
        if cell.kind == "pretrain" or cell.trial is not None or not path.is_file():
            continue
        m = json.loads(path.read_text())
        wall = m.get("wall_time_s") or walls.get(cell.id)  # fine-tuning times itself
        if wall is None:
            continue
        g = groups.setdefault(_group(cell, m), {"cells": 0, "wall_s": 0.0, "warmup": 0.0,
                                                **dict.fromkeys(COLUMNS, 0.0)})
        g["cells"] += 1
        g["wall_s"] += wall
        phases = m.get("profile_s", {})
        for name in PHASES:
            g[name] += phases.get(name, 0.0)
        g["other"] += max(0.0, wall - sum(phases.get(n, 0.0) for n in PHASES))
        g["warmup"] += _warmup(m)
    cells_s = sum(g["wall_s"] for g in groups.values())
    study_s = sum(c["wall_s"] for c in calls)
    workers = max((c.get("workers", 1) for c in calls), default=1)
    return {"groups": groups, "cells_s": cells_s, "study_s": study_s, "workers": workers,
            "calls": len(calls),
            "outside_s": max(0.0, study_s - cells_s / workers) if calls else None}


def _md(prof: dict[str, Any]) -> list[str]:
    groups = prof["groups"]
    used = [c for c in COLUMNS if any(g[c] > 0 for g in groups.values())]
    total = {c: sum(g[c] for g in groups.values()) for c in (*used, "wall_s", "warmup")}
    lines = ["# Where the time went", "",
             f"Cells: {sum(g['cells'] for g in groups.values())}, {prof['cells_s'] / 60:.1f} min "
             "of cell wall time in all."]
    if prof["study_s"]:
        lines[-1] += (f" The study ran {prof['study_s'] / 60:.1f} min of wall time over "
                      f"{prof['calls']} call(s) of the runner with {prof['workers']} worker(s); "
                      f"outside the cells (input checks, leakage guards, worker start-up, "
                      f"idle workers): {prof['outside_s'] / 60:.1f} min.")
    lines += ["", "Wall seconds summed over the cells of each group; `warm-up` (part of `train`) "
              "is the first epoch's time above the median epoch's.", "",
              "| group | cells | wall s | " + " | ".join(used) + " | warm-up |",
              "|---|" + "---|" * (len(used) + 3)]
    for name, g in [*groups.items(), ("**all**", {"cells": sum(x["cells"] for x in
                                                                groups.values()), **total})]:
        lines.append(f"| {name} | {g['cells']} | {g['wall_s']:.0f} | "
                     + " | ".join(f"{g[c]:.0f}" for c in used) + f" | {g['warmup']:.0f} |")
    if total["wall_s"] > 0:
        lines += ["", "Share of the cells' wall time: " + ", ".join(
            f"{c} {total[c] / total['wall_s']:.1%}" for c in used) + "."]
    return lines


def _plot(prof: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = prof["groups"]
    used = [c for c in COLUMNS if any(g[c] > 0 for g in groups.values())]
    names = list(groups)
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(names) + 1.5))
    left = [0.0] * len(names)
    for c in used:
        vals = [groups[n][c] / 60 for n in names]
        ax.barh(names, vals, left=left, label=c)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("wall minutes (summed over the group's cells)")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Where the study's time went")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_profile(cells: list[Cell], out: str | Path) -> list[Path]:
    """Write ``profile.json``, ``profile.md`` and ``profile.png`` (when any cell has finished)
    into ``out``; returns the files written."""
    out = Path(out)
    prof = study_profile(cells, out)
    if not prof["groups"]:
        return []
    from ssl_ft.checkpoint import write_json

    files = [out / "profile.json", out / "profile.md", out / "profile.png"]
    write_json(files[0], prof)
    files[1].write_text("\n".join(_md(prof)) + "\n")
    _plot(prof, files[2])
    return files
