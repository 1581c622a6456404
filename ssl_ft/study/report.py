"""Aggregate a study: ``results.csv`` (one row a run), ``results.md`` (mean ± std and 95 % CI per
cell, best per row in bold, each strategy against end-to-end ``ft`` by a paired t-test over
seeds) and PNG figures (layer range x SSL method heatmap, strategy bars, label-fraction curves).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ssl_ft.study.grid import Cell

__all__ = ["collect", "paired_tests", "summarize", "write_report"]

METRICS = ("test_auc", "test_acc", "val_auc", "val_acc")


def _selection(layers: Any, truncate: Any) -> str:
    t = float(truncate)
    return f"{layers}" + (f" t{t:g}" if t < 100 else "")


def collect(cells: list[Cell], out: str | Path) -> pd.DataFrame:
    """One row per finished run (a fusion cell gives one row per variant: the fusion, each
    model alone, late fusion)."""
    rows = []
    for cell in cells:
        path = cell.folder(out) / "metrics.json"
        if cell.kind == "pretrain" or not path.is_file():
            continue
        m = json.loads(path.read_text())
        base = {"kind": cell.kind, "cell": cell.id, "data": m.get("data"),
                "label_fraction": m["label_fraction"], "seed": m["seed"],
                "strategy": m["strategy"]}
        if cell.kind == "finetune":
            src = m["source"]
            name = cell.labels.get("checkpoint", src.get("method") or src["kind"])
            rows.append({**base, "model": str(name), "arch": src["arch"],
                         "selection": _selection(m["layers"], m["truncate"]),
                         "trainable_params": m["trainable_params"], **_scores(m)})
            continue
        names = [x["name"] for x in m["models"]]
        depths = "+".join(f"{x['depth']:g}" for x in m["models"])
        arch = "+".join(sorted({x["arch"] for x in m["models"]}))
        rows.append({**base, "model": "fusion(" + "+".join(names) + ")", "arch": arch,
                     "selection": f"depths {depths}", "trainable_params": m["trainable_params"],
                     **_scores(m)})
        for variant, res in m["baselines"].items():
            label = "late fusion" if variant == "late_fusion" else f"{variant} alone"
            rows.append({**base, "model": label, "arch": arch, "selection": f"depths {depths}",
                         "trainable_params": None, **_scores(res)})
    return pd.DataFrame(rows)


def _scores(m: dict) -> dict[str, float]:
    return {f"{s}_{k}": float(m[s][k]) for s in ("test", "val") for k in ("auc", "acc")}


GROUP = ["kind", "data", "arch", "label_fraction", "model", "selection", "strategy"]


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, std, 95 % CI half-width (t distribution) and n over seeds, per cell."""
    from scipy import stats

    rows = []
    for key, g in df.groupby(GROUP, sort=False, dropna=False):
        row = dict(zip(GROUP, key, strict=True))
        row["n"] = len(g)
        for metric in METRICS:
            v = g[metric].to_numpy(float)
            sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
            row[f"{metric}_mean"], row[f"{metric}_std"] = float(v.mean()), sd
            row[f"{metric}_ci95"] = (float(stats.t.ppf(0.975, len(v) - 1) * sd / math.sqrt(len(v)))
                                     if len(v) > 1 else float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


def paired_tests(df: pd.DataFrame, metric: str = "test_auc", reference: str = "ft") -> pd.DataFrame:
    """Each strategy against ``reference`` on the same data/arch/labels/model/selection, paired
    by seed: mean difference and the two-sided paired t-test p-value."""
    from scipy import stats

    ft = df[df["kind"] == "finetune"]
    keys = ["data", "arch", "label_fraction", "model", "selection"]
    rows = []
    for key, g in ft.groupby(keys, sort=False):
        ref = g[g["strategy"] == reference].set_index("seed")[metric]
        for strategy, h in g[g["strategy"] != reference].groupby("strategy", sort=False):
            other = h.set_index("seed")[metric]
            seeds = sorted(set(ref.index) & set(other.index))
            if not seeds:
                continue
            a, b = other.loc[seeds].to_numpy(float), ref.loc[seeds].to_numpy(float)
            testable = len(seeds) > 1 and np.any(a != b)
            p = float(stats.ttest_rel(a, b).pvalue) if testable else float("nan")
            rows.append({**dict(zip(keys, key, strict=True)), "strategy": strategy,
                         f"{metric}_diff": float((a - b).mean()), "n": len(seeds), "p": p})
    return pd.DataFrame(rows)


def _fmt(mean: float, std: float, ci: float) -> str:
    ci_text = "" if math.isnan(ci) else f" [±{ci:.3f}]"
    return f"{mean:.3f} ± {std:.3f}{ci_text}"


def _pivot_md(s: pd.DataFrame, metric: str, column: str) -> list[str]:
    lines = []
    for key, g in s.groupby(["kind", "data", "arch", "label_fraction"], sort=False):
        cols = list(dict.fromkeys(g[column]))
        lines += [f"\n**{key[1]}**, {key[2]}, label fraction {key[3]:g} ({key[0]}): test "
                  f"{metric.split('_')[1].upper()}, mean ± std [95 % CI] over seeds (n)\n",
                  "| model | " + " | ".join(map(str, cols)) + " |",
                  "|---|" + "---|" * len(cols)]
        for model, h in g.groupby("model", sort=False):
            best = h[f"{metric}_mean"].max()
            cells = []
            for c in cols:
                r = h[h[column] == c]
                if r.empty:
                    cells.append("")
                    continue
                r = r.iloc[0]
                text = _fmt(r[f"{metric}_mean"], r[f"{metric}_std"], r[f"{metric}_ci95"])
                text += f" ({r['n']})"
                cells.append(f"**{text}**" if r[f"{metric}_mean"] == best and len(h) > 1 else text)
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def write_report(df: pd.DataFrame, out: str | Path, title: str) -> list[Path]:
    """results.csv, results.md and the figures that the data supports; returns the files."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.csv", out / "results.md"]
    df.to_csv(written[0], index=False)
    lines = [f"# {title}", "", f"{len(df)} runs. Bold: the best mean in its row."]
    if df.empty:
        written[1].write_text("\n".join(lines + ["", "No finished runs yet."]) + "\n")
        return written
    s = summarize(df)
    s.to_csv(out / "summary.csv", index=False)
    written.append(out / "summary.csv")
    for kind in ("finetune", "ensemble"):
        part = s[s["kind"] == kind].copy()
        if part.empty:
            continue
        column = "strategy" if part["strategy"].nunique() > 1 else "selection"
        if kind == "finetune" and column == "strategy":
            part["strategy"] = part["selection"] + " " + part["strategy"]
        lines += ["", f"## {'Fine-tuning' if kind == 'finetune' else 'Fusion'}"]
        for metric in ("test_auc", "test_acc"):
            lines += _pivot_md(part, metric, column)
    tests = paired_tests(df)
    if not tests.empty:
        lines += ["", "## Strategies against end-to-end fine-tuning (ft)", "",
                  "Paired over seeds: mean test-AUC difference (strategy - ft) and the two-sided "
                  "paired t-test p-value.", "",
                  "| data | arch | labels | model | layers | strategy | ΔAUC | n | p |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in tests.itertuples():
            lines.append(f"| {r.data} | {r.arch} | {r.label_fraction:g} | {r.model} | "
                         f"{r.selection} | {r.strategy} | {r.test_auc_diff:+.4f} | {r.n} | "
                         f"{r.p:.3g} |")
    from ssl_ft.study.figures import draw_figures

    figures = draw_figures(s, out)
    lines += [""] + [f"![{f.stem}]({f.name})" for f in figures]
    written[1].write_text("\n".join(lines) + "\n")
    return written + figures
