#!/usr/bin/env python
"""Fine-tuning from a pretrained source against training from scratch, from a study's
results.csv (e.g. recipes/study/general_source.yaml): per data x label fraction, the layer
selection chosen by mean VALIDATION AUC over seeds (the test split never chooses), its test AUC
paired by seed with the from-scratch cells, and the two-sided paired t-test; end-to-end (0-100)
and the best selection in hindsight (chosen on test, for reference only) beside it.

    python docs/runs/source_vs_scratch.py RUNS/study/general_source/results.csv [--model general]
"""

from __future__ import annotations

import argparse

import pandas as pd
from scipy import stats


def paired(a: pd.DataFrame, b: pd.DataFrame) -> tuple[float, float, int]:
    """Mean test-AUC difference a - b over the seeds both have, the paired t-test p, n."""
    m = a.set_index("seed")["test_auc"].sub(b.set_index("seed")["test_auc"]).dropna()
    p = float(stats.ttest_rel(a.set_index("seed").loc[m.index, "test_auc"],
                              b.set_index("seed").loc[m.index, "test_auc"]).pvalue)
    return float(m.mean()), p, len(m)


def table(df: pd.DataFrame, model: str) -> list[str]:
    rows = ["| data | labels | scratch | 0-100 (Δ, p) | chosen on val | its test AUC (Δ, p) | "
            "best in hindsight |", "|---|---|---|---|---|---|---|"]
    for (data, frac), g in df.groupby(["data", "label_fraction"], sort=False):
        scratch = g[g.model == "none"]
        src = g[g.model == model]
        if scratch.empty or src.empty:
            continue
        by_sel = src.groupby("layers")
        chosen = by_sel["val_auc"].mean().idxmax()
        hind = by_sel["test_auc"].mean().idxmax()
        d0, p0, _ = paired(src[src.layers == "0-100"], scratch)
        dc, pc, n = paired(src[src.layers == chosen], scratch)
        rows.append(
            f"| {data} | {frac:g} | {scratch.test_auc.mean():.3f} ± {scratch.test_auc.std():.3f} "
            f"| {src[src.layers == '0-100'].test_auc.mean():.3f} ({d0:+.3f}, p={p0:.3g}) "
            f"| {chosen} | {src[src.layers == chosen].test_auc.mean():.3f} ({dc:+.3f}, p={pc:.3g}, "
            f"n={n}) | {hind}: {src[src.layers == hind].test_auc.mean():.3f} |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="a study's results.csv")
    p.add_argument("--model", default="general", help="the source's name in the study")
    args = p.parse_args()
    df = pd.read_csv(args.results)
    df = df[df.kind == "finetune"]
    print("\n".join(table(df, args.model)))


if __name__ == "__main__":
    main()
