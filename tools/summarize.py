#!/usr/bin/env python
"""Summarise fine-tuning runs: mean and spread of test/val AUC and ACC over seeds.

    python tools/summarize.py runs/ft --by model layers truncate strategy
    python tools/summarize.py runs/ft/simclr_*_s? --by layers --csv table.csv

Reads every DIR/metrics.json under the given folders. Grouping keys are metrics.json keys
(layers, truncate, strategy, label_fraction, data, ...) plus ``model``: the pretraining method
of the checkpoint (simclr, genesis, ...), or none / imagenet / state_dict.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssl_ft.cli import run
from ssl_ft.errors import UserError

METRICS = (("test", "auc"), ("test", "acc"), ("val", "auc"), ("val", "acc"))


def load_runs(paths: Sequence[str]) -> list[dict]:
    """Every metrics.json in or under ``paths``, with the derived key ``model``."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files.extend(sorted(p.rglob("metrics.json")))
        else:
            raise UserError(f"{p} does not exist")
    runs = []
    for f in files:
        m = json.loads(f.read_text())
        src = m.get("source", {})
        m["model"] = src.get("method") or src.get("kind", "?")
        m["run"] = str(f.parent)
        runs.append(m)
    if not runs:
        raise UserError(f"no metrics.json found under {', '.join(paths)}")
    return runs


def summarize(runs: list[dict], by: Sequence[str]) -> list[dict]:
    """One row per group: the keys, ``n`` and ``<split>_<metric>_mean/_std`` (sample std)."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        missing = [k for k in by if k not in r]
        if missing:
            raise UserError(f"{r['run']}/metrics.json has no key {missing[0]!r}")
        groups.setdefault(tuple(str(r[k]) for k in by), []).append(r)
    rows = []
    for key, members in groups.items():
        row: dict = dict(zip(by, key, strict=True))
        row["n"] = len(members)
        for split, metric in METRICS:
            values = np.array([m[split][metric] for m in members], dtype=float)
            row[f"{split}_{metric}_mean"] = float(values.mean())
            row[f"{split}_{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def markdown(rows: list[dict], by: Sequence[str]) -> str:
    head = [*by, "n", "test AUC", "test ACC", "val AUC", "val ACC"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r[k] for k in by] + [str(r["n"])]
        cells += [f"{r[f'{s}_{m}_mean']:.3f} ± {r[f'{s}_{m}_std']:.3f}" for s, m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="summarize.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run folders, folders of runs, metrics.json")
    parser.add_argument("--by", nargs="+", default=["model", "layers", "truncate", "strategy"],
                        help="grouping keys (default: model layers truncate strategy)")
    parser.add_argument("--csv", metavar="FILE", help="also write the table as CSV")
    args = parser.parse_args(argv)
    rows = summarize(load_runs(args.paths), args.by)
    print(markdown(rows, args.by))
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    sys.exit(run(main))
