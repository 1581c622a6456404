#!/usr/bin/env python
"""What writing best.pt/last.pt every epoch costs a study's cells (docs/performance.md,
"Studies"): the Khan & Fang recipe's cells (resnet18 from a random init, PneumoniaMNIST, all
layers, Adam) at 1 %, 10 % and 100 % of the labels with their epochs and batch sizes, each run
with ``checkpoint_every_s=0`` (after every epoch, the old behaviour) and with the default (30 s),
alternating round by round. Prints per cell the median wall time, the seconds in the
``checkpoint`` phase and the number of last.pt writes (one a finished epoch, or fewer).

    python benchmarks/bench_cadence.py [--rounds 2] [--fractions 0.01 0.1 1.0]
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ssl_ft.finetune import FinetuneConfig, finetune

# the Khan & Fang recipe's settings per label fraction (recipes/study/khan_fang.yaml)
CELLS = {0.01: {"epochs": 48, "batch_size": 16}, 0.1: {"epochs": 14, "batch_size": 64},
         1.0: {"epochs": 8, "batch_size": 128}}


def cell(fraction: float, every_s: float, out: Path, threads: int) -> dict:
    import ssl_ft.finetune.engine as engine

    writes = []
    real = engine.save_last

    def counted(*args, **kwargs):
        writes.append(1)
        return real(*args, **kwargs)

    engine.save_last = counted
    try:
        cfg = FinetuneConfig(checkpoint="none", arch="resnet18", data="pneumoniamnist",
                             label_fraction=fraction, lr=1e-3, optimizer="adam", seed=0,
                             threads=threads, out=str(out), checkpoint_every_s=every_s,
                             **CELLS[fraction])
        t0 = time.perf_counter()
        finetune(cfg, progress=False)
        wall = time.perf_counter() - t0
    finally:
        engine.save_last = real
    m = json.loads((out / "metrics.json").read_text())
    return {"wall_s": wall, "checkpoint_s": m["profile_s"].get("checkpoint", 0.0),
            "writes": len(writes), "test_auc": m["test"]["auc"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--fractions", type=float, nargs="*", default=list(CELLS))
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    print("| labels | checkpoint_every_s | median wall s | checkpoint s | last.pt writes "
          "| test AUC |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for fraction in args.fractions:
            res: dict[float, list[dict]] = {0.0: [], 30.0: []}
            for r in range(args.rounds):
                for every in (list(res) if r % 2 == 0 else list(res)[::-1]):
                    out = Path(tmp) / f"f{fraction}_e{every}_r{r}"
                    res[every].append(cell(fraction, every, out, args.threads))
            for every, rows in res.items():
                med = statistics.median
                print(f"| {fraction:g} | {every:g} | {med(x['wall_s'] for x in rows):.1f} | "
                      f"{med(x['checkpoint_s'] for x in rows):.2f} | {rows[0]['writes']} | "
                      f"{rows[0]['test_auc']:.4f} |")


if __name__ == "__main__":
    main()
