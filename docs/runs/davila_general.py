"""The Davila study on the general source, read against the old reading (docs/results.md):
per target, each strategy's test AUC (mean ± std over seeds), its difference to `ft` paired by
seed (two-sided paired t-test), and what the tuning chose for it (on val, seed 10).
Usage: python docs/runs/davila_general.py RUNS/study/davila_general/results.csv
"""

from __future__ import annotations

import sys

import pandas as pd
from scipy import stats

ORDER = ["scratch", "ft", "lp", "lp-ft", "gradual-lf", "gradual-fl", "l1-sp", "l2-sp",
         "auto-rgn", "discriminative"]


def main(path: str) -> None:
    df = pd.read_csv(path)
    df = df[df["kind"] == "finetune"].copy()
    df["name"] = [("scratch" if m == "none" else s) for m, s in zip(df["model"], df["strategy"],
                                                                    strict=True)]
    print("| data | " + " | ".join(ORDER) + " |\n|---|" + "---|" * len(ORDER))
    for data, g in df.groupby("data", sort=False):
        cells = []
        for name in ORDER:
            auc = g.loc[g["name"] == name, "test_auc"]
            cells.append(f"{auc.mean():.3f} ± {auc.std(ddof=1):.3f}" if len(auc) else "-")
        print(f"| {data} | " + " | ".join(cells) + " |")
    print("\n| data | strategy | Δ vs ft (per seed) | p | tuned |\n|---|---|---|---|---|")
    for data, g in df.groupby("data", sort=False):
        ft = g[g["name"] == "ft"].set_index("seed")["test_auc"]
        for name in ORDER:
            if name == "ft":
                continue
            s = g[g["name"] == name].set_index("seed")
            d = (s["test_auc"] - ft).dropna()
            p = stats.ttest_rel(s.loc[d.index, "test_auc"], ft[d.index]).pvalue if len(d) > 1 \
                else float("nan")
            tuned = s["tuned"].iloc[0] if "tuned" in s and len(s) else ""
            print(f"| {data} | {name} | {d.mean():+.3f} ({', '.join(f'{v:+.3f}' for v in d)}) "
                  f"| {p:.3f} | {tuned} |")
        ftt = g[g["name"] == "ft"]["tuned"].iloc[0] if "tuned" in g else ""
        print(f"| {data} | ft | 0 | | {ftt} |")


if __name__ == "__main__":
    main(sys.argv[1])
