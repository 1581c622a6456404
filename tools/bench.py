#!/usr/bin/env python
"""Benchmark ssl_ft against the hardware limit and lightly's usual loop, inside one process.

    python tools/bench.py --json bench.json   # SimCLR, MoCo v2, Genesis at 28 and 64 px; fine-tuning
    python tools/bench.py --quick             # SimCLR at 28 px and a small fine-tuning set
    python tools/bench.py --configs simclr:64 --rounds 5   # one configuration, more rounds

Contenders alternate round by round so that machine drift cancels; read the numbers as ratios.
The last table holds issue #16's targets, each ratio marked pass or fail (also in the JSON under
"targets"). What each row means: ssl_ft/benchmark.py and docs/performance.md.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ssl_ft.cli import ArgumentParser, run

DATA = {28: "pneumoniamnist", 64: "chest_xray_kermany_64"}
FULL_CONFIGS = [(m, s) for s in (28, 64) for m in ("simclr", "moco", "genesis")]


def table(title: str, results: dict, base: str | None) -> list[str]:
    """The lines of one table: contender, median images/s, ratio to ``base``, peak RSS."""
    lines = [f"\n{title}", f"{'contender':<34} {'images/s':>9} {'x ' + (base or ''):>24} "
             f"{'peak RSS MB':>12}"]
    ref = results[base]["images_per_s"] if base else None
    for name, r in results.items():
        ratio = f"{r['images_per_s'] / ref:.2f}" if ref else ""
        lines.append(f"{name:<34} {r['images_per_s']:>9.1f} {ratio:>24} "
                     f"{r['peak_rss_mb']:>12.0f}")
    return lines


def targets_table(rows: list[dict]) -> list[str]:
    """The targets (:func:`ssl_ft.benchmark.targets`) as lines, with a pass count."""
    lines = ["\ntargets (issue #16)",
             f"{'ratio':<58} {'value':>6} {'target':>8}  result"]
    for t in rows:
        lines.append(f"{t['target']:<58} {t['value']:>6.2f} {t['op']:>3} {t['threshold']:<4.2f}"
                     f"  {'pass' if t['pass'] else 'FAIL'}")
    lines.append(f"{sum(t['pass'] for t in rows)} of {len(rows)} targets pass")
    return lines


class _Clock:
    """Wall and CPU seconds of each section of the run, for report["seconds"]."""

    def __init__(self) -> None:
        self.seconds: dict[str, dict[str, float]] = {}

    def section(self, name: str):
        import contextlib

        @contextlib.contextmanager
        def timed():
            w, c = time.perf_counter(), time.process_time()
            yield
            self.seconds[name] = {"wall": time.perf_counter() - w,
                                  "cpu": time.process_time() - c}
            print(f"bench: {name} took {self.seconds[name]['wall']:.0f} s", file=sys.stderr)
        return timed()


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="SimCLR at 28 px, 2 steps a call, 1 round, 300 fine-tuning images")
    p.add_argument("--json", metavar="FILE", help="write every number here")
    p.add_argument("--data-root", default=None, help="default $SSL_FT_DATA")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: the cores this process may use)")
    p.add_argument("--rounds", type=int, default=None,
                   help="timed rounds per pretraining contender (default 3; --quick 1)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per timed pretraining call (default 4 at 28 px and 2 "
                        "at 64 px, where a step costs ~4x: each call lasts seconds; --quick 2)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--configs", nargs="*", metavar="METHOD:SIZE",
                   help="pretraining configurations (default simclr/moco/genesis at 28 and 64; "
                        "--quick: simclr:28; none: no pretraining rows)")
    p.add_argument("--finetune-limit", type=int, default=None,
                   help="fine-tuning images per split (default 1500; --quick 300)")
    p.add_argument("--finetune-rounds", type=int, default=None,
                   help="timed fine-tuning runs per contender (default: --rounds)")
    p.add_argument("--finetune", nargs="*", metavar="CONTENDER", default=None,
                   help="fine-tuning contenders by name (default all; none: no fine-tuning)")
    p.add_argument("--profile", metavar="DIR", default=None,
                   help="also run every contender once under torch.profiler and write what "
                        "bounds it to DIR/profile.md (ssl_ft/bench_profile.py)")
    args = p.parse_args(argv)

    import torch

    from ssl_ft.bench_profile import profiled
    from ssl_ft.benchmark import (
        FINETUNE_CONTENDERS,
        alternate,
        bench_method,
        finetune_epochs,
        pretrain_contenders,
        probe_vs_forward,
        targets,
    )
    from ssl_ft.data import load_data
    from ssl_ft.errors import UserError
    from ssl_ft.methods import METHODS
    from ssl_ft.pretrain.config import TrainConfig
    from ssl_ft.pretrain.precision import auto_precision
    from ssl_ft.runtime import Dist, cpu_has_bf16, set_threads

    threads = set_threads(args.threads, Dist())
    channels_last = TrainConfig().channels_last  # pretraining's default memory format
    for flag in ("rounds", "finetune_rounds", "steps", "finetune_limit", "batch"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    rounds = args.rounds or (1 if args.quick else 3)
    ft_rounds = args.finetune_rounds or rounds
    configs = [("simclr", 28)] if args.quick else FULL_CONFIGS
    if args.configs is not None:
        try:
            configs = [(c.split(":")[0], int(c.split(":")[1])) for c in args.configs]
        except (IndexError, ValueError):
            raise UserError(f"--configs takes METHOD:SIZE items, got {args.configs}") from None
        bad = [f"{m}:{s}" for m, s in configs if s not in DATA or m not in METHODS]
        if bad:
            raise UserError(f"--configs {' '.join(bad)}: methods {', '.join(sorted(METHODS))}, "
                            f"sizes {', '.join(map(str, DATA))}")
    ft_names = list(FINETUNE_CONTENDERS) if args.finetune is None else args.finetune
    unknown = [n for n in ft_names if n not in FINETUNE_CONTENDERS]
    if unknown:
        raise UserError(f"--finetune {unknown[0]!r}: choose from "
                        f"{', '.join(repr(n) for n in FINETUNE_CONTENDERS)}")
    ft_limit = args.finetune_limit or (300 if args.quick else 1500)
    clock = _Clock()
    report = {"threads": threads, "precision": {}, "channels_last": channels_last,
              "cpu_bf16": cpu_has_bf16(),
              "rounds": rounds, "finetune_rounds": ft_rounds, "batch": args.batch,
              "steps": {}, "finetune_limit": ft_limit, "torch": torch.__version__,
              "pretrain": {}, "finetune": {}, "probe_vs_forward": None}
    lines = [f"{threads} threads, pretraining's precision as its `auto` chooses it per "
             f"configuration (ssl_ft/pretrain/precision.py)"
             f"{', channels_last' if channels_last else ''}, batch {args.batch}, "
             f"{rounds} round(s) after a 1-step warm-up, median images/s"]
    profiles: dict = {}
    for method, size in configs:
        steps = args.steps or (2 if args.quick or size > 28 else 4)
        with clock.section(f"pretrain {method}_{size}"):
            images = load_data(DATA[size], data_root=args.data_root,
                               limit=args.batch * steps).images["train"]
            # the precision pretraining's `auto` takes here (measured, or cached from before)
            model = bench_method(method, images, size)
            if channels_last:
                model.to(memory_format=torch.channels_last)
            precision, how = auto_precision("auto", torch.device("cpu"), model,
                                            batch=args.batch, channels=images.shape[1],
                                            size=size, channels_last=channels_last, dist=Dist())
            report["precision"][f"{method}_{size}"] = how or {"choice": precision}
            contenders = pretrain_contenders(method, images, batch=args.batch, steps=steps,
                                             precision=precision, channels_last=channels_last,
                                             method=model)
            res = alternate(contenders, rounds, warmup_args={"steps": 1})
            if args.profile:
                profiles[f"pretrain {method}_{size}"] = profiled(contenders, args.batch * steps)
        rows = {k: r.as_dict() for k, r in res.items()}
        chose = (f"; auto took {precision}: bf16 {how['speedup']:.2f}x fp32 in its "
                 f"{how['source']} check" if how and "speedup" in how else "")
        lines += table(f"{method} resnet18 {size} px ({DATA[size]}), {steps} steps a call{chose}",
                       rows, f"ssl_ft ({precision})")
        report["pretrain"][f"{method}_{size}"] = rows
        report["steps"][f"{method}_{size}"] = steps
    if ft_names:
        with clock.section("finetune"), tempfile.TemporaryDirectory() as tmp:
            # each run is timed on its last epoch (its first warms up): no warm-up call
            contenders = finetune_epochs("pneumoniamnist", args.data_root, tmp, epochs=2,
                                         limit=ft_limit, threads=threads, names=ft_names)
            res = alternate(contenders, ft_rounds, warmup=False)
            if args.profile:  # a call is a whole run: 2 epochs of at most ft_limit images
                profiles["finetune"] = profiled(contenders, 2 * ft_limit)
        report["finetune"] = {k: r.as_dict() for k, r in res.items()}
        lines += table(f"fine-tuning resnet18 28 px (pneumoniamnist, at most {ft_limit} images "
                       "a split), last-epoch images/s",
                       report["finetune"], "ft 0-100 cache off"
                       if "ft 0-100 cache off" in report["finetune"] else None)
    with clock.section("probe vs forward"):
        splits = load_data("pneumoniamnist", data_root=args.data_root, limit=ft_limit)
        pf = probe_vs_forward(splits.images["train"], splits.labels["train"])
    lines.append(f"\n100-epoch linear head on cached features {pf['probe_s']:.2f} s vs one "
                 f"forward pass {pf['forward_s']:.2f} s: {pf['ratio']:.2f}x")
    report["probe_vs_forward"] = pf
    report["targets"] = targets(report)
    report["seconds"] = clock.seconds
    lines += targets_table(report["targets"])
    print("\n".join(lines))
    if args.profile:
        from ssl_ft.bench_profile import write

        print(f"wrote {write(profiles, Path(args.profile))}", file=sys.stderr)
    if args.json:
        from ssl_ft.checkpoint import write_json

        write_json(Path(args.json), report)
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run(main))
