"""tools/summarize.py on metrics.json files with known numbers."""

from __future__ import annotations

import csv
import json

import pytest


def _write(folder, layers, seed, auc, acc):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "layers": layers, "truncate": 100.0, "strategy": "ft", "seed": seed,
        "label_fraction": 1.0, "data": "pneumoniamnist", "trainable_params": 10,
        "source": {"kind": "ssl_ft", "method": "simclr", "arch": "resnet18"},
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


def test_paired_differences_and_fusion_variants(tmp_path, tool, capsys):
    for seed, (a, b) in enumerate([(0.90, 0.93), (0.92, 0.94), (0.94, 0.98)]):
        _write(tmp_path / f"ref{seed}", "0-100", seed, a, 0.8)
        _write(tmp_path / f"q{seed}", "25-50", seed, b, 0.8)
    summarize = tool("summarize")
    assert summarize.run(summarize.main, [str(tmp_path), "--by", "layers",
                                          "--paired", "layers=0-100"]) == 0
    out = capsys.readouterr().out
    assert "| 25-50 | +0.0300, +0.0200, +0.0400 | +0.0300 | 3 | 0.0351 |" in out
    fusion = tmp_path / "f" / "metrics.json"
    fusion.parent.mkdir()
    res = {"test": {"auc": 0.9, "acc": 0.8}, "val": {"auc": 0.9, "acc": 0.8}}
    fusion.write_text(json.dumps({
        "data": "d", "label_fraction": 1.0, "seed": 0, "strategy": "lp", "trainable_params": 5,
        "models": [{"name": "a", "depth": 50.0, "arch": "resnet18"},
                   {"name": "b", "depth": 75.0, "arch": "resnet18"}],
        **res, "baselines": {"a": res, "b": res, "late_fusion": res}}))
    assert summarize.run(summarize.main, [str(fusion), "--by", "model"]) == 0
    out = capsys.readouterr().out
    assert all(f"| {m} | 1 |" in out for m in ("fusion(a+b)", "a alone", "b alone", "late fusion"))


def test_wide_table_puts_a_key_in_the_columns(tmp_path, tool, capsys):
    for seed, (a, b) in enumerate([(0.90, 0.93), (0.92, 0.94), (0.94, 0.98)]):
        _write(tmp_path / f"ref{seed}", "0-100", seed, a, 0.8)
        _write(tmp_path / f"q{seed}", "25-50", seed, b, 0.8)
    summarize = tool("summarize")
    assert summarize.run(summarize.main, [str(tmp_path), "--by", "model", "layers",
                                          "--wide", "layers"]) == 0
    out = capsys.readouterr().out
    assert "| model | 0-100 | 25-50 |" in out
    assert "| simclr | 0.920 ± 0.020 | **0.950 ± 0.026** |" in out  # the best of the row
    assert summarize.run(summarize.main, [str(tmp_path), "--by", "model",
                                          "--wide", "layers"]) == 2
    assert "--wide 'layers'" in capsys.readouterr().err
