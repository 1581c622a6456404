#!/usr/bin/env python
"""How fast Auto-RGN let the backbone train in a study: the per-epoch mean of ``lr * RGN / max
RGN`` over the backbone tensors, as a share of lr (``rgn_scale_mean`` in each run's
metrics.jsonl), summarised per pretrained model.

    python docs/runs/rgn_scale.py RUNS/study/davila/cells/finetune
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

scales: dict[str, list[float]] = defaultdict(list)
for f in sorted(Path(sys.argv[1]).glob("*strategy=auto-rgn*/metrics.jsonl")):
    m = re.search(r"checkpoint=([^,]+)", f.parent.name)
    key = m.group(1) if m else "?"
    scales[key] += [json.loads(line)["rgn_scale_mean"] for line in f.read_text().splitlines()]
print(f"{'model':24} {'epochs':>6} {'min':>6} {'median':>6} {'max':>6}  (share of lr)")
for key, v in sorted(scales.items()):
    print(f"{key:24} {len(v):6d} {min(v):6.3f} {statistics.median(v):6.3f} {max(v):6.3f}")
