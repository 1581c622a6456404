#!/usr/bin/env python
"""Training throughput (images/s) of each SSL method on real images, fp32 against bf16 autocast.

    python benchmarks/bench_pretrain.py --data pneumoniamnist --arch resnet18 --steps 6

Times are measured inside one run and best read as ratios (shared machines drift).
"""

from __future__ import annotations

import argparse
import time

import torch

from ssl_ft.augment import BatchAugment
from ssl_ft.data import load_data
from ssl_ft.methods import METHODS
from ssl_ft.models import create_backbone
from ssl_ft.runtime import autocast


def bench(method_name: str, splits, arch: str, stem: str, batch: int, steps: int,
          precision: str) -> float:
    info = splits.info
    torch.manual_seed(0)
    backbone = create_backbone(arch, in_chans=info.n_channels, stem=stem)
    cls = METHODS[method_name]
    method = cls(backbone, cls.Config(), augment=BatchAugment(None, info.image_size,
                 info.n_channels), mean=info.mean, std=info.std, image_size=info.image_size)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.01)
    x = torch.from_numpy(splits.images["train"][:batch]).float() / info.max_value
    device = torch.device("cpu")
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        with autocast(device, precision):
            loss = method(x)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(i, steps + 1)
        if i:  # the first step warms up
            times.append(time.perf_counter() - start)
    times.sort()
    return batch / times[len(times) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="pneumoniamnist")
    p.add_argument("--data-root", default=None)
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--stem", default="standard")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--methods", nargs="*", default=sorted(METHODS))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    splits = load_data(args.data, data_root=args.data_root, limit=args.batch)
    print(f"{args.arch} ({args.stem} stem) on {args.data} {splits.info.image_size}px, "
          f"batch {args.batch}, {args.threads} threads: training images/s (median)")
    print(f"{'method':<12} {'fp32':>8} {'bf16':>8} {'ratio':>6}")
    for name in args.methods:
        fp32 = bench(name, splits, args.arch, args.stem, args.batch, args.steps, "fp32")
        bf16 = bench(name, splits, args.arch, args.stem, args.batch, args.steps, "bf16")
        print(f"{name:<12} {fp32:>8.1f} {bf16:>8.1f} {bf16 / fp32:>6.2f}")


if __name__ == "__main__":
    main()
