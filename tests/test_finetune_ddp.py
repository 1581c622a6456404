"""tools/finetune.py under torchrun with two CPU processes (gloo), gradual unfreezing included
(the set of trained parameters changes between epochs, so DDP is rebuilt)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ssl_ft.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def test_torchrun_two_processes(data_root, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "tools" / "finetune.py"), "--checkpoint", "none", "--arch", "resnet18",
           "--data", "pneumoniamnist", "--data-root", str(data_root), "--limit", "128",
           "--batch-size", "32", "--epochs", "3", "--strategy", "gradual-lf",
           "--layers", "50-100", "--device", "cpu", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "world 2" in res.stderr
    assert res.stderr.count("wrote ") == 1  # only rank 0 writes
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["trained_units"] for h in metrics["history"]] == [0, 4, 4]
    # 128 images, global batch 32 -> 16 per rank, 4 steps an epoch on each rank
    assert int(load_checkpoint(out / "last.pt").extra["step"]) == 12
