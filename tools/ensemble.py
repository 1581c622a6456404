#!/usr/bin/env python
"""Fuse several (self-supervised) models through concatenated intermediate features.

    python tools/ensemble.py --checkpoint runs/simclr/checkpoint.pt \\
        --checkpoint runs/genesis/checkpoint.pt --data pneumoniamnist --out runs/fusion
    python tools/ensemble.py --checkpoint A --checkpoint B --depth 50 --depth 75 \\
        --layers 25-50 --layers 50-75 --strategy lp-ft --epochs 5 --out runs/fusion_ft
    python tools/ensemble.py RECIPE.yaml [--flags] [key=value ...]

Each model is cut at its depth (default: contrastive 50 %, restorative 75 %, others 100 %;
--depth auto: where its linear probe is best on the validation split, see docs/auto.md), its
pooled features are normalised per model and concatenated, and a head is trained on them.
DIR/metrics.json holds the fusion's val/test AUC and ACC and, under "baselines", each model
alone and late fusion (averaged probabilities). Frozen features are cached (--cache-dir).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ssl_ft.cli import ArgumentParser, add_recipe_flags, recipe_and_overrides, run
from ssl_ft.ensemble.config import FUSION_STRATEGIES

LISTS = ("checkpoints", "depths", "layers")  # recipe keys of the repeatable flags below
FLAGS: dict[str, dict] = {
    "--strategy": dict(choices=FUSION_STRATEGIES, help="lp (frozen backbones, the default), ft "
                                                       "or lp-ft (fine-tune their --layers)"),
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
    "--allow-overlap": dict(action="store_const", const="true",
                            help="run even if a checkpoint was pretrained on images of this "
                                 "data's val/test splits (refused by default)"),
}


def _depth(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a percentage or 'auto'") from None


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="ensemble.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Other recipe keys as key=value (e.g. threads=1). See docs/fusion.md.")
    add_recipe_flags(parser, FLAGS)
    parser.add_argument("--checkpoint", action="append", dest="checkpoints", metavar="CKPT",
                        help="a model to fuse (repeat; ssl_ft checkpoint, state dict, imagenet, "
                             "none)")
    parser.add_argument("--depth", action="append", dest="depths", metavar="P|auto",
                        type=_depth, help="truncation depth %% per model (repeat, or once for "
                        "all); auto: the quarter end (25/50/75/100) whose linear probe has the "
                        "best validation AUC")
    parser.add_argument("--layers", action="append", dest="layers", metavar="A-B",
                        help="layer range to fine-tune per model (ft / lp-ft)")
    args = parser.parse_intermixed_args(argv)

    from ssl_ft.ensemble import ensemble, load_ensemble_recipe

    recipe, overrides = recipe_and_overrides(args, [*LISTS, *FLAGS])
    ensemble(load_ensemble_recipe(recipe, overrides))


if __name__ == "__main__":
    sys.exit(run(main))
