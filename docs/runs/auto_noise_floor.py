"""How close to "the best fixed selection in hindsight" can any chooser get on a study's splits?
(docs/auto.md, "The noise floor of the target"). Usage:

    python docs/runs/auto_noise_floor.py RUNS/study/NAME/results.csv [--models simclr genesis]

Issue 15 asks auto to land within 0.005 test AUC of the best fixed selection in hindsight: the
selection with the highest mean test AUC over a row's seeds. That maximum is taken over noisy
means, so it is biased upwards (the winner's curse), and no chooser, however good, can be
expected to reach it. This script measures the bias with an oracle that may read the test
labels: for each row (data x labels x model) and each seed s, it picks the selection with the
best mean test AUC over the other seeds and scores it on seed s (leave one seed out). The
oracle's mean, against the hindsight best, is how far a chooser that knew the test scores of
the other runs would fall short on a new run: the noise floor of the target.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd


def floor(df: pd.DataFrame) -> pd.DataFrame:
    """Per row: the hindsight best, the leave-one-seed-out oracle and their difference."""
    fixed = df[(df["kind"] == "finetune") & (df["selection"] != "auto") & (df["model"] != "none")]
    rows = []
    for (data, frac, model), g in fixed.groupby(["data", "label_fraction", "model"]):
        table = g.pivot_table(index="seed", columns="selection", values="test_auc")
        table = table.dropna(axis=1)  # selections with every seed
        if table.shape[0] < 2 or table.shape[1] < 2:
            continue
        means = table.mean()
        best = means.idxmax()
        oracle = []
        for s in table.index:
            pick = table.drop(index=s).mean().idxmax()
            oracle.append(table.loc[s, pick])
        rows.append({"data": data, "labels": frac, "model": model, "selections": table.shape[1],
                     "seeds": table.shape[0], "best": best, "best_auc": means[best],
                     "oracle_auc": sum(oracle) / len(oracle),
                     "gap": sum(oracle) / len(oracle) - means[best],
                     "second_gap": means.nlargest(2).iloc[-1] - means[best]})
    return pd.DataFrame(rows)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results")
    p.add_argument("--models", nargs="*", help="only these models (the study's names)")
    args = p.parse_args(argv)
    df = pd.read_csv(args.results)
    if args.models:
        df = df[df["model"].isin(args.models)]
    out = floor(df)
    print("| data | labels | model | best in hindsight | oracle (leave one seed out) | gap | "
          "2nd best - best |")
    print("|---|---|---|---|---|---|---|")
    for r in out.itertuples():
        print(f"| {r.data} | {r.labels:.0%} | {r.model} | {r.best} {r.best_auc:.4f} | "
              f"{r.oracle_auc:.4f} | {r.gap:+.4f} | {r.second_gap:+.4f} |")
    print(f"\n{len(out)} rows: mean gap {out['gap'].mean():+.4f} (worst {out['gap'].min():+.4f}); "
          f"the oracle is within 0.005 of the hindsight best on {(out['gap'] >= -0.005).sum()} "
          f"of {len(out)} rows")


if __name__ == "__main__":
    main(sys.argv[1:])
