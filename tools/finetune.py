#!/usr/bin/env python
"""Fine-tune a (self-supervised) checkpoint on a labelled dataset, depth-wise.

    python tools/finetune.py --checkpoint runs/simclr/checkpoint.pt --data pneumoniamnist \\
        --layers 25-50 --truncate 75 --strategy lp-ft --seed 0 --out runs/ft/simclr_25-50
    python tools/finetune.py --checkpoint runs/simclr/checkpoint.pt --layers 25-50 --dry-run
    python tools/finetune.py --checkpoint CKPT --data breastmnist --layers auto --truncate auto
    python tools/finetune.py RECIPE.yaml [--flags] [key=value ...]

With --layers auto / --truncate auto the range and the cut are chosen on the train and val
splits, never the test split: a linear probe picks the cut, then the quarters at that cut race
(successive halving on the real schedule by validation AUC; the winner runs to the end), and
the choice, its evidence and its wall time go into metrics.json ("auto").
Writes DIR/metrics.json (val/test AUC and ACC of the best-validation epoch, per class, confusion
matrices), DIR/model.pt (the fine-tuned model), last.pt (for --resume), TensorBoard logs in DIR/tb.
Under ``torchrun --nproc_per_node N tools/finetune.py ...`` the same command trains with DDP.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ssl_ft.cli import ArgumentParser, add_recipe_flags, recipe_and_overrides, run
from ssl_ft.finetune.strategies import STRATEGIES
from ssl_ft.models import RULES, STEMS

# flag -> recipe key; every flag is also a recipe key (dashes become underscores)
FLAGS: dict[str, dict] = {
    "--checkpoint": dict(help="ssl_ft checkpoint, plain torchvision/timm state dict, "
                              "'imagenet' or 'none' (random init: the from-scratch baseline)"),
    "--arch": dict(help="architecture (needed with none/imagenet/plain state dicts; "
                        "checked against an ssl_ft checkpoint)"),
    "--stem": dict(choices=STEMS, help="stem (default: the checkpoint's)"),
    "--data": dict(help="MedMNIST name, .npz name in the data root, .npz path or image folder"),
    "--data-root": dict(help="where data names are looked up (default $SSL_FT_DATA)"),
    "--size": dict(type=int, help="resize images to SIZE x SIZE"),
    "--channels": dict(type=int, choices=[1, 3], help="convert images to 1 or 3 channels"),
    "--layers": dict(metavar="A-B|auto", help="train the units whose depth lies in (A, B] "
                                               "(default 0-100); auto: chosen from the train "
                                               "and val splits first (docs/auto.md)"),
    "--truncate": dict(metavar="P|auto", help="keep the units at depth <= P %% (default 100); "
                                              "auto: chosen"),
    "--depth-unit": dict(choices=RULES,
                         help="how units get depths (default: per architecture)"),
    "--strategy": dict(help=f"{' '.join(STRATEGIES)} (default ft; docs/finetuning.md)"),
    "--epochs": dict(type=int, help="epochs of optimiser steps (lp-ft: after its probe; lp: "
                                    "none, the head is the converged probe)"),
    "--batch-size": dict(type=int),
    "--lr": dict(type=float),
    "--label-fraction": dict(type=float, metavar="F", help="share of the train labels used"),
    "--limit": dict(type=int, help="at most this many images per split"),
    "--seed": dict(type=int),
    "--out": dict(metavar="DIR", help="run folder (default runs/finetune)"),
    "--device": dict(help="auto, cpu, cuda or cuda:N"),
    "--allow-overlap": dict(action="store_const", const="true",
                            help="run even if the checkpoint was pretrained on images of this "
                                 "data's val/test splits (refused by default)"),
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="finetune.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Other recipe keys as key=value, e.g. strategy_args.ft_lr_scale=0.1 optimizer=sgd "
               "freeze_bn=false augment=flip. See docs/finetuning.md.")
    add_recipe_flags(parser, FLAGS)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last.pt")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the depth-map table and the trainable parameters; no training")
    args = parser.parse_intermixed_args(argv)

    from ssl_ft.finetune import finetune, load_finetune_recipe, prepare

    recipe, overrides = recipe_and_overrides(args, FLAGS)
    cfg = load_finetune_recipe(recipe, overrides)
    if args.dry_run:
        from ssl_ft.auto_layers import resolve_auto

        cfg, _, _, _ = resolve_auto(cfg, dry_run=True)  # layers/truncate auto: evidence only
        print(prepare(cfg).describe())
        return
    finetune(cfg, resume=args.resume)


if __name__ == "__main__":
    sys.exit(run(main))
