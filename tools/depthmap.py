#!/usr/bin/env python
"""Print the depth map of a backbone: each unit, its depth %, parameters and whether the chosen
layer range and truncation train, freeze or drop it. Nothing is trained.

    python tools/depthmap.py --arch resnet50 --layers 25-50 --truncate 75
    python tools/depthmap.py --checkpoint runs/simclr/checkpoint.pt --depth-unit param
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ssl_ft.cli import ArgumentParser, run


def main(argv: Sequence[str] | None = None) -> None:
    from ssl_ft.models import ARCHS, RULES, STEMS

    parser = ArgumentParser(prog="depthmap.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), help="backbone (or take it from --checkpoint)")
    parser.add_argument("--checkpoint", help="an ssl_ft checkpoint: arch, stem and channels from its metadata")
    parser.add_argument("--in-chans", type=int, default=None, help="1 or 3 (default 1, or the checkpoint's)")
    parser.add_argument("--stem", choices=STEMS, default=None, help="default standard, or the checkpoint's")
    parser.add_argument("--layers", default="0-100", help="layer range A-B in percent (default 0-100)")
    parser.add_argument("--truncate", default="100", help="keep units up to P percent (default 100)")
    parser.add_argument("--depth-unit", choices=RULES, default=None,
                        help="how percent maps onto units (default: stage for ResNet/DenseNet, block for VGG)")
    args = parser.parse_args(argv)

    from ssl_ft.errors import UserError
    from ssl_ft.models import DepthMap, create_backbone

    arch, in_chans, stem = args.arch, args.in_chans, args.stem
    if args.checkpoint:
        from ssl_ft.checkpoint import load_checkpoint

        meta = load_checkpoint(args.checkpoint).meta
        arch = arch or meta["arch"]
        in_chans = in_chans or meta["in_chans"]
        stem = stem or meta["stem"]
    if arch is None:
        raise UserError("give --arch or --checkpoint")
    backbone = create_backbone(arch, in_chans=in_chans or 1, stem=stem or "standard")
    depth_map = DepthMap.from_backbone(backbone, args.depth_unit)
    print(depth_map.select(args.layers, args.truncate).table())


if __name__ == "__main__":
    sys.exit(run(main))
