#!/usr/bin/env python
"""Where BatchAugment's time goes: two views of a 256-image grey batch at 28 and 64 px on 2
threads (the pretraining presets), wall ms per step and torch.profiler's top operators
(docs/performance.md, run 3).

    python benchmarks/profile_augment.py
"""

import time

import torch

from ssl_ft.augment import BatchAugment

torch.set_num_threads(2)
for size in (28, 64):
    aug = BatchAugment(None, size, 1)
    x = torch.rand(256, 1, size, size)
    for _ in range(2):
        aug(x)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for _ in range(4):
            aug(x), aug(x)
        dt = (time.perf_counter() - t) / 4
    print(f"{size} px: two views of 256 images {dt * 1000:.0f} ms a step ({512 / dt:.0f} views/s)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
