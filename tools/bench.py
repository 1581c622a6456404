#!/usr/bin/env python
"""Benchmark ssl_ft against the hardware limit and lightly's usual loop, inside one process.

    python tools/bench.py                 # SimCLR, MoCo v2, Genesis at 28 and 64 px; fine-tuning
    python tools/bench.py --quick         # SimCLR at 28 px and a small fine-tuning set (~2 min)
    python tools/bench.py --json bench.json

Contenders alternate round by round so that machine drift cancels; read the numbers as ratios.
What each row means: ssl_ft/benchmark.py and docs/performance.md.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ssl_ft.cli import ArgumentParser, run

DATA = {28: "pneumoniamnist", 64: "chest_xray_kermany_64"}


def _table(title: str, results: dict, base: str | None) -> list[str]:
    lines = [f"\n{title}", f"{'contender':<32} {'images/s':>9} {'x ' + (base or ''):>18} "
             f"{'peak RSS MB':>12}"]
    ref = results[base].median if base else None
    for name, r in results.items():
        ratio = f"{r.median / ref:.2f}" if ref else ""
        lines.append(f"{name:<32} {r.median:>9.1f} {ratio:>18} {r.peak_rss / 2**20:>12.0f}")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="SimCLR at 28 px, small fine-tuning")
    p.add_argument("--json", metavar="FILE", help="write every number here")
    p.add_argument("--data-root", default=None, help="default $SSL_FT_DATA")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: the cores this process may use)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per contender")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--configs", nargs="*", metavar="METHOD:SIZE",
                   help="pretraining configurations (default simclr/moco/genesis at 28 and 64; "
                        "--quick: simclr:28)")
    p.add_argument("--finetune-limit", type=int, default=None,
                   help="fine-tuning images per split (default 1500; --quick 300)")
    args = p.parse_args(argv)

    import torch

    from ssl_ft.benchmark import alternate, finetune_epochs, pretrain_contenders, probe_vs_forward
    from ssl_ft.data import load_data
    from ssl_ft.errors import UserError
    from ssl_ft.methods import METHODS
    from ssl_ft.runtime import Dist, cpu_has_bf16, resolve_precision, set_threads

    threads = set_threads(args.threads, Dist())
    precision = resolve_precision("auto", torch.device("cpu"), cpu_auto="bf16")
    rounds = args.rounds or (1 if args.quick else 3)
    steps = 2 if args.quick else 4
    configs = [("simclr", 28)] if args.quick else [
        (m, s) for s in (28, 64) for m in ("simclr", "moco", "genesis")]
    if args.configs:
        try:
            configs = [(c.split(":")[0], int(c.split(":")[1])) for c in args.configs]
        except (IndexError, ValueError):
            raise UserError(f"--configs takes METHOD:SIZE items, got {args.configs}") from None
        bad = [f"{m}:{s}" for m, s in configs if s not in DATA or m not in METHODS]
        if bad:
            raise UserError(f"--configs {' '.join(bad)}: methods {', '.join(sorted(METHODS))}, "
                            f"sizes {', '.join(map(str, DATA))}")
    ft_limit = args.finetune_limit or (300 if args.quick else 1500)
    report = {"threads": threads, "precision": precision, "cpu_bf16": cpu_has_bf16(),
              "rounds": rounds, "batch": args.batch, "steps": steps, "pretrain": {}}
    lines = [f"{threads} threads, pretraining default precision {precision}, batch {args.batch}, "
             f"{steps} steps a call, {rounds} round(s), median images/s"]
    for method, size in configs:
        images = load_data(DATA[size], data_root=args.data_root,
                           limit=args.batch * steps).images["train"]
        res = alternate(pretrain_contenders(method, images, batch=args.batch, steps=steps,
                                            precision=precision), rounds)
        base = next(k for k in res if k.startswith("ssl_ft"))
        lines += _table(f"{method} resnet18 {size} px ({DATA[size]})", res, base)
        report["pretrain"][f"{method}_{size}"] = {k: r.as_dict() for k, r in res.items()}
    splits = load_data("pneumoniamnist", data_root=args.data_root, limit=ft_limit)
    with tempfile.TemporaryDirectory() as tmp:
        res = alternate(finetune_epochs("pneumoniamnist", args.data_root, tmp,
                                        limit=ft_limit,
                                        threads=threads), rounds)
    lines += _table(f"fine-tuning resnet18 28 px, {len(splits.labels['train'])} train images, "
                    "second-epoch images/s", res, "ft 0-100 cache off")
    report["finetune"] = {k: r.as_dict() for k, r in res.items()}
    pf = probe_vs_forward(splits.images["train"], splits.labels["train"])
    lines.append(f"\n100-epoch linear head on cached features {pf['probe_s']:.2f} s vs one "
                 f"forward pass {pf['forward_s']:.2f} s: {pf['ratio']:.2f}x")
    report["probe_vs_forward"] = pf
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run(main))
