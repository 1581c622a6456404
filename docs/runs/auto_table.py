"""docs/auto.md's table of the race rule as run: per row (data, labels, model) with all 3 seeds
finished, auto's mean test AUC and choices, the best fixed selection in hindsight, end-to-end,
auto's wall / CPU share of the row's 8 fixed runs, and where an auto run's wall time went.
Then the drift of the wall clock between the folders: an auto run that raced nothing is the
fixed run of its choice plus the probe, so its wall time less the chooser's against that fixed
cell's (copied from another study by ``reuse:``) shows how much the same work took longer or
shorter here than there.
Usage: python docs/runs/auto_table.py STUDY_OUT   (auto runs of the race rule only)
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from auto_figure import FIXED, SHORT  # noqa: E402
from auto_rules import _load, selection  # noqa: E402


def _row(key: tuple, by: dict[int, dict]) -> str:
    runs = list(by.values())
    auto = [x["auto"]["test"]["auc"] for x in runs]
    means = {n: np.mean([x[n]["test"]["auc"] for x in runs]) for n in FIXED}
    best = max(means, key=means.get)
    chose = Counter(selection(x["auto"]) for x in runs)
    share = {t: sum(x["auto"][t] for x in runs) / sum(x[n][t] for x in runs for n in FIXED)
             for t in ("wall_time_s", "cpu_time_s")}
    probe = np.mean([x["auto"]["auto"]["evidence_s"] for x in runs])
    race = np.mean([x["auto"]["auto"]["race_s"] for x in runs])
    total = np.mean([x["auto"]["wall_time_s"] for x in runs])
    a = np.mean(auto)
    return (f"| {SHORT.get(key[0], key[0])} | {key[1]:.0%} | {key[2]} | {a:.3f} ± "
            f"{np.std(auto, ddof=1):.3f} | {', '.join(f'{n} x{c}' for n, c in chose.items())} | "
            f"{best} {means[best]:.3f} | {a - means[best]:+.4f} | {means['0-100']:.3f} | "
            f"{a - means['0-100']:+.4f} | {share['wall_time_s']:.0%} / {share['cpu_time_s']:.0%} | "
            f"{probe:.0f} / {race:.0f} / {total - probe - race:.0f} |")


def main(out: Path) -> None:
    rows: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for (data, frac, method, seed), g in _load(out).items():
        if "auto" in g and "auto_args" in g["auto"]["auto"] and all(n in g for n in FIXED):
            rows[(data, frac, method)][seed] = g
    print("| data | labels | model | auto (mean ± sd) | chose | best fixed | Δ best | end-to-end "
          "| Δ e2e | share wall / CPU | auto wall s: probe / race / rest |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, by in rows.items():
        if len(by) == 3:
            print(_row(key, by))
    same = [(a["wall_time_s"] - a["auto"]["wall_time_s"]) / g[selection(a)]["wall_time_s"]
            for by in rows.values() for g in by.values() for a in [g["auto"]]
            if a["auto"]["race_s"] == 0 and selection(a) in g]
    if same:
        print(f"\nthe same run's wall time here / in its fixed cell ({len(same)} auto runs "
              f"that raced nothing): median {np.median(same):.2f}, range {min(same):.2f}-"
              f"{max(same):.2f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
