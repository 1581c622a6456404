"""Does a new run of the Khan & Fang study give the same results as docs/results.md, within noise?

    python docs/runs/kf_compare.py RUNS/study/khan_fang/summary.csv [docs/results.md]

Reads the table "Test AUC, mean ± std over 3 seeds" of docs/results.md (label fraction x model x
selection) and the new study's summary.csv; per cell prints both means, the difference and
z = difference / sqrt(s_old^2/n + s_new^2/n) (Welch's standard error of a difference of two
means of n = 3 seeds); then how many cells have |z| < 2 and the mean absolute difference.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pandas as pd

MODELS = {"SimCLR": "simclr", "MoCo v2": "moco", "Genesis": "genesis", "from scratch": "none"}
CELL = re.compile(r"\**(?P<m>[0-9.]+) ± (?P<s>[0-9.]+)\**")


def old_table(md: str) -> dict[tuple[float, str, str], tuple[float, float]]:
    """``{(label fraction, model, selection): (mean, std)}`` from the markdown table."""
    lines = md.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("| labels | model | 0-25"))
    cols = [c.strip() for c in lines[start].strip("|").split("|")]
    out = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        frac = float(cells[0].rstrip("%")) / 100
        model = MODELS[cells[1]]
        for col, text in zip(cols[2:], cells[2:], strict=True):
            hit = CELL.fullmatch(text)
            if hit:
                sel = "0-75 t75" if col == "0-75 t75" else col
                out[(frac, model, sel)] = (float(hit["m"]), float(hit["s"]))
    return out


def main(summary: str, results_md: str = "docs/results.md") -> None:
    old = old_table(Path(results_md).read_text())
    s = pd.read_csv(summary)
    s = s[s["kind"] == "finetune"]
    rows = []
    for _, r in s.iterrows():
        key = (float(r["label_fraction"]), str(r["model"]), str(r["selection"]))
        if key not in old:
            continue
        m0, s0 = old[key]
        n = int(r["n"])
        se = math.sqrt((s0**2 + r["test_auc_std"] ** 2) / n) or float("nan")
        d = r["test_auc_mean"] - m0
        rows.append((key, m0, r["test_auc_mean"], d, d / se))
    print("| labels | model | selection | docs | new | Δ | z |")
    print("|---|---|---|---|---|---|---|")
    for (frac, model, sel), m0, m1, d, z in sorted(rows):
        print(f"| {frac:.0%} | {model} | {sel} | {m0:.3f} | {m1:.3f} | {d:+.3f} | {z:+.1f} |")
    zs = [abs(r[4]) for r in rows]
    print(f"\n{len(rows)} cells; |z| < 2 in {sum(z < 2 for z in zs)}; mean |Δ| "
          f"{sum(abs(r[3]) for r in rows) / len(rows):.4f}; mean Δ {sum(r[3] for r in rows) / len(rows):+.4f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
