"""The chooser's rule against the alternatives, on a finished study with auto and fixed cells
(docs/auto.md, "Why this rule"). Usage: python docs/runs/auto_rules.py STUDY_OUT

For every auto cell (data, labels, model, seed), the evidence it recorded (val probe AUC at each
cut, Auto-RGN of each candidate) and the fixed cells of the same seed give the test AUC that each
rule would have reached, without running anything again (a fixed cell is bitwise the run that the
chooser starts for that selection):

* auto: what the chooser chose (probe cut with a 0.01 margin, then the highest Auto-RGN);
* rgn only / cut at the best probe: one half of the rule each (no margin);
* val oracle: the fixed selection with the best final val AUC (a full race, 8 runs of compute);
* race@k: successive halving on the real schedule, the candidates compared by best val AUC
  after k epochs (k = 2, 4), among all 8, or the chooser's choice against end-to-end.
Differences are to the best fixed selection in hindsight (by test AUC) and to end-to-end.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def _load(out: Path) -> dict[tuple, dict[str, dict]]:
    groups: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for f in (out / "cells" / "finetune").glob("*/metrics.json"):
        m = json.loads(f.read_text())
        if (m.get("source") or {}).get("method") is None:
            continue  # from scratch: not one of the candidates
        key = (m["data"], m["label_fraction"], m["source"]["method"], m["seed"])
        name = "auto" if "auto" in m else m["layers"] + (
            f" t{m['truncate']:g}" if m["truncate"] < 100 else "")
        groups[key][name] = m
    return groups


def _val_after(m: dict, k: int) -> float:
    return max(h["val_auc"] for h in m["history"][:k])


def rules(g: dict[str, dict]) -> dict[str, str]:
    auto = g["auto"]["auto"]
    fixed = [n for n in g if n != "auto"]
    cand = {c["name"]: c for c in auto["candidates"]}
    at100 = [n for n in cand if cand[n]["truncate"] == 100]
    probe = {r["depth"]: r["val_auc"] for r in auto["probe"]}
    rgn = max(at100, key=lambda n: cand[n]["rgn"])
    chosen = g["auto"]["layers"] + (f" t{g['auto']['truncate']:g}"
                                    if g["auto"]["truncate"] < 100 else "")
    out = {"auto": chosen, "rgn only": rgn,
           "cut at the best probe": "0-75 t75" if probe[75] > probe[100] else rgn,
           "end-to-end": "0-100",
           "val oracle": max(fixed, key=lambda n: g[n]["val"]["auc"])}
    for k in (2, 4):
        out[f"race@{k} of 8"] = max(fixed, key=lambda n: _val_after(g[n], k))
        out[f"race@{k} auto vs e2e"] = max({chosen, "0-100"}, key=lambda n: _val_after(g[n], k))
    return out


def _cost(g: dict[str, dict]) -> str:
    """Auto's CPU time (chooser included) against the 8 fixed runs' (the CPU time of the
    process: on a shared core the wall time mostly measures the other jobs)."""
    runs = [m.get("cpu_time_s") for n, m in g.items() if n != "auto"]
    a = g["auto"]
    if a.get("cpu_time_s") is None or None in runs:
        return "CPU time not recorded"
    return (f"CPU: auto {a['cpu_time_s']:.1f} s (chooser {a['auto']['cpu_time_s']:.1f} s), "
            f"the 8 fixed {sum(runs):.1f} s, share {a['cpu_time_s'] / sum(runs):.1%}")


def main(out: Path) -> None:
    groups = {k: g for k, g in sorted(_load(out).items()) if "auto" in g and len(g) == 9}
    scores: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for key, g in groups.items():
        test = {n: g[n]["test"]["auc"] for n in g if n != "auto"}
        best = max(test, key=test.get)
        print(f"{key}: best {best} {test[best]:.4f}, end-to-end {test['0-100']:.4f}; "
              + _cost(g))
        for rule, choice in rules(g).items():
            d = (test[choice] - test[best], test[choice] - test["0-100"])
            scores[rule].append(d)
            print(f"  {rule:>22}: {choice:>9}  test {test[choice]:.4f}  vs best {d[0]:+.4f}  "
                  f"vs e2e {d[1]:+.4f}")
    print(f"\n{len(groups)} cases | rule | mean vs best | worst | mean vs e2e | worst | "
          "within 0.005 of best | not 0.005 below e2e")
    for rule, v in scores.items():
        a = np.array(v)
        print(f"| {rule} | {a[:, 0].mean():+.4f} | {a[:, 0].min():+.4f} | {a[:, 1].mean():+.4f} "
              f"| {a[:, 1].min():+.4f} | {int((a[:, 0] >= -0.005).sum())}/{len(a)} | "
              f"{int((a[:, 1] >= -0.005).sum())}/{len(a)} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
