#!/usr/bin/env python
"""Summarise fine-tuning runs: mean and spread of test/val AUC and ACC over seeds.

    python tools/summarize.py runs/ft --by model layers truncate strategy
    python tools/summarize.py runs/ft/simclr_*_s? --by layers --csv table.csv --plot bars.png

Reads every DIR/metrics.json under the given folders. Grouping keys are metrics.json keys
(layers, truncate, strategy, label_fraction, data, ...) plus ``model``: the pretraining method
of the checkpoint (simclr, genesis, ...), or none / imagenet / state_dict.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
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
        if p.is_file() and p.suffix == ".json":
            files.append(p)
        elif p.is_file():  # e.g. a run's .log caught by a shell glob
            print(f"skipping {p} (not a .json file)", file=sys.stderr)
        elif p.is_dir():
            files.extend(sorted(p.rglob("metrics.json")))
        else:
            raise UserError(f"{p} does not exist")
    runs = []
    for f in files:
        try:
            m = json.loads(f.read_text())
        except json.JSONDecodeError:
            raise UserError(f"{f} is not valid JSON") from None
        src = m.get("source", {})
        m["model"] = src.get("method") or src.get("kind", "?")
        m["run"] = str(f.parent)
        runs.append(m)
    if not runs:
        raise UserError(f"no metrics.json found under {', '.join(paths)}")
    return runs


def summarize(runs: list[dict], by: Sequence[str]) -> list[dict]:
    """One row per group, sorted by the keys (numbers by value): the keys, ``n`` and
    ``<split>_<metric>_mean/_std`` (sample std)."""
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
    return sorted(rows, key=lambda r: [_natural(str(r[k])) for k in by])


def _natural(text: str) -> list:
    """Sort key that orders numbers by value: 0-25 < 0-75 < 0-100 < 25-50."""
    return [float(t) if t.replace(".", "", 1).isdigit() else t
            for t in re.split(r"(\d+(?:\.\d+)?)", text) if t]


def markdown(rows: list[dict], by: Sequence[str]) -> str:
    head = [*by, "n", "test AUC", "test ACC", "val AUC", "val ACC"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r[k] for k in by] + [str(r["n"])]
        cells += [f"{r[f'{s}_{m}_mean']:.3f} ± {r[f'{s}_{m}_std']:.3f}" for s, m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], by: Sequence[str], path: str) -> None:
    """Grouped bars of test AUC and ACC (mean, error bar = std over seeds): one colour per value
    of the first ``--by`` key, one group of bars per combination of the others."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hue_key, rest = by[0], list(by[1:])
    hues = list(dict.fromkeys(r[hue_key] for r in rows))
    xs = list(dict.fromkeys(" ".join(str(r[k]) for k in rest) for r in rows)) or [""]
    width = 0.8 / len(hues)
    fig, axes = plt.subplots(1, 2, figsize=(max(7, 1.1 * len(xs) * 2), 3.8))
    for ax, metric in zip(axes, ("auc", "acc"), strict=True):
        lows = []
        for j, hue in enumerate(hues):
            for i, x in enumerate(xs):
                match = [r for r in rows if r[hue_key] == hue
                         and " ".join(str(r[k]) for k in rest) == x]
                if not match:
                    continue
                r = match[0]
                mean, std = r[f"test_{metric}_mean"], r[f"test_{metric}_std"]
                lows.append(mean - std)
                ax.bar(i + (j - (len(hues) - 1) / 2) * width, mean, width, yerr=std, capsize=3,
                       color=f"C{j}", label=hue if i == 0 or not ax.get_legend_handles_labels()[1]
                       .count(hue) else None)
        ax.set_xticks(range(len(xs)), xs, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(max(0.0, min(lows) - 0.03), 1.0)
        ax.set_ylabel(f"test {metric.upper()} (mean ± std over seeds)")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    axes[0].legend(uniq.values(), uniq.keys(), title=hue_key, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="summarize.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run folders, folders of runs, metrics.json")
    parser.add_argument("--by", nargs="+", default=["model", "layers", "truncate", "strategy"],
                        help="grouping keys (default: model layers truncate strategy)")
    parser.add_argument("--csv", metavar="FILE", help="also write the table as CSV")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw test AUC/ACC bars (colour: the first --by key)")
    args = parser.parse_args(argv)
    rows = summarize(load_runs(args.paths), args.by)
    print(markdown(rows, args.by))
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.plot:
        plot(rows, args.by, args.plot)


if __name__ == "__main__":
    sys.exit(run(main))
