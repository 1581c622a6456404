"""tools/killtest.py, short: a few SIGKILLs (inside checkpoint writes and at a random moment),
each resumed to the end and compared bitwise with an uninterrupted run. The full run (20 trials
per tool, pretrain/finetune/study) and its summary are in docs/reliability.md."""

from __future__ import annotations

import importlib.util
import os
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def killtest(data_root, tmp_path_factory):
    spec = importlib.util.spec_from_file_location("killtest_tool", REPO / "tools" / "killtest.py")
    kt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kt)
    kt.preload()  # every run a fork of this process: no import time per run
    env = {**os.environ, "PYTHONPATH": str(kt.REPO), "SSL_FT_DATA": str(data_root),
           "OMP_NUM_THREADS": "1"}
    return kt, env, tmp_path_factory.mktemp("killtest")


@pytest.fixture(scope="module")
def pretrain_reference(killtest):
    kt, env, work = killtest
    ref, writes, _ = kt.reference("pretrain", work, env)
    return ref, writes


def _write_index(writes: list[str], name: str, nth: int = 1) -> int:
    """The 1-based index of the ``nth`` atomic write of ``name`` (SSL_FT_KILL_AT_WRITE's k)."""
    hits = [i for i, target in enumerate(writes, 1) if target == name]
    return hits[nth - 1]


def test_pretrain_writes_last_pt_before_what_is_made_from_it(pretrain_reference):
    _, writes = pretrain_reference
    # each epoch: last.pt commits it, then its snapshot and (epoch 1 scores best) best.pt; the
    # end: checkpoint.pt and summary.json after the final last.pt
    assert writes == ["metrics.jsonl", "last.pt", "epoch_0001.pt", "best.pt", "last.pt",
                      "epoch_0002.pt", "checkpoint.pt", "summary.json"]


@pytest.mark.parametrize(("target", "nth"), [
    ("checkpoint.pt", 1),  # the case: --resume exited 0 and never wrote it
    ("best.pt", 1),  # found by the kill test: the resumed run never wrote epoch 1's best.pt
])
def test_pretrain_killed_inside_a_write_after_last_pt_resumes_bitwise(killtest,
                                                                      pretrain_reference,
                                                                      target, nth):
    kt, env, work = killtest
    ref, writes = pretrain_reference
    plan = {"i": 0, "write": _write_index(writes, target, nth), "target": target}
    row = kt.trial("pretrain", work, env, plan, ref)
    assert row["codes"] == [-9, 0] and row["finished"] and row["leftovers"] == [], row
    assert row["equal"], row["diff"]


def test_finetune_killed_at_a_random_moment_resumes_bitwise(killtest):
    kt, env, work = killtest
    ref, writes, seconds = kt.reference("finetune", work, env)
    assert {"last.pt", "best.pt", "model.pt", "metrics.json"} <= set(writes)
    delay = round(random.Random(0).uniform(0.3, 0.9) * seconds, 2)
    row = kt.trial("finetune", work, env, {"i": 1, "delay": delay, "second": None}, ref)
    assert row["finished"] and row["leftovers"] == [], row
    assert row["equal"], row["diff"]
    # the comparison sees a changed tensor, a changed metric and a missing file
    assert kt.difference(ref, {**ref, "model.pt": {}}).startswith("model.pt: ")
    changed = {**ref["metrics.json"], "test": {**ref["metrics.json"]["test"], "auc": 0.5}}
    assert kt.difference(ref, {**ref, "metrics.json": changed}) == "metrics.json: test"
    assert kt.difference(ref, {k: v for k, v in ref.items() if k != "best.pt"}) == \
        "best.pt (only in one run)"
