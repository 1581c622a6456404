"""tools/plot_runs.py: curves from run folders, a clear error for a folder that is not a run."""

from __future__ import annotations

import json

from PIL import Image

from ssl_ft.cli import run


def test_plot_runs_writes_a_figure(tmp_path, capsys, tool):
    for name, auc in (("simclr", 0.9), ("genesis", 0.8)):
        (tmp_path / name).mkdir()
        rows = [{"epoch": e, "loss": 5 - e, "knn_auc": auc + e / 100} for e in (1, 2, 3)]
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)))
    out = tmp_path / "fig" / "curves.png"
    assert run(tool("plot_runs").main, [str(tmp_path / "simclr"), str(tmp_path / "genesis"),
                         "--out", str(out)]) == 0
    with Image.open(out) as img:
        assert img.width > 600 and img.height > 300


def test_plot_runs_rejects_a_folder_without_metrics(tmp_path, capsys, tool):
    assert run(tool("plot_runs").main, [str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err
