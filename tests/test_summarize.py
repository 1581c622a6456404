"""tools/summarize.py on metrics.json files with known numbers."""

from __future__ import annotations

import csv
import json

import pytest


def _write(folder, layers, seed, auc, acc):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "layers": layers, "truncate": 100.0, "strategy": "ft", "seed": seed,
        "source": {"kind": "ssl_ft", "method": "simclr"},
        "test": {"auc": auc, "acc": acc}, "val": {"auc": 0.5, "acc": 0.5}}))


def test_mean_and_sample_std_per_group(tmp_path, tool, capsys):
    for seed, auc in enumerate([0.90, 0.92, 0.94]):
        _write(tmp_path / f"a{seed}", "25-50", seed, auc, 0.8)
    _write(tmp_path / "b0", "0-100", 0, 0.85, 0.7)
    summarize = tool("summarize")
    assert summarize.run(summarize.main, [str(tmp_path), "--by", "model", "layers",
                                          "--csv", str(tmp_path / "t.csv"),
                                          "--plot", str(tmp_path / "bars.png")]) == 0
    assert (tmp_path / "bars.png").read_bytes()[:4] == b"\x89PNG"
    text = capsys.readouterr().out
    assert "| simclr | 25-50 | 3 | 0.920 ± 0.020 | 0.800 ± 0.000 |" in text
    assert "| simclr | 0-100 | 1 | 0.850 ± 0.000 |" in text
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))
    assert [r["layers"] for r in rows] == ["0-100", "25-50"]  # numbers sorted by value
    assert float(rows[1]["test_auc_mean"]) == pytest.approx(0.92)


def test_missing_folder_and_key_exit_2(tmp_path, tool, capsys):
    summarize = tool("summarize")
    assert summarize.run(summarize.main, [str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    _write(tmp_path / "a", "0-25", 0, 0.9, 0.8)
    assert summarize.run(summarize.main, [str(tmp_path), "--by", "colour"]) == 2
    assert "'colour'" in capsys.readouterr().err


def test_globbed_logs_are_skipped_and_broken_json_named(tmp_path, tool, capsys):
    summarize = tool("summarize")
    _write(tmp_path / "a", "0-25", 0, 0.9, 0.8)
    (tmp_path / "a.log").write_text("epoch 1 ...")
    assert summarize.run(summarize.main, [str(tmp_path / "a"), str(tmp_path / "a.log")]) == 0
    assert "skipping" in capsys.readouterr().err
    (tmp_path / "a" / "metrics.json").write_text("{")
    assert summarize.run(summarize.main, [str(tmp_path / "a")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
