"""The README's main job, end to end (marked slow: about 2 minutes on 2 cores)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_ft.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_recipe_learns(data_root, tmp_path):
    out = tmp_path / "quickstart"
    res = subprocess.run([sys.executable, "tools/pretrain.py", "recipes/quickstart.yaml",
                          f"data.root={data_root}", f"out={out}"],
                         cwd=REPO, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    before = next(ln for ln in res.stderr.splitlines() if ln.startswith("epoch 0"))
    auc0 = float(before.split("knn_auc ")[1].split()[0])
    epochs = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert epochs[-1]["loss"] < epochs[0]["loss"]
    assert epochs[-1]["knn_auc"] > auc0 + 0.01, (auc0, epochs)  # features got better
    assert load_checkpoint(out / "checkpoint.pt").meta["epoch"] == 3
