#!/usr/bin/env python
"""The logistic probe's fits (scikit-learn L-BFGS, ``ssl_ft.features.C_GRID``) with one and two
BLAS threads, alone and as two processes at once (docs/performance.md, "BLAS threads").

Features: a random-init resnet18's pooled layer4 features of 2000 real train images (HAM10000,
7 classes, grey at 28 px, as in ``recipes/study/auto.yaml``) and its val split. Alone: median of
3 alternating rounds; pair: two processes at once, each timing one round.

    python benchmarks/bench_blas.py [--data ham10000_dermoscopy_unique_lesion_64]
"""

import argparse
import subprocess
import sys
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits


def features(data: str) -> dict[str, np.ndarray]:
    from ssl_ft.auto_evidence import subset_train, without_test
    from ssl_ft.data import load_data
    from ssl_ft.features import extract_features
    from ssl_ft.finetune.model import build_backbone

    torch.manual_seed(0)
    s = subset_train(without_test(load_data(data, size=28, channels=1, seed=0)), 2000, 0)
    bb, src = build_backbone("none", s.info)
    out = {}
    for split in ("train", "val"):
        out[split] = extract_features(bb, s.images[split], max_value=s.info.max_value,
                                      mean=src["mean"], std=src["std"],
                                      device=torch.device("cpu")).numpy()
        out[split + "_y"] = s.labels[split]
    return out


def fits(f: dict[str, np.ndarray], threads: int) -> float:
    """Seconds for the C grid's fits under ``threads`` BLAS threads."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from ssl_ft.features import C_GRID

    x = StandardScaler().fit_transform(f["train"])
    with threadpool_limits(limits=threads, user_api="blas"):
        t = time.perf_counter()
        for c in C_GRID:
            LogisticRegression(C=c, max_iter=2000).fit(x, f["train_y"])
        return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="ham10000_dermoscopy_unique_lesion_64")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a pair's member: one round
    args = ap.parse_args()
    torch.set_num_threads(1)
    f = features(args.data)
    if args.one:
        print(f"{fits(f, args.one):.2f}")
        return
    res: dict[int, list[float]] = {1: [], 2: []}
    for threads in (1, 2) * 3:
        res[threads].append(fits(f, threads))
    for threads, times in res.items():
        print(f"alone, {threads} BLAS thread(s): {sorted(times)[1]:.2f} s")
    for threads in (1, 2):
        cmd = [sys.executable, __file__, "--data", args.data, "--one", str(threads)]
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate()[0].strip() for p in procs]
        print(f"two processes at once, {threads} BLAS thread(s) each: {' / '.join(outs)} s")


if __name__ == "__main__":
    main()
