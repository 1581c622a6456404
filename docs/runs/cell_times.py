#!/usr/bin/env python
"""Time inside a study's runs, from its cell folders: a cell's recipe.yaml is written when it
starts and its metrics.json (or checkpoint.pt for a pretraining) when it ends. A resumed run
rewrites recipe.yaml, so it counts from its last start.

    python docs/runs/cell_times.py RUNS/study/davila/cells

Prints, per kind and per value of ``--by`` (a key of the cell name, default the checkpoint),
the number of runs, their summed minutes and the median seconds of a run.
"""

from __future__ import annotations

import argparse
import re
import statistics
from collections import defaultdict
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cells", type=Path)
    p.add_argument("--by", default="checkpoint", help="cell-name key to group by")
    args = p.parse_args()
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for folder in sorted(args.cells.glob("*/*")):
        start = folder / "recipe.yaml"
        end = next((f for f in (folder / "metrics.json", folder / "checkpoint.pt") if f.exists()),
                   None)
        if not start.exists() or end is None:
            continue
        m = re.search(rf"(?:^|,){re.escape(args.by)}=([^,]+)", folder.name)
        key = m.group(1) if m else folder.name.rsplit("-", 1)[0]
        groups[(folder.parent.name, key)].append(end.stat().st_mtime - start.stat().st_mtime)
    total = 0.0
    print(f"{'kind':10} {args.by:28} {'runs':>5} {'minutes':>8} {'median s':>9}")
    for (kind, key), secs in sorted(groups.items()):
        total += sum(secs)
        print(f"{kind:10} {key:28} {len(secs):5d} {sum(secs) / 60:8.1f} "
              f"{statistics.median(secs):9.0f}")
    print(f"total {sum(len(s) for s in groups.values())} runs, {total / 60:.0f} min")


if __name__ == "__main__":
    main()
