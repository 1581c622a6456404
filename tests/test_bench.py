"""tools/bench.py and ssl_ft.benchmark: the alternation, the targets computed from constructed
timings, the table and JSON the tool writes (fake contenders, in seconds), the real contenders at
a toy size, and (slow) the whole tool as a user runs it."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ssl_ft.benchmark as B
from ssl_ft.benchmark import alternate, targets

REPO = Path(__file__).resolve().parents[1]


def test_alternate_rotates_and_skips_the_warm_up():
    calls: list[str] = []

    def make(name):
        def run(steps=4):
            calls.append(name if steps == 4 else f"{name}{steps}")
            return float(len(calls))
        return run

    res = alternate({"a": make("a"), "b": make("b"), "c": make("c")}, rounds=2)
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a"]
    assert res["a"].rates == [4.0, 9.0] and res["b"].rates == [5.0, 7.0]
    assert res["c"].median == 7.0 and res["a"].peak_rss > 0
    calls.clear()
    alternate({"a": make("a"), "b": make("b")}, rounds=1, warmup_args={"steps": 1})
    assert calls == ["a1", "b1", "a", "b"]  # a one-step warm-up, then full calls
    calls.clear()
    res = alternate({"a": make("a"), "b": make("b")}, rounds=2, warmup=False)
    assert calls == ["a", "b", "b", "a"] and res["a"].rates == [1.0, 4.0]


def _row(rate: float) -> dict:
    return {"images_per_s": rate, "rounds": [rate], "peak_rss_mb": 100.0}


def _report(**change) -> dict:
    """A report whose every target passes, by constructed images/s."""
    report = {
        "pretrain": {
            "simclr_28": {"limit fp32": _row(200), "limit bf16": _row(300),  # bf16 1.5x
                          "ssl_ft (bf16)": _row(285),  # 0.95x the limit
                          "ssl_ft (bf16, contiguous)": _row(250),
                          "lightly loop, 0 workers": _row(150),
                          "lightly loop, 2 workers": _row(200)},  # 285 / 200 = 1.425
            "genesis_64": {"limit fp32": _row(20), "limit bf16": _row(40),
                           "ssl_ft (bf16)": _row(38)},
        },
        "finetune": {"ft 0-100 cache off": _row(100), "ft 75-100 cache on": _row(400),
                     "ft 75-100 cache off": _row(180)},  # epoch 100/400 = 0.25x
        "probe_vs_forward": {"forward_s": 2.0, "probe_s": 2.4, "ratio": 1.2},
    }
    for path, value in change.items():
        *keys, last = path.split(".")
        node = report
        for k in keys:
            node = node[k]
        node[last] = value
    return report


def _by_name(rows: list[dict]) -> dict[str, dict]:
    return {r["target"]: r for r in rows}


def test_targets_on_constructed_timings_pass():
    rows = _by_name(targets(_report()))
    assert list(rows) == [
        "simclr_28: ssl_ft (bf16) / limit bf16",
        "simclr_28: ssl_ft (bf16) / fastest lightly loop",
        "simclr_28: bf16 chosen, limit bf16 / limit fp32",
        "genesis_64: ssl_ft (bf16) / limit bf16",  # no lightly row for a restorative method
        "genesis_64: bf16 chosen, limit bf16 / limit fp32",
        "fine-tuning epoch time: 75-100 cache on / 0-100",
        "100-epoch cached probe / one forward pass",
    ]
    assert all(r["pass"] for r in rows.values())
    assert rows["simclr_28: ssl_ft (bf16) / limit bf16"]["value"] == pytest.approx(0.95)
    lightly = rows["simclr_28: ssl_ft (bf16) / fastest lightly loop"]
    assert lightly["value"] == pytest.approx(285 / 200)  # the faster lightly loop, not the first
    assert (lightly["op"], lightly["threshold"]) == (">=", 1.3)
    layers = rows["fine-tuning epoch time: 75-100 cache on / 0-100"]
    assert layers["value"] == pytest.approx(0.25) and layers["op"] == "<=" and \
        layers["threshold"] == 0.35
    json.dumps(rows)  # JSON-ready


@pytest.mark.parametrize(("change", "failing"), [
    ({"pretrain.simclr_28.ssl_ft (bf16)": _row(260)},  # 0.867x the limit, 1.3x lightly
     {"simclr_28: ssl_ft (bf16) / limit bf16"}),
    ({"pretrain.simclr_28.lightly loop, 0 workers": _row(230)},  # 285 / 230 = 1.24
     {"simclr_28: ssl_ft (bf16) / fastest lightly loop"}),
    ({"pretrain.simclr_28.limit fp32": _row(240)},  # bf16 only 1.25x fp32, yet the default
     {"simclr_28: bf16 chosen, limit bf16 / limit fp32"}),
    ({"finetune.ft 75-100 cache on": _row(250)},  # 0.40x the 0-100 epoch
     {"fine-tuning epoch time: 75-100 cache on / 0-100"}),
    ({"probe_vs_forward.ratio": 1.6}, {"100-epoch cached probe / one forward pass"}),
    ({"pretrain.genesis_64.ssl_ft (bf16)": _row(float("nan"))},  # a contender that did not run
     {"genesis_64: ssl_ft (bf16) / limit bf16"}),
])
def test_each_target_fails_when_its_ratio_misses(change, failing):
    rows = targets(_report(**change))
    assert {r["target"] for r in rows if not r["pass"]} == failing


def test_targets_where_fp32_is_the_default_and_contenders_are_missing():
    report = _report()
    for res in report["pretrain"].values():
        res["ssl_ft (fp32)"] = res.pop("ssl_ft (bf16)")
    rows = _by_name(targets(report))
    bf16 = rows["simclr_28: fp32 chosen, limit bf16 / limit fp32"]
    assert bf16["op"] == "<" and not bf16["pass"]  # bf16 is 1.5x here: fp32 was the wrong choice
    assert rows["simclr_28: ssl_ft (fp32) / limit fp32"]["value"] == pytest.approx(285 / 200)
    assert targets({"pretrain": {}, "finetune": {},
                    "probe_vs_forward": None}) == []  # nothing measured, nothing judged
    # each configuration judged by the precision it chose: fp32 at 28 px, bf16 at 64 px
    mixed = _report()
    mixed["pretrain"]["simclr_28"]["ssl_ft (fp32)"] = mixed["pretrain"]["simclr_28"].pop(
        "ssl_ft (bf16)")
    mixed["pretrain"]["simclr_28"]["limit bf16"] = _row(220)  # bf16 1.1x: fp32 was right
    rows = _by_name(targets(mixed))
    assert rows["simclr_28: fp32 chosen, limit bf16 / limit fp32"]["pass"]
    assert rows["genesis_64: bf16 chosen, limit bf16 / limit fp32"]["pass"]
    only = copy.deepcopy(_report())
    del only["finetune"]["ft 0-100 cache off"]
    assert "fine-tuning epoch time: 75-100 cache on / 0-100" not in _by_name(targets(only))


def test_tool_table_and_json_from_fake_contenders(data_root, tool, tmp_path, capsys,
                                                  monkeypatch):
    """tools/bench.py end to end with contenders of known speed (no training): every table, the
    targets with pass and FAIL, the JSON."""
    rates = _report()["pretrain"]["simclr_28"]
    calls: list[tuple[str, dict]] = []
    measured: list = []

    def fake_pretrain(method_name, images, *, batch, steps, precision, channels_last, method):
        assert images.shape == (16 * 3, 1, 28, 28) and (batch, steps, precision) == (16, 3, "bf16")
        assert channels_last  # pretraining's default memory format
        assert method_name == "simclr" and measured == [method]  # the model auto measured on
        return {n: (lambda n=n, **kw: calls.append((n, kw)) or rates[n]["images_per_s"])
                for n in rates}

    def fake_finetune(data, data_root, out, *, epochs, limit, threads, names):
        assert limit == 40 and names == ["ft 0-100 cache off", "ft 75-100 cache on"]
        return {"ft 0-100 cache off": lambda: 100.0, "ft 75-100 cache on": lambda: 250.0}

    import ssl_ft.pretrain.precision

    def fake_auto(name, device, method, *, batch, channels, size, channels_last, dist):
        assert (name, batch, channels, size, channels_last) == ("auto", 16, 1, 28, True)
        measured.append(method)
        return "bf16", {"choice": "bf16", "speedup": 1.5, "threshold": 1.3, "source": "measured"}

    monkeypatch.setattr(ssl_ft.pretrain.precision, "auto_precision", fake_auto)
    monkeypatch.setattr(B, "pretrain_contenders", fake_pretrain)
    monkeypatch.setattr(B, "finetune_epochs", fake_finetune)
    monkeypatch.setattr(B, "probe_vs_forward", lambda x, y: {"forward_s": 1.0, "probe_s": 1.1,
                                                              "ratio": 1.1})
    mod = tool("bench")
    out = tmp_path / "bench.json"
    argv = ["--configs", "simclr:28", "--batch", "16", "--steps", "3", "--rounds", "2",
            "--finetune-limit", "40", "--finetune", "ft 0-100 cache off", "ft 75-100 cache on",
            "--threads", "1", "--data-root", str(data_root), "--json", str(out),
            "--profile", str(tmp_path / "prof")]
    assert mod.run(mod.main, argv) == 0
    text = capsys.readouterr().out
    # a warm-up, 2 rounds, then one profiled call each
    assert calls[0] == ("limit fp32", {"steps": 1}) and len(calls) == 6 * 4
    assert calls[-6:] == [(n, {}) for n in rates]
    prof = (tmp_path / "prof" / "profile.md").read_text()
    assert "## pretrain simclr_28" in prof and "## finetune" in prof
    assert "`ssl_ft (bf16)` against `limit bf16`" in prof
    assert (tmp_path / "prof" / "pretrain_simclr_28" / "limit_fp32.txt").is_file()
    report = json.loads(out.read_text())
    assert report["steps"] == {"simclr_28": 3} and report["rounds"] == 2
    assert report["precision"]["simclr_28"]["choice"] == "bf16"
    prec = "bf16"
    row = report["pretrain"]["simclr_28"][f"ssl_ft ({prec})"]
    assert row["images_per_s"] == 285 and row["rounds"] == [285, 285] and row["peak_rss_mb"] > 0
    assert set(report["finetune"]) == {"ft 0-100 cache off", "ft 75-100 cache on"}
    assert set(report["seconds"]) == {"pretrain simclr_28", "finetune", "probe vs forward"}
    verdict = {t["target"]: t["pass"] for t in report["targets"]}
    assert verdict.pop("fine-tuning epoch time: 75-100 cache on / 0-100") is False  # 0.40x
    assert all(verdict.values()) and len(verdict) == 4
    # the printed tables: a row per contender with its ratio to ssl_ft, the targets with FAIL
    assert f"\nssl_ft ({prec})" in text and "limit fp32" in text and f"x ssl_ft ({prec})" in text
    line = next(x for x in text.splitlines() if x.startswith("lightly loop, 2 workers"))
    assert line.split()[4:6] == ["200.0", f"{200 / 285:.2f}"]
    line = next(x for x in text.splitlines() if x.startswith("fine-tuning epoch time"))
    assert line.split()[-4:] == ["0.40", "<=", "0.35", "FAIL"]
    assert "4 of 5 targets pass" in text


def test_tool_refuses_bad_flags_in_one_line(tool, capsys):
    mod = tool("bench")
    for argv, needle in [(["--configs", "simclr:30"], "simclr:30"),
                         (["--finetune", "ft 10-100"], "'ft 10-100'"),
                         (["--rounds", "0"], "--rounds must be >= 1"),
                         (["--steps", "0"], "--steps must be >= 1")]:
        assert mod.run(mod.main, argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error:") and needle in err, err


def test_real_contenders_at_a_toy_size(data_root, tmp_path):
    """Every pretraining contender and two fine-tuning ones really train, in seconds."""
    from ssl_ft.data import load_data

    images = load_data("pneumoniamnist", data_root=data_root, limit=16).images["train"]
    runs = B.pretrain_contenders("simclr", images, batch=8, steps=2, precision="bf16",
                                 lightly_workers=(0,))
    assert list(runs) == ["limit fp32", "limit bf16", "ssl_ft (bf16)",
                          "ssl_ft (bf16, contiguous)", "lightly loop, 0 workers"]
    # the default memory format is pretraining's: channels_last; the copy is contiguous
    assert set(B.pretrain_contenders("simclr", images, batch=8, steps=1, precision="fp32",
                                     lightly_workers=(), channels_last=False)) == {
        "limit fp32", "limit bf16", "ssl_ft (fp32)", "ssl_ft (fp32, channels_last)"}
    res = alternate(runs, 1, warmup_args={"steps": 1})
    assert all(r.median > 0 and r.peak_rss > 0 for r in res.values())
    ft = B.finetune_epochs("pneumoniamnist", str(data_root), str(tmp_path), limit=32,
                           threads=1, names=["ft 75-100 cache on", "lp (probe phase)"])
    res = alternate(ft, 1, warmup=False)
    assert all(r.median > 0 for r in res.values())
    with pytest.raises(ValueError, match="ft 10-100"):
        B.finetune_epochs("pneumoniamnist", None, str(tmp_path), names=["ft 10-100"])
    pf = B.probe_vs_forward(images, np.arange(len(images)) % 2, epochs=2)
    assert pf["forward_s"] > 0 and math.isclose(pf["ratio"], pf["probe_s"] / pf["forward_s"])


@pytest.mark.slow
def test_bench_tool_runs_every_contender(data_root, tmp_path):
    """python tools/bench.py in a subprocess at a toy size: every real contender (~2 min)."""
    out = tmp_path / "bench.json"
    res = subprocess.run(
        [sys.executable, "-W", "ignore", "tools/bench.py", "--rounds", "1", "--batch", "16",
         "--steps", "1", "--configs", "simclr:28", "--finetune-limit", "64", "--threads", "1",
         "--data-root", str(data_root), "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["pretrain"]["simclr_28"]
    assert {"limit fp32", "limit bf16", "lightly loop, 0 workers",
            "lightly loop, 2 workers"} <= set(rows)
    assert sum(k.startswith("ssl_ft (") for k in rows) == 2  # default and contiguous
    assert all(r["images_per_s"] > 0 and r["peak_rss_mb"] > 0 for r in rows.values())
    assert set(report["finetune"]) == set(B.FINETUNE_CONTENDERS)
    assert all(r["images_per_s"] > 0 for r in report["finetune"].values())
    assert report["probe_vs_forward"]["forward_s"] > 0
    assert len(report["targets"]) == 5 and all(isinstance(t["pass"], bool)
                                               for t in report["targets"])
    assert "x ssl_ft (" in res.stdout and "targets (issue #16)" in res.stdout
