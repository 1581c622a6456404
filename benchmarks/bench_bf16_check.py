#!/usr/bin/env python
"""How steady is ``train.precision: auto``'s bf16 check (ssl_ft/pretrain/precision.py)?
SimCLR and MoCo v2, resnet18, 28 px PneumoniaMNIST, batch 256, 2 threads: the check with one
round three times (the first on a model just built, as a run meets it) and with three rounds
twice, then the benchmark's limits (tools/bench.py's ``limit fp32`` / ``limit bf16``, 3
alternating rounds of 4 steps), each as bf16 / fp32 (docs/performance.md, run 5).

    python benchmarks/bench_bf16_check.py
"""

import statistics

import torch

from ssl_ft.benchmark import alternate, bench_method, pretrain_contenders
from ssl_ft.data import load_data
from ssl_ft.pretrain.precision import measure_bf16


def main() -> None:
    torch.set_num_threads(2)
    images = load_data("pneumoniamnist", limit=1024).images["train"]
    cpu = torch.device("cpu")
    for name in ("simclr", "moco"):
        method = bench_method(name, images, 28)
        method.to(memory_format=torch.channels_last)
        one = [measure_bf16(method, 256, 1, 28, cpu, rounds=1)["speedup"] for _ in range(3)]
        three = [measure_bf16(method, 256, 1, 28, cpu, rounds=3) for _ in range(2)]
        runs = pretrain_contenders(name, images, batch=256, steps=4, precision="bf16",
                                   method=method)
        res = alternate({k: runs[k] for k in ("limit fp32", "limit bf16")}, 3,
                        warmup_args={"steps": 1})  # as tools/bench.py times them
        limits = [b / a for a, b in zip(res["limit fp32"].rates, res["limit bf16"].rates,
                                        strict=True)]
        print(f"{name}: check of 1 round {[round(x, 2) for x in one]}; of 3 rounds, medians "
              f"{[round(r['speedup'], 2) for r in three]} (rounds "
              f"{[[round(x, 2) for x in r['round_speedups']] for r in three]}); limits per round "
              f"{[round(x, 2) for x in limits]}, median {statistics.median(limits):.2f}",
              flush=True)


if __name__ == "__main__":
    main()
