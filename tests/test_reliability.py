"""Issue 17 regressions, each through a tool as a user runs it: numbers YAML reads as strings,
lost final checkpoints, changed recipes on resume, duplicated metrics rows, temporary files,
unlearnable data, and paths under regular files."""

from __future__ import annotations

from pathlib import Path

import yaml

from ssl_ft.cli import run

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "recipes" / "quickstart.yaml"


def call(capsys, tool, name: str, *argv: str) -> tuple[int, str, str]:
    """``tools/<name>.py``'s main through the tools' exit-status wrapper: (status, out, err)."""
    code = run(tool(name).main, [str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_lr_1e6_is_a_float_for_pretrain_and_finetune(capsys, tool):
    code, out, err = call(capsys, tool, "pretrain", QUICK, "train.lr=1e6", "--print-recipe")
    assert code == 0, err
    assert yaml.safe_load(out)["train"]["lr"] == 1e6
    code, out, err = call(capsys, tool, "finetune", "lr=1e6", "--lr", "2e-3", "--checkpoint",
                          "none", "--arch", "resnet18", "--dry-run", "--limit", "8",
                          "--data", "pneumoniamnist")
    assert code == 0, err  # the flag wins; the positional 1e6 parsed as a float first
