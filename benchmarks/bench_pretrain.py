#!/usr/bin/env python
"""Training throughput (images/s) of each SSL method on real images: fp32, bf16 autocast, and
bf16 with the model in channels_last memory format (``--channels-last``) or under
``torch.compile`` (``--compile``).

    python benchmarks/bench_pretrain.py --data pneumoniamnist --arch resnet18 --steps 6
    python benchmarks/bench_pretrain.py --methods simclr --channels-last --compile --threads 1

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
          precision: str, channels_last: bool = False, compiled: bool = False) -> float:
    info = splits.info
    torch.manual_seed(0)
    backbone = create_backbone(arch, in_chans=info.n_channels, stem=stem)
    cls = METHODS[method_name]
    method = cls(backbone, cls.Config(), augment=BatchAugment(None, info.image_size,
                 info.n_channels), mean=info.mean, std=info.std, image_size=info.image_size)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.01)
    x = torch.from_numpy(splits.images["train"][:batch]).float() / info.max_value
    if channels_last:
        method.backbone.to(memory_format=torch.channels_last)
    if compiled:  # as train.compile does: the backbone in place, augmentations eager
        method.backbone.compile()
    device = torch.device("cpu")
    times = []
    warm = 3 if compiled else 1  # compilation happens in the first steps
    for i in range(steps + warm):
        start = time.perf_counter()
        with autocast(device, precision):
            loss = method(x)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(i, steps + warm)
        if i >= warm:  # the first steps warm up
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
    p.add_argument("--channels-last", action="store_true", help="also bf16 + channels_last")
    p.add_argument("--compile", action="store_true", help="also bf16 + torch.compile")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    splits = load_data(args.data, data_root=args.data_root, limit=args.batch)
    print(f"{args.arch} ({args.stem} stem) on {args.data} {splits.info.image_size}px, "
          f"batch {args.batch}, {args.threads} threads: training images/s (median)")
    variants = {"fp32": ("fp32", False, False), "bf16": ("bf16", False, False)}
    if args.channels_last:
        variants["bf16+CL"] = ("bf16", True, False)
    if args.compile:
        variants["bf16+compile"] = ("bf16", False, True)
    print(f"{'method':<12} " + " ".join(f"{v:>12}" for v in variants) + "  (x fp32)")
    for name in args.methods:
        rates = {v: bench(name, splits, args.arch, args.stem, args.batch, args.steps, *opts)
                 for v, opts in variants.items()}
        print(f"{name:<12} " + " ".join(f"{r:>12.1f}" for r in rates.values()) + "  "
              + " ".join(f"{r / rates['fp32']:.2f}" for r in rates.values()), flush=True)


if __name__ == "__main__":
    main()
