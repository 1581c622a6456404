#!/usr/bin/env python
"""Adam step time on resnet18's parameters: the default (for-loop), foreach and fused kernels on
this CPU, median of 3 alternating rounds of 20 steps (docs/performance.md).

    python benchmarks/bench_optimizer.py
"""

import time

import torch
import torchvision

torch.manual_seed(0)
m = torchvision.models.resnet18()
for name, params in (("all 11.2M", list(m.parameters())),
                     ("layer4 8.4M", list(m.layer4.parameters()))):
    for p in params:
        p.grad = torch.randn_like(p)
    res = {}
    for kind in ("default", "foreach", "fused") * 3:
        kw = {} if kind == "default" else {kind: True}
        opt = torch.optim.Adam(params, lr=1e-3, **kw)
        opt.step()
        t = time.perf_counter()
        for _ in range(20):
            opt.step()
        res.setdefault(kind, []).append((time.perf_counter() - t) / 20 * 1000)
    print(name, {k: f"{sorted(v)[1]:.1f} ms" for k, v in res.items()},
          "threads", torch.get_num_threads())
