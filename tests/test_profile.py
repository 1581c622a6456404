"""Where the time goes: phase records (ssl_ft.profile) and a study's profile report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ssl_ft.profile as profile
from ssl_ft.profile import phase, profiling


@pytest.fixture
def clock(monkeypatch):
    """A clock that advances by one second at each read."""
    now = [0.0]

    def tick() -> float:
        now[0] += 1.0
        return now[0]

    monkeypatch.setattr(profile.time, "perf_counter", tick)
    return now


def test_phases_add_up_in_the_innermost_record_only(clock):
    with phase("setup"):  # no record open: nothing is kept anywhere
        pass
    with profiling() as outer:
        with phase("train"):
            pass
        with phase("train"):
            pass
        with profiling() as inner:
            with phase("train"):
                pass
            with phase("test"):
                pass
        with phase("setup"):
            pass
    assert outer == {"train": 2.0, "setup": 1.0}  # each block: one tick between its reads
    assert inner == {"train": 1.0, "test": 1.0}
    assert profile._stack == []


def test_a_failing_block_is_still_timed_and_the_record_closed(clock):
    with pytest.raises(ValueError), profiling() as rec, phase("train"):
        raise ValueError("boom")
    assert rec == {"train": 1.0} and profile._stack == []


def test_a_study_records_its_time_and_writes_the_profile(data_root, tmp_path, tool, monkeypatch):
    """tools/study.py as a user runs it, with two worker processes and four fine-tuning cells (two
    wait in the queue): every fine-tuning cell keeps its phases, the runner its cells' wall
    times (as the cells' processes measured them, not from when they were queued) and its own,
    and the report sums them per group."""
    from ssl_ft.profile import PHASES

    monkeypatch.setenv("SSL_FT_DATA", str(data_root))
    mod = tool("study")
    out = tmp_path / "s"
    argv = [str(Path(__file__).resolve().parents[1] / "recipes" / "study" / "tiny.yaml"),
            f"out={out}", "threads=1", "finetune.grid.seed=[0,1]", "finetune.grid.strategy=[ft]",
            "finetune.grid.label_fraction=[1.0]", "ensemble.grid.seed=[0]", "workers=2"]
    assert mod.run(mod.main, argv) == 0
    assert mod.run(mod.main, argv) == 0  # nothing left to run: one more call line, no cell
    lines = [json.loads(x) for x in (out / "timing.jsonl").read_text().splitlines()]
    cells = [x for x in lines if "cell" in x]
    calls = [x for x in lines if "study" in x]
    assert sorted(x["kind"] for x in cells) == ["ensemble"] + ["finetune"] * 4
    assert [c["cells_run"] for c in calls] == [5, 0] and calls[0]["workers"] == 2
    assert all(x["own"] for x in cells)
    runs = {json.loads((out / "cells" / x["cell"] / "metrics.json").read_text())["recipe"]["out"]:
            x for x in cells if x["kind"] == "finetune"}
    metrics = {k: json.loads((Path(k) / "metrics.json").read_text()) for k in runs}
    for k, line in runs.items():  # the cell's own time (finetune()'s, plus its log): not queued
        assert line["wall_s"] == pytest.approx(metrics[k]["wall_time_s"], abs=2.0), line
    by_layers = {m["layers"]: m for m in metrics.values()}
    assert set(by_layers) == {"50-100", "0-75"}
    for m in metrics.values():
        prof = m["profile_s"]
        assert set(prof) <= set(PHASES)
        assert all(prof[k] > 0 for k in ("setup", "train", "validate", "checkpoint", "test"))
        assert sum(prof.values()) <= m["wall_time_s"]
    # the random init's frozen stem..layer2 of 50-100 is cached; 0-75 t75 trains from the stem
    assert by_layers["50-100"]["profile_s"]["prefix_cache"] > 0
    assert "prefix_cache" not in by_layers["0-75"]["profile_s"]
    rep = json.loads((out / "profile.json").read_text())
    assert sorted(rep["groups"]) == ["pneumoniamnist 100% 0-75 t75", "pneumoniamnist 100% 50-100",
                                     "pneumoniamnist 100% fusion"]
    assert rep["groups"]["pneumoniamnist 100% 50-100"]["train"] == pytest.approx(sum(
        m["profile_s"]["train"] for m in metrics.values() if m["layers"] == "50-100"))
    assert rep["calls"] == 2 and rep["study_s"] == pytest.approx(sum(c["wall_s"] for c in calls))
    ensemble = next(x["wall_s"] for x in cells if x["kind"] == "ensemble")
    assert rep["cells_s"] == pytest.approx(sum(m["wall_time_s"] for m in metrics.values())
                                           + ensemble)
    md = (out / "profile.md").read_text()
    assert "| **all** | 5 |" in md and "prefix_cache" in md
    assert (out / "profile.png").read_bytes()[:4] == b"\x89PNG"
