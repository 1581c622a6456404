"""tools/killtest.py, short: a few SIGKILLs (inside checkpoint writes and at a random moment),
each resumed to the end and compared bitwise with an uninterrupted run. The full run (20 trials
per tool, pretrain/finetune/study) is in docs/reliability.md."""

from __future__ import annotations

import os
import random

import pytest


@pytest.fixture
def killtest(tool, data_root, tmp_path):
    kt = tool("killtest")
    env = {**os.environ, "PYTHONPATH": str(kt.REPO), "SSL_FT_DATA": str(data_root),
           "OMP_NUM_THREADS": "1"}
    return kt, env, tmp_path


def test_pretrain_killed_inside_its_final_checkpoint_write_resumes_bitwise(killtest):
    """The issue's case: killed while checkpoint.pt was written, --resume never wrote it."""
    kt, env, work = killtest
    ref, writes, _ = kt.reference("pretrain", work, env)
    assert writes[-3:] == ["last.pt", "epoch_0002.pt", "checkpoint.pt"]  # last.pt commits
    k = writes.index("checkpoint.pt") + 1
    row = kt.trial("pretrain", work, env, {"i": 0, "write": k, "target": "checkpoint.pt"}, ref)
    assert row["codes"] == [-9, 0] and row["finished"] and row["leftovers"] == []
    assert row["equal"], row["diff"]


def test_finetune_killed_in_a_write_and_at_a_random_moment(killtest):
    kt, env, work = killtest
    ref, writes, seconds = kt.reference("finetune", work, env)
    assert {"last.pt", "best.pt", "model.pt", "metrics.json"} <= set(writes)
    rng = random.Random(0)
    plans = [{"i": 0, "write": writes.index("last.pt") + 1, "target": "last.pt"},
             {"i": 1, "delay": round(rng.uniform(0.3, 0.9) * seconds, 2), "second": None}]
    for plan in plans:
        row = kt.trial("finetune", work, env, plan, ref)
        assert row["finished"] and row["leftovers"] == [], row
        assert row["equal"], row["diff"]
    assert kt.difference(ref, {**ref, "model.pt": {}}) == "model.pt: backbone.bn1.bias"
