#!/usr/bin/env python
"""Linear probe of frozen backbone features: logistic regression on the train split, C chosen
on validation AUC, test AUC/ACC with MedMNIST conventions.

    python tools/probe.py --checkpoint runs/simclr/checkpoint.pt --data pneumoniamnist
    python tools/probe.py --checkpoint none --arch resnet18 --data pneumoniamnist --seed 1
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ssl_ft.cli import ArgumentParser, run
from ssl_ft.models import STEMS


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="probe.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True,
                   help="an ssl_ft checkpoint, a plain or wrapped state dict (.pt) or a "
                        ".safetensors file (these two need --arch), or 'none' for a random init")
    p.add_argument("--arch", help="backbone (required with --checkpoint none)")
    p.add_argument("--stem", choices=STEMS, default=None)
    p.add_argument("--data", required=True, help="dataset name, .npz path or image folder")
    p.add_argument("--data-root", default=None)
    p.add_argument("--truncate", type=float, default=100, help="probe the output at this depth %%")
    p.add_argument("--label-fraction", type=float, default=1.0)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--size", type=int, default=None,
                   help="resize the images to this side (default: the data's size)")
    p.add_argument("--channels", type=int, choices=[1, 3], default=None,
                   help="convert the images to 1 or 3 channels (default: the checkpoint's, else the data's)")
    p.add_argument("--seed", type=int, action="append",
                   help="seed (random init and label subset); repeat for several")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--allow-overlap", action="store_true",
                   help="probe even if the checkpoint was pretrained on images of this data's "
                        "val/test splits (refused by default)")
    args = p.parse_args(argv)

    import numpy as np

    from ssl_ft.checkpoint import write_json
    from ssl_ft.probe import linear_probe
    from ssl_ft.runtime import check_can_create

    if args.out:  # fail now, not after the probes
        check_can_create(args.out, "file")

    ckpt = None if args.checkpoint == "none" else args.checkpoint
    results = []
    for seed in args.seed or [0]:
        r = linear_probe(ckpt, args.data, arch=args.arch, stem=args.stem,
                         data_root=args.data_root, truncate=args.truncate, seed=seed,
                         label_fraction=args.label_fraction, limit=args.limit,
                         size=args.size, channels=args.channels,
                         allow_overlap=args.allow_overlap)
        results.append(r.as_dict())
        print(f"seed {seed}: val AUC {r.val['auc']:.4f} ACC {r.val['acc']:.4f} | "
              f"test AUC {r.test['auc']:.4f} ACC {r.test['acc']:.4f} (C={r.C:g})")
    auc = np.array([r["test"]["auc"] for r in results])
    acc = np.array([r["test"]["acc"] for r in results])
    print(f"test AUC {auc.mean():.4f} +- {auc.std(ddof=1) if len(auc) > 1 else 0:.4f}, "
          f"ACC {acc.mean():.4f} +- {acc.std(ddof=1) if len(acc) > 1 else 0:.4f} "
          f"over {len(results)} seed(s)")
    if args.out:
        write_json(args.out, results)


if __name__ == "__main__":
    sys.exit(run(main))
