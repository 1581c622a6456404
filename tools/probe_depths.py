#!/usr/bin/env python
"""Linear probes at every depth of one or more backbones: where do the features transfer?

    python tools/probe_depths.py --checkpoint runs/simclr/checkpoint.pt \\
        --checkpoint runs/genesis/checkpoint.pt --checkpoint none --arch resnet18 \\
        --data pneumoniamnist --label-fraction 0.1 --seed 0 --seed 1 --out runs/probe_depths

One forward pass per image caches the pooled features after every unit of the depth map; a
logistic-regression probe (C chosen on the validation AUC) is fitted at each depth and seed.
Writes OUT/probe_depths.json, OUT/probe_depths.md (a table per model) and OUT/probe_depths.png
(val and test probe AUC against depth %, all models on one plot). See docs/auto.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ssl_ft.cli import ArgumentParser, run
from ssl_ft.models import RULES, STEMS


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="probe_depths.py", description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", action="append", required=True, metavar="CKPT",
                   help="an ssl_ft checkpoint or state dict, 'imagenet', or 'none' for a random "
                        "init (repeat to compare several on one plot)")
    p.add_argument("--arch", help="backbone for none/imagenet/plain state dicts")
    p.add_argument("--stem", choices=STEMS, default=None)
    p.add_argument("--label", action="append", default=[],
                   help="legend label per checkpoint (default: its method and family)")
    p.add_argument("--data", required=True, help="dataset name, .npz path or image folder")
    p.add_argument("--data-root", default=None)
    p.add_argument("--label-fraction", type=float, default=1.0, metavar="F")
    p.add_argument("--seed", type=int, action="append",
                   help="seed (label subset, random init); repeat for several (default 0)")
    p.add_argument("--limit", type=int, default=None, help="at most this many images per split")
    p.add_argument("--size", type=int, default=None, help="resize the images to this side")
    p.add_argument("--channels", type=int, choices=[1, 3], default=None,
                   help="convert the images to 1 or 3 channels (default: the checkpoint's, "
                        "else the data's)")
    p.add_argument("--depths", type=float, nargs="+", metavar="P",
                   help="probe only at these depths %% (default: after every unit)")
    p.add_argument("--depth-unit", choices=RULES, default=None,
                   help="how units get depths (default: per architecture)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/probe_depths", metavar="DIR")
    args = p.parse_args(argv)

    from ssl_ft.depth_probe import probe_depths, write_probe_report

    result = probe_depths(args.checkpoint, args.data, arch=args.arch, stem=args.stem,
                          labels=args.label, data_root=args.data_root,
                          label_fraction=args.label_fraction, seeds=args.seed or [0],
                          limit=args.limit, size=args.size, channels=args.channels,
                          depths=args.depths, depth_unit=args.depth_unit, device=args.device)
    files = write_probe_report(result, args.out)
    for m in result["models"]:
        b = m["best_val"]
        print(f"{m['label']}: best val probe AUC {b['val_auc_mean']:.4f} at {b['unit']} "
              f"({b['depth']:.1f} %), test AUC there {b['test_auc_mean']:.4f}")
    print("wrote " + ", ".join(map(str, files)))


if __name__ == "__main__":
    sys.exit(run(main))
