"""tools/bench.py as a user runs it, at a toy size: every contender timed, the JSON complete."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ssl_ft.benchmark import alternate

REPO = Path(__file__).resolve().parents[1]


def test_alternate_rotates_and_skips_the_warm_up():
    calls: list[str] = []

    def make(name):
        def run():
            calls.append(name)
            return float(len(calls))
        return run

    res = alternate({"a": make("a"), "b": make("b"), "c": make("c")}, rounds=2)
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a"]
    assert res["a"].rates == [4.0, 9.0] and res["b"].rates == [5.0, 7.0]
    assert res["c"].median == 7.0 and res["a"].peak_rss > 0


def test_bench_tool_runs_every_contender(data_root, tmp_path):
    out = tmp_path / "bench.json"
    res = subprocess.run(
        [sys.executable, "-W", "ignore", "tools/bench.py", "--rounds", "1", "--batch", "16",
         "--configs", "simclr:28", "--finetune-limit", "64", "--threads", "1",
         "--data-root", str(data_root), "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["pretrain"]["simclr_28"]
    assert {"limit fp32", "limit bf16", "lightly loop, 0 workers",
            "lightly loop, 2 workers"} <= set(rows)
    assert any(k.startswith("ssl_ft (") for k in rows)
    assert all(r["images_per_s"] > 0 and r["peak_rss_mb"] > 0 for r in rows.values())
    assert {"ft 0-100 cache off", "ft 75-100 cache on", "lp-ft 50-100 cache on"} <= set(
        report["finetune"])
    assert report["probe_vs_forward"]["forward_s"] > 0
    assert "x ssl_ft (" in res.stdout and "100-epoch linear head" in res.stdout
    bad = subprocess.run([sys.executable, "tools/bench.py", "--configs", "simclr:30"],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "simclr:30" in bad.stderr.strip().splitlines()[-1]
