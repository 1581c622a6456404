"""The chooser's rule against the alternatives, on a finished study with auto and fixed cells
(docs/auto.md). Usage: python docs/runs/auto_rules.py STUDY_OUT

For every auto cell (data, labels, model, seed), the evidence it recorded (val probe AUC at each
cut; Auto-RGN where the rule of its time measured it) and the fixed cells of the same seed give
the test AUC that each rule would have reached, without running anything again (a fixed cell is
bitwise the run that the chooser starts for that selection, made by the same code):

* auto: what the chooser of that run chose, its own test AUC;
* probe cut, then Auto-RGN / Auto-RGN only (no cut) / cut at the best probe (no margin): the
  rule before the race and its halves (only for runs that recorded Auto-RGN at every cut);
* probe cut, then race of the quarters (the rule now) / the race without the cut: successive
  halving replayed on the fixed runs' val curves, as ssl_ft.auto_layers._race runs it; two
  cheaper races (a first rung of 1/8 of the epochs; one halving straight to a single winner);
* val oracle: the fixed selection with the best final val AUC (a full grid of compute);
* race@k of 8: all 8 compared by best val AUC after k epochs (k = 2, 4).
Differences are to the best fixed selection in hindsight (by test AUC) and to end-to-end, per
case and per row (the mean over the seeds, as issue 15's table), with each rule's CPU share.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from ssl_ft.halving import successive_halving


def selection(m: dict) -> str:
    """A run's selection as the candidates name it: ``25-50``, ``0-75 t75``."""
    return m["layers"] + (f" t{m['truncate']:g}" if m["truncate"] < 100 else "")


def _load(out: Path) -> dict[tuple, dict[str, dict]]:
    groups: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for f in (out / "cells" / "finetune").glob("*/metrics.json"):
        m = json.loads(f.read_text())
        if (m.get("source") or {}).get("method") is None:
            continue  # from scratch: not one of the candidates
        key = (m["data"], m["label_fraction"], m["source"]["method"], m["seed"])
        name = "auto" if "auto" in m else selection(m)
        groups[key][name] = m
    return groups


def _val_after(m: dict, k: int) -> float:
    """Best val AUC in the first k trained epochs (lp-ft's epoch-0 probe row is not one)."""
    trained = [h for h in m["history"] if h.get("phase") != "probe"] or m["history"]
    return max(h["val_auc"] for h in trained[:k])


QUARTERS = ["0-25", "25-50", "50-75", "75-100"]


def race(g: dict[str, dict], among: list[str], rung: float = 0.25,
         halve: bool = True) -> tuple[str, float]:
    """Successive halving as ``auto_args.race`` runs it (ssl_ft.auto_layers._race), replayed
    on the fixed runs' val curves (a raced run is bitwise the fixed run up to where it
    stops): the winner and the CPU seconds the race would cost (each run's CPU time pro rata
    of the epochs it trains). ``halve=False``: the first rung decides (one winner at once)."""
    epochs = g["0-100"]["epochs"]
    winner, stopped = successive_halving(among, epochs, rung, lambda n, k: _val_after(g[n], k),
                                         halve=halve)
    trained = {**stopped, winner: epochs}
    if any(g[n].get("cpu_time_s") is None for n in trained):
        return winner, None
    return winner, sum(g[n]["cpu_time_s"] * e / epochs for n, e in trained.items())


def _probe(auto: dict) -> dict[float, float]:
    return {r["depth"]: r["val_auc"] for r in auto["probe"]}


