"""Every shipped recipe resolves as a user would run it: each pretraining recipe through
``tools/pretrain.py --print-recipe``, each study recipe through its expansion into cells."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ssl_ft.cli import run
from ssl_ft.study import expand, load_study

REPO = Path(__file__).resolve().parents[1]
PRETRAIN = sorted((REPO / "recipes" / "pretrain").glob("*.yaml"))
STUDIES = sorted((REPO / "recipes" / "study").glob("*.yaml"))


@pytest.mark.parametrize("recipe", PRETRAIN, ids=lambda p: p.stem)
def test_pretrain_recipe_resolves(recipe, tool, data_root, capsys):
    code = run(tool("pretrain").main, [str(recipe), f"data.root={data_root}", "--print-recipe"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    resolved = yaml.safe_load(cap.out)
    given = yaml.safe_load(recipe.read_text())
    assert resolved["method"] == given["method"]
    for key in ("size", "channels"):
        if key in given.get("data", {}):
            assert resolved["data"][key] == given["data"][key]


def test_the_64_px_general_source_excludes_every_dataset_it_pools():
    given = yaml.safe_load((REPO / "recipes/pretrain/general_medical_64.yaml").read_text())
    assert set(given["data"]["name"]) <= set(given["data"]["exclude"])
    # BreastMNIST / BUSI and PneumoniaMNIST / Kermany share source images
    assert {"breastmnist", "pneumoniamnist"} <= set(given["data"]["exclude"])
    assert given["data"]["channels"] == 3 and given["data"]["size"] == 64


@pytest.mark.parametrize("recipe", STUDIES, ids=lambda p: p.stem)
def test_study_recipe_expands_to_distinct_cells(recipe):
    cells = expand(load_study(recipe))
    assert cells and len({c.id for c in cells}) == len(cells)


def test_general_auto_holds_general_source_cells_and_adds_the_candidates():
    """general_auto.yaml reuses general_source.yaml's cells (same ids) and adds auto and the
    other three candidate selections: 108 + 72 cells."""
    source = {c.id for c in expand(load_study(REPO / "recipes/study/general_source.yaml"))}
    auto = expand(load_study(REPO / "recipes/study/general_auto.yaml"))
    ids = {c.id for c in auto}
    assert len(source) == 108 and source <= ids and len(ids) == 180
    new = [c for c in auto if c.id not in source]
    assert {(c.config["layers"], c.config["truncate"]) for c in new} == {
        ("auto", "auto"), ("50-100", 100), ("25-75", 100), ("0-75", 75)}


def test_davila_general_tunes_every_strategy_on_seeds_apart_from_the_reported_ones():
    study = load_study(REPO / "recipes/study/davila_general.yaml")
    cells = expand(study)
    final = [c for c in cells if c.trial is None]
    trials = [c for c in cells if c.trial is not None]
    assert len(final) == 90 and len(trials) == 153  # 3 targets x (9 strategies + scratch) x 3
    assert all(c.tune for c in final)
    assert not {t.trial["seed"] for t in trials} & {c.config["seed"] for c in final}
