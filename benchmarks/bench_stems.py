#!/usr/bin/env python
"""Which stem for small images? Throughput and linear-probe AUC of the standard, midres and
lowres resnet18 stems at 28 and 64 px.

    python benchmarks/bench_stems.py --minutes 3 --threads 2 --json stems.json

For each size and stem: SimCLR training images/s (bf16 on CPUs with native bf16, batch 128,
median of 5 steps), then a linear probe (C chosen on val, test AUC) of the random init (3 seeds)
and of a SimCLR pretraining given the same wall-clock budget (``--minutes``) on the size's
dataset: equal time, not equal epochs, because a slower stem is what a CPU user pays for.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from ssl_ft.pretrain import load_pretrain_recipe, pretrain
from ssl_ft.probe import linear_probe
from ssl_ft.runtime import cpu_has_bf16

DATA = {28: "breastmnist", 64: "busi_breast_ultrasound_64"}
STEMS = ("standard", "midres", "lowres")


def images_per_s(size: int, stem: str, data_root: str | None, precision: str) -> float:
    from ssl_ft.benchmark import alternate, pretrain_contenders
    from ssl_ft.data import load_data

    images = load_data(DATA[size], data_root=data_root, size=size, channels=1,
                       limit=128 * 2).images["train"]
    runs = pretrain_contenders("simclr", images, batch=128, steps=2, precision=precision,
                               lightly_workers=(), stem=stem, channels_last=False)
    res = alternate({k: v for k, v in runs.items() if k.startswith("ssl_ft")}, 3)
    return next(iter(res.values())).median


def budget_pretrain(size: int, stem: str, minutes: float, data_root: str | None, out: str,
                    threads: int) -> tuple[str, int]:
    """SimCLR for ``minutes`` (epochs sized from a 1-epoch timing); returns (checkpoint, epochs)."""
    base = [f"data.name={DATA[size]}", f"data.size={size}", "data.channels=1",
            f"model.stem={stem}", "train.batch_size=128", "eval.every=0",
            f"train.threads={threads}", "train.save_every=0"]
    if data_root:
        base.append(f"data.root={data_root}")
    t0 = time.perf_counter()
    pretrain(load_pretrain_recipe("recipes/quickstart.yaml",
                                  [*base, "train.epochs=1", f"out={out}/timing"]), progress=False)
    epochs = max(1, int(minutes * 60 / (time.perf_counter() - t0)))
    pretrain(load_pretrain_recipe("recipes/quickstart.yaml",
                                  [*base, f"train.epochs={epochs}", f"out={out}/run"]),
             progress=False)
    return f"{out}/run/checkpoint.pt", epochs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-root", default=None)
    p.add_argument("--sizes", type=int, nargs="*", default=[28, 64])
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    precision = "bf16" if cpu_has_bf16() else "fp32"
    rows = []
    print(f"{'size':>4} {'stem':<9} {'img/s':>7} {'random probe AUC':>18} {'SimCLR probe AUC':>17}"
          f" {'epochs':>6}")
    for size in args.sizes:
        for stem in STEMS:
            rate = images_per_s(size, stem, args.data_root, precision)
            rand = [linear_probe(None, DATA[size], arch="resnet18", stem=stem, seed=s,
                                 data_root=args.data_root, size=size, channels=1).test["auc"]
                    for s in range(3)]
            with tempfile.TemporaryDirectory() as tmp:
                ckpt, epochs = budget_pretrain(size, stem, args.minutes, args.data_root, tmp,
                                               args.threads)
                ssl = linear_probe(ckpt, DATA[size], data_root=args.data_root, size=size,
                                   channels=1).test["auc"]
            mean = sum(rand) / 3
            sd = (sum((r - mean) ** 2 for r in rand) / 2) ** 0.5
            rows.append({"size": size, "stem": stem, "images_per_s": rate,
                         "random_probe_auc": rand, "simclr_probe_auc": ssl, "epochs": epochs,
                         "minutes": args.minutes, "precision": precision})
            print(f"{size:>4} {stem:<9} {rate:>7.0f} {mean:>11.3f} ± {sd:.3f} {ssl:>17.3f} "
                  f"{epochs:>6}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