def rules(g: dict[str, dict]) -> dict[str, tuple[str, float | None]]:
    """Each rule's choice and its CPU seconds (None: not measured per rule)."""
    auto = g["auto"]["auto"]
    fixed = [n for n in g if n != "auto"]
    cand = {c["name"]: c for c in auto["candidates"]}
    probe = _probe(auto)
    chosen = selection(g["auto"])
    cpu = {n: g[n].get("cpu_time_s") for n in g}
    out: dict[str, tuple[str, float | None]] = {"auto": (chosen, cpu["auto"])}
    at100 = [n for n in cand if cand[n]["truncate"] == 100 and "rgn" in cand[n]]
    if at100:  # runs of the rule before the race (Auto-RGN at every cut)
        rgn = max(at100, key=lambda n: cand[n]["rgn"])
        cut = "0-75 t75" if probe[75] - probe[100] > 0.01 else rgn
        out["probe cut, then Auto-RGN"] = (cut, None)
        out["Auto-RGN only (no cut)"] = (rgn, None)
        out["cut at the best probe"] = ("0-75 t75" if probe[75] > probe[100] else rgn, None)
    cut75 = probe[75] - probe[100] > 0.01
    out["probe cut, then race of the quarters"] = (
        ("0-75 t75", cpu["0-75 t75"]) if cut75 else race(g, QUARTERS))
    for name, kw in (("first rung 1/8", {"rung": 0.125}), ("one halving", {"halve": False})):
        out[f"probe cut, then race, {name}"] = (
            ("0-75 t75", cpu["0-75 t75"]) if cut75 else race(g, QUARTERS, **kw))
    out["race of the quarters (no cut)"] = race(g, QUARTERS)
    out["end-to-end"] = ("0-100", cpu["0-100"])
    out["val oracle"] = (max(fixed, key=lambda n: g[n]["val"]["auc"]),
                         None if None in (cpu[n] for n in fixed) else sum(cpu[n] for n in fixed))
    for k in (2, 4):
        out[f"race@{k} of 8"] = (max(fixed, key=lambda n: _val_after(g[n], k)), None)
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
    rows: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for key, g in groups.items():
        test = {n: g[n]["test"]["auc"] for n in g if n != "auto"}
        best = max(test, key=test.get)
        times = [g[n].get("cpu_time_s") for n in test]
        grid = None if None in times else sum(times)
        print(f"{key}: best {best} {test[best]:.4f}, end-to-end {test['0-100']:.4f}; "
              + _cost(g))
        for n in test:
            rows[key[:3]][n].append(test[n])
        for rule, (choice, cpu) in rules(g).items():
            auc = g["auto"]["test"]["auc"] if rule == "auto" else test[choice]
            d = (auc - test[best], auc - test["0-100"])
            scores[rule].append(d)
            rows[key[:3]][rule].append((auc, None if None in (cpu, grid) else cpu / grid))
            print(f"  {rule:>36}: {choice:>9}  test {auc:.4f}  vs best {d[0]:+.4f}  "
                  f"vs e2e {d[1]:+.4f}")
    print(f"\n{len(groups)} cases (one seed each) | rule | mean vs best | worst | mean vs e2e | "
          "worst | within 0.005 of best | not 0.005 below e2e")
    for rule, v in scores.items():
        a = np.array(v)
        print(f"| {rule} | {a[:, 0].mean():+.4f} | {a[:, 0].min():+.4f} | {a[:, 1].mean():+.4f} "
              f"| {a[:, 1].min():+.4f} | {int((a[:, 0] >= -0.005).sum())}/{len(a)} | "
              f"{int((a[:, 1] >= -0.005).sum())}/{len(a)} |")
    _rows(rows, list(scores))


def _rows(rows: dict[tuple, dict[str, list]], names: list[str]) -> None:
    """Issue 15's Must-show per row (data, labels, model; means over the seeds): each rule
    against the best fixed selection in hindsight (the highest mean test AUC) and end-to-end,
    and its CPU share of the 8 fixed runs (replayed races: the probe's seconds not counted)."""
    print(f"\n{len(rows)} rows (mean over seeds) | rule | mean vs best | worst | within 0.005 "
          "| mean vs e2e | worst | not 0.005 below | CPU share mean | max")
    for rule in names:
        d_best, d_e2e, share = [], [], []
        for r in rows.values():
            fixed = {n: np.mean(v) for n, v in r.items() if n not in names}
            auc = np.mean([x[0] for x in r[rule]])
            d_best.append(auc - max(fixed.values()))
            d_e2e.append(auc - np.mean(r["0-100"]))
            if all(x[1] is not None for x in r[rule]):
                share.append(np.mean([x[1] for x in r[rule]]))
        b, e = np.array(d_best), np.array(d_e2e)
        sh = f"{np.mean(share):.1%} | {np.max(share):.1%}" if share else "- | -"
        print(f"| {rule} | {b.mean():+.4f} | {b.min():+.4f} | {int((b >= -0.005).sum())}/{len(b)}"
              f" | {e.mean():+.4f} | {e.min():+.4f} | {int((e >= -0.005).sum())}/{len(e)} | {sh} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
