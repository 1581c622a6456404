#!/usr/bin/env python
"""CPU seconds per training step of each contrastive / joint-embedding method, with its
PneumoniaMNIST recipe's ``method_args`` and a batch of 256 real 28 px images, on one thread.

    python docs/runs/joint_embedding_cpu_time.py --data-root ../shared/data

``time.process_time`` counts only this process's CPU time, so the numbers hold on a core that
other jobs share (wall time there is inflated by the sharing); the median of 3 steps after one
warm-up step. The numbers are quoted in docs/pretraining.md ("Devices and scale").
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from ssl_ft.data import load_data
from ssl_ft.pretrain import build_method, load_pretrain_recipe

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default=None)
    p.add_argument("--methods", nargs="*",
                   default=["simclr", "moco", "byol", "vicreg", "barlow_twins", "dino"])
    args = p.parse_args()
    torch.set_num_threads(1)
    splits = load_data("pneumoniamnist", data_root=args.data_root)
    x = torch.from_numpy(splits.images["train"][:256]).float() / splits.info.max_value
    for name in args.methods:
        recipe = REPO / "recipes" / "pretrain" / f"{name}_pneumoniamnist.yaml"
        cfg = load_pretrain_recipe(recipe)
        torch.manual_seed(0)
        method = build_method(cfg, splits)
        opt = torch.optim.SGD([q for q in method.parameters() if q.requires_grad], lr=0.01)
        times = []
        for step in range(4):
            start = time.process_time()
            loss = method(x)["loss"]
            opt.zero_grad()
            loss.backward()
            method.before_step(step, 4)
            opt.step()
            method.after_step(step, 4)
            if step:
                times.append(time.process_time() - start)
        cpu = statistics.median(times)
        print(f"{name:13s} {cpu:.2f} CPU s/step  ({256 / cpu:.0f} images per CPU second)")


if __name__ == "__main__":
    main()
