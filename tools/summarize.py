#!/usr/bin/env python
"""Summarise runs: mean and spread of test/val AUC and ACC over seeds, paired differences.

    python tools/summarize.py runs/ft --by model layers truncate strategy
    python tools/summarize.py runs/ft/simclr_*_s? --by layers --csv table.csv --plot bars.png
    python tools/summarize.py runs/ft --by model strategy --paired strategy=ft
    python tools/summarize.py runs/fusion --by data label_fraction model --paired model="simclr alone"

Reads every DIR/metrics.json under the given folders (other files a shell glob catches are
skipped). Grouping keys are metrics.json keys (layers, truncate, strategy, label_fraction, data,
...) plus ``model``: the checkpoint's pretraining method (simclr, genesis, ...) or none /
imagenet / state_dict. A fusion run gives one row per variant: ``fusion(a+b)``, ``a alone``,
``b alone``, ``late fusion``. ``--paired KEY=VALUE ...`` adds, for each group, the per-seed
differences to the group with those values (same other keys), their mean and the paired t-test
p-value; ``--speed`` the median over a group's runs of their fastest epoch (training images/s);
``--wide KEY`` one more table of test AUC with the values of KEY (one of ``--by``) as columns,
the best of each row in bold.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ssl_ft.cli import ArgumentParser, run
from ssl_ft.errors import UserError
from ssl_ft.study.report import metrics_rows, p_text, paired_differences, summarize

METRICS = (("test", "auc"), ("test", "acc"), ("val", "auc"), ("val", "acc"))


def load_runs(paths: Sequence[str]) -> pd.DataFrame:
    """The rows (:func:`ssl_ft.study.report.metrics_rows`) of every metrics.json in or under
    ``paths``, with the run folder in ``run``."""
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
    rows = []
    for f in files:
        try:
            m = json.loads(f.read_text())
        except json.JSONDecodeError:
            raise UserError(f"{f} is not valid JSON") from None
        rows += [{**r, "run": str(f.parent)} for r in metrics_rows(m)]
    if not rows:
        raise UserError(f"no metrics.json found under {', '.join(paths)}")
    return pd.DataFrame(rows)


def group(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """:func:`ssl_ft.study.report.summarize` over ``by``, rows in natural order of the keys."""
    missing = [k for k in by if k not in df.columns]
    if missing:
        raise UserError(f"the runs have no key {missing[0]!r} (known: "
                        f"{', '.join(c for c in df.columns if c != 'run')})")
    rows = summarize(df, list(by))
    if "peak_images_per_s" in df.columns:
        speed = df.groupby(list(by), sort=False, dropna=False)["peak_images_per_s"].median()
        rows["images_per_s"] = speed.to_numpy()
    for k in by:
        rows[k] = rows[k].astype(str)
    order = sorted(range(len(rows)), key=lambda i: [_natural(rows.at[i, k]) for k in by])
    return rows.iloc[order].reset_index(drop=True)


def _natural(text: str) -> list:
    """Sort key that orders numbers by value: 0-25 < 0-75 < 0-100 < 25-50."""
    return [float(t) if t.replace(".", "", 1).isdigit() else t
            for t in re.split(r"(\d+(?:\.\d+)?)", text) if t]


def markdown(rows: pd.DataFrame, by: Sequence[str], speed: bool = False) -> str:
    head = [*by, "n", "test AUC", "test ACC", "val AUC", "val ACC"] + (["images/s"] if speed
                                                                      else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows.to_dict("records"):
        cells = [r[k] for k in by] + [str(r["n"])]
        cells += [f"{r[f'{s}_{m}_mean']:.3f} ± {r[f'{s}_{m}_std']:.3f}" for s, m in METRICS]
        if speed:
            cells.append(f"{r['images_per_s']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_markdown(df: pd.DataFrame, by: Sequence[str], reference: dict[str, str]) -> str:
    diffs = paired_differences(df.assign(**{k: df[k].astype(str) for k in by}), list(by),
                               reference)
    shown = " ".join(f"{k}={v}" for k, v in reference.items())
    lines = [f"\nPaired by seed against {shown}: test AUC difference (row - reference)\n",
             "| " + " | ".join(by) + " | per seed | mean | n | p |",
             "|" + "---|" * (len(by) + 4)]
    for r in diffs.to_dict("records"):
        lines.append("| " + " | ".join(str(r[k]) for k in by) + " | "
                     + ", ".join(f"{d:+.4f}" for d in r["per_seed"])
                     + f" | {r['test_auc_diff']:+.4f} | {r['n']} | {p_text(r['p'])} |")
    return "\n".join(lines)


def wide_markdown(rows: pd.DataFrame, by: Sequence[str], column: str,
                  metric: str = "test_auc") -> str:
    """Mean ± std of ``metric`` with the values of ``column`` as columns and the other ``by``
    keys as rows; the best mean of each row in bold."""
    rest = [k for k in by if k != column]
    cols = list(dict.fromkeys(rows[column]))
    name = metric.replace("_", " ").replace("auc", "AUC").replace("acc", "ACC")
    lines = [f"\n{name}, mean ± std over seeds (bold: the best of the row)\n",
             "| " + " | ".join([*rest, *cols]) + " |", "|" + "---|" * (len(rest) + len(cols))]
    for key, g in rows.groupby(rest, sort=False) if rest else [((), rows)]:
        key = key if isinstance(key, tuple) else (key,)
        g = g.set_index(column)
        best = g[f"{metric}_mean"].max()
        cells = []
        for c in cols:
            if c not in g.index:
                cells.append("")
                continue
            text = f"{g.at[c, f'{metric}_mean']:.3f} ± {g.at[c, f'{metric}_std']:.3f}"
            cells.append(f"**{text}**" if g.at[c, f"{metric}_mean"] == best and len(g) > 1
                         else text)
        lines.append("| " + " | ".join([*map(str, key), *cells]) + " |")
    return "\n".join(lines)


def plot(rows: pd.DataFrame, by: Sequence[str], path: str) -> None:
    """Grouped bars of test AUC and ACC (mean, error bar = std over seeds): one colour per value
    of the first ``--by`` key, one group of bars per combination of the others."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = rows.to_dict("records")
    hue_key, rest = by[0], list(by[1:])
    hues = list(dict.fromkeys(r[hue_key] for r in records))
    xs = list(dict.fromkeys(" ".join(str(r[k]) for k in rest) for r in records)) or [""]
    width = 0.8 / len(hues)
    fig, axes = plt.subplots(1, 2, figsize=(max(7, 1.1 * len(xs) * 2), 3.8))
    for ax, metric in zip(axes, ("auc", "acc"), strict=True):
        lows = []
        for j, hue in enumerate(hues):
            for i, x in enumerate(xs):
                match = [r for r in records if r[hue_key] == hue
                         and " ".join(str(r[k]) for k in rest) == x]
                if not match:
                    continue
                mean, std = match[0][f"test_{metric}_mean"], match[0][f"test_{metric}_std"]
                lows.append(mean - std)
                ax.bar(i + (j - (len(hues) - 1) / 2) * width, mean, width, yerr=std, capsize=3,
                       color=f"C{j}", label=hue)
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
    parser = ArgumentParser(prog="summarize.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="run folders, folders of runs, metrics.json")
    parser.add_argument("--by", nargs="+", default=["model", "layers", "truncate", "strategy"],
                        help="grouping keys (default: model layers truncate strategy)")
    parser.add_argument("--paired", nargs="+", metavar="KEY=VALUE",
                        help="compare each group with this one, paired by seed")
    parser.add_argument("--speed", action="store_true",
                        help="add the median peak training images/s of each group")
    parser.add_argument("--wide", metavar="KEY",
                        help="also print test AUC with KEY's values (a --by key) as columns")
    parser.add_argument("--csv", metavar="FILE", help="also write the table as CSV")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw test AUC/ACC bars (colour: the first --by key)")
    args = parser.parse_intermixed_args(argv)
    df = load_runs(args.paths)
    rows = group(df, args.by)
    print(markdown(rows, args.by, args.speed))
    if args.paired:
        reference = dict(item.split("=", 1) for item in args.paired if "=" in item)
        bad = [k for k in reference if k not in args.by] or [i for i in args.paired
                                                             if "=" not in i]
        if bad:
            raise UserError(f"--paired {bad[0]!r}: give KEY=VALUE with KEY one of the --by keys")
        print(paired_markdown(df, args.by, reference))
    if args.wide:
        if args.wide not in args.by:
            raise UserError(f"--wide {args.wide!r}: give one of the --by keys "
                            f"({', '.join(args.by)})")
        print(wide_markdown(rows, args.by, args.wide))
    if args.csv:
        rows.to_csv(args.csv, index=False)
    if args.plot:
        plot(rows, args.by, args.plot)


if __name__ == "__main__":
    sys.exit(run(main))
