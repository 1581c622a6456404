"""Throughput of :class:`ssl_ft.augment.BatchAugment` against per-image torchvision v2 transforms.

Both make two views of a 256-image batch in the main process with ``torch.set_num_threads(2)``;
the per-image pipeline is the equivalent torchvision ``transforms.v2`` chain (RandomResizedCrop,
flips, rotation, ColorJitter, gamma for grayscale, grayscale for RGB, GaussianBlur, noise) with
the same preset values. Each timing is the median of 3 repeats after one warm-up; batched and per-image runs
alternate, and the speed-up is the median of the per-repeat ratios.

Run: ``python benchmarks/bench_augment.py [--threads N]``. On a machine whose cores are busy with
other processes, 2 intra-op threads can stall on each other (OpenMP barriers); ``--threads 1``
then shows the throughput without that contention.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import time
from collections.abc import Callable

import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF

from ssl_ft.augment import AugmentConfig, BatchAugment, blur_kernel_size

BATCH, REPEATS = 256, 3
CASES = [(1, 28), (1, 64), (3, 64)]   # (channels, size); input size == output size


def torchvision_pipeline(size: int, channels: int) -> T.Compose:
    """The per-image torchvision v2 equivalent of ``BatchAugment(AugmentConfig(), size, channels)``."""
    c = AugmentConfig().resolve(size, channels)
    jitter: list[torch.nn.Module] = [T.ColorJitter(c.brightness, c.contrast, c.saturation, c.hue)]
    if c.gamma > 0:
        lg = math.log1p(c.gamma)
        jitter.append(T.Lambda(lambda x: TF.adjust_gamma(x, math.exp(lg * random.uniform(-1, 1)))))
    steps = [
        T.RandomResizedCrop(size, scale=c.crop_scale, ratio=c.crop_ratio, antialias=True),
        T.RandomHorizontalFlip(c.hflip),
        T.RandomVerticalFlip(c.vflip),
        T.RandomRotation(c.rotate),
        T.RandomApply(jitter, p=c.jitter_p),
        T.RandomGrayscale(c.grayscale_p) if channels == 3 else T.Identity(),
        T.RandomApply([T.GaussianBlur(blur_kernel_size(size, c.blur_sigma[1]), c.blur_sigma)],
                      p=c.blur_p),
        T.GaussianNoise(sigma=c.noise_std, clip=True) if c.noise_std > 0 else T.Identity(),
    ]
    return T.Compose(steps)


def two_views_batched(aug: BatchAugment, x: torch.Tensor) -> None:
    aug(x), aug(x)


def two_views_per_image(aug: T.Compose, x: torch.Tensor) -> None:
    for _ in range(2):
        torch.stack([aug(img) for img in x])


def seconds(fn: Callable[..., object], *args: object) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    torch.set_num_threads(parser.parse_args().threads)
    torch.manual_seed(0)
    print(f"two views of a {BATCH}-image batch, {torch.get_num_threads()} threads, "
          f"median of {REPEATS}, torch {torch.__version__}, load average at start "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'images':<14}{'BatchAugment img/s':>20}{'torchvision v2 img/s':>22}{'speed-up':>10}")
    for channels, size in CASES:
        x = torch.rand(BATCH, channels, size, size)
        batched, per_image = BatchAugment(AugmentConfig(), size, channels), torchvision_pipeline(
            size, channels)
        two_views_batched(batched, x), two_views_per_image(per_image, x)   # warm-up
        # Interleaved, so both sides of each ratio see the same machine load.
        t_b, t_p = [], []
        for _ in range(REPEATS):
            t_b.append(seconds(two_views_batched, batched, x))
            t_p.append(seconds(two_views_per_image, per_image, x))
        n, ratio = 2 * BATCH, statistics.median(p / b for p, b in zip(t_p, t_b, strict=True))
        print(f"{f'{channels}ch {size}px':<14}{n / statistics.median(t_b):>20,.0f}"
              f"{n / statistics.median(t_p):>22,.0f}{ratio:>9.1f}x")


if __name__ == "__main__":
    main()
