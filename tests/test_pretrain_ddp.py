"""The same pretraining command under torchrun with two CPU processes (gloo)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ssl_ft.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_torchrun_two_processes(data_root, tmp_path, method):
    out = tmp_path / method
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "tools" / "pretrain.py"),
           str(REPO / "recipes" / "pretrain" / f"{method}_pneumoniamnist.yaml"),
           f"data.root={data_root}", f"out={out}", "data.limit=128", "train.batch_size=32",
           "train.epochs=2", "eval.every=2", "eval.limit=64", "train.device=cpu"]
    if method == "moco":
        cmd.append("method_args.queue_size=64")
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=600,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "world 2" in res.stderr
    assert res.stderr.count("wrote ") == 1  # only rank 0 writes
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt.meta["epoch"] == 2
    # 128 images, global batch 32 -> 16 per rank, 4 steps an epoch on each rank
    assert int(load_checkpoint(out / "last.pt").extra["step"]) == 8
    assert "knn_auc" in (out / "metrics.jsonl").read_text()
