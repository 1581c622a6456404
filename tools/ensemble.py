#!/usr/bin/env python
"""Fuse several (self-supervised) models through concatenated intermediate features.

    python tools/ensemble.py --checkpoint runs/simclr/checkpoint.pt \\
        --checkpoint runs/genesis/checkpoint.pt --data pneumoniamnist --out runs/fusion
    python tools/ensemble.py --checkpoint A --checkpoint B --depth 50 --depth 75 \\
        --layers 25-50 --layers 50-75 --strategy lp-ft --epochs 5 --out runs/fusion_ft
    python tools/ensemble.py RECIPE.yaml [--flags] [key=value ...]

Each model is cut at its depth (default: contrastive 50 %, restorative 75 %, others 100 %), its
pooled features are normalised per model and concatenated, and a head is trained on them.
DIR/metrics.json holds the fusion's val/test AUC and ACC and, under "baselines", each model
alone and late fusion (averaged probabilities). Frozen features are cached (--cache-dir).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ssl_ft.cli import run

LISTS = {"--checkpoint": "checkpoints", "--depth": "depths", "--layers": "layers"}
FLAGS: dict[str, dict] = {
    "--strategy": dict(choices=["lp", "ft", "lp-ft"], help="lp (frozen, default), ft, lp-ft"),
    "--arch": dict(help="architecture for none/imagenet/plain state dicts"),
    "--data": dict(help="MedMNIST name, .npz name in the data root, .npz path or image folder"),
    "--data-root": dict(help="where data names are looked up (default $SSL_FT_DATA)"),
    "--size": dict(type=int, help="resize images to SIZE x SIZE"),
    "--label-fraction": dict(type=float, metavar="F"),
    "--limit": dict(type=int, help="at most this many images per split"),
    "--cache-dir": dict(help="feature cache (default $SSL_FT_CACHE or ~/.cache/ssl_ft)"),
    "--epochs": dict(type=int, help="ft / lp-ft epochs"),
    "--batch-size": dict(type=int),
    "--lr": dict(type=float),
    "--seed": dict(type=int),
    "--out": dict(metavar="DIR"),
    "--device": dict(help="auto, cpu, cuda or cuda:N"),
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="ensemble.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Other recipe keys as key=value (e.g. threads=1). See docs/fusion.md.")
    parser.add_argument("items", nargs="*", metavar="RECIPE.yaml | key=value")
    parser.add_argument("--checkpoint", action="append", dest="checkpoints", metavar="CKPT",
                        help="a model to fuse (repeat; ssl_ft checkpoint, state dict, imagenet, "
                             "none)")
    parser.add_argument("--depth", action="append", dest="depths", metavar="P", type=float,
                        help="truncation depth %% per model (repeat, or once for all)")
    parser.add_argument("--layers", action="append", dest="layers", metavar="A-B",
                        help="layer range to fine-tune per model (ft / lp-ft)")
    for flag, kw in FLAGS.items():
        parser.add_argument(flag, dest=flag[2:].replace("-", "_"), default=None, **kw)
    args = parser.parse_intermixed_args(argv)

    import yaml

    from ssl_ft.ensemble import ensemble, load_ensemble_recipe
    from ssl_ft.errors import UserError

    recipe, overrides = None, []
    for item in args.items:
        if "=" in item:
            overrides.append(item)
        elif recipe is None:
            recipe = item
        else:
            raise UserError(f"unexpected argument {item!r}: give one recipe, then key=value")
    for key in LISTS.values():
        values = getattr(args, key)
        if values:
            listed = yaml.safe_dump(list(values), default_flow_style=True).strip()
            overrides.append(f"{key}={listed}")
    for flag in FLAGS:
        key = flag[2:].replace("-", "_")
        if getattr(args, key) is not None:
            overrides.append(f"{key}={getattr(args, key)}")
    ensemble(load_ensemble_recipe(recipe, overrides))


if __name__ == "__main__":
    sys.exit(run(main))
