"""The table of docs/runs/bf16_check.sh: probe AUCs of the bf16 and fp32 SimCLR pretrainings
per seed, their means, and the paired difference bf16 - fp32 over the seeds (mean, sd).
Usage: python docs/runs/bf16_table.py RUNS SEED [SEED ...]"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from statistics import mean, median, stdev

PROBES = ("pneu100", "pneu10", "breast100", "ham100", "brain100")
HEAD = ["final kNN val AUC"] + [f"{n} {s}" for n in ("PneumoniaMNIST 100 %", "10 % (3 draws)",
                                                    "BreastMNIST", "HAM10000", "brain MRI")
                                for s in ("val", "test")]


def _auc(out: Path, name: str, split: str) -> float:
    rows = json.loads((out / name).read_text())
    rows = rows if isinstance(rows, list) else rows.get("results", [rows])
    return mean(r[split]["auc"] for r in rows)


def _run(runs: Path, prec: str, seed: int) -> Path:
    name = "simclr_pneumoniamnist" + ("_fp32" if prec == "fp32" else "")
    return runs / (name + (f"_seed{seed}" if seed else ""))


def row(runs: Path, prec: str, seed: int) -> tuple[float, list[float]]:
    """(median images/s, [final kNN val AUC, then val/test AUC of each probe])."""
    run = _run(runs, prec, seed)
    s = json.loads((run / "summary.json").read_text())
    hist = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
    speed = median(r["images_per_s"] for r in hist if "images_per_s" in r)
    vals = [s["final"]] + [_auc(runs / "bf16_check", f"{prec}_s{seed}_{k}.json", sp)
                           for k in PROBES for sp in ("val", "test")]
    return speed, vals


def main(runs: Path, seeds: list[int]) -> None:
    print("| precision | seed | median images/s | " + " | ".join(HEAD) + " |")
    print("|---|---|---|" + "---|" * len(HEAD))
    got = {p: [row(runs, p, s) for s in seeds] for p in ("bf16", "fp32")}
    for p, rows in got.items():
        for s, (speed, vals) in zip(seeds, rows, strict=True):
            print(f"| {p} | {s} | {speed:.0f} | " + " | ".join(f"{v:.4f}" for v in vals) + " |")
    for p, rows in got.items():
        cols = list(zip(*(v for _, v in rows), strict=True))
        print(f"| {p} | mean | {mean(sp for sp, _ in rows):.0f} | "
              + " | ".join(f"{mean(c):.4f}" for c in cols) + " |")
    diffs = [[b - f for b, f in zip(rb[1], rf[1], strict=True)]
             for rb, rf in zip(got["bf16"], got["fp32"], strict=True)]
    cols = list(zip(*diffs, strict=True))
    sd = (lambda c: f" ± {stdev(c):.4f}") if len(seeds) > 1 else (lambda c: "")
    print("| bf16 - fp32 | paired | | " + " | ".join(f"{mean(c):+.4f}{sd(c)}" for c in cols)
          + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), [int(s) for s in sys.argv[2:]] or [0])
