#!/usr/bin/env python
"""Self-supervised pretraining from a YAML recipe.

    python tools/pretrain.py RECIPE.yaml [key=value ...] [--resume]
    python tools/pretrain.py recipes/pretrain/simclr_pneumoniamnist.yaml \\
        train.epochs=1 data.limit=256 out=/tmp/run

Writes the run folder named by ``out``: last.pt (resumable), checkpoint.pt, recipe.yaml, tb/.
Under ``torchrun --nproc_per_node N tools/pretrain.py ...`` the same command trains with DDP.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ssl_ft.cli import ArgumentParser, run


def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="pretrain.py", description=__doc__.split("\n\n")[0],
        epilog="Overrides use dotted keys of the recipe, e.g. train.epochs=1 data.limit=256 "
               "method_args.temperature=0.1 out=/tmp/run. See docs/pretraining.md.")
    parser.add_argument("recipe", help="YAML recipe (see recipes/pretrain/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override recipe keys")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in `out` from its last.pt")
    parser.add_argument("--print-recipe", action="store_true",
                        help="print the resolved recipe and exit without training")
    args = parser.parse_intermixed_args(argv)

    from ssl_ft.pretrain import load_pretrain_recipe, pretrain, resolved_recipe

    cfg = load_pretrain_recipe(args.recipe, args.overrides)
    if args.print_recipe:
        import yaml

        print(yaml.safe_dump(resolved_recipe(cfg), sort_keys=False), end="")
        return
    pretrain(cfg, resume=args.resume)


if __name__ == "__main__":
    sys.exit(run(main))
