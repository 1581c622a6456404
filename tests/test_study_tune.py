"""Per-strategy tuning in a study (``ssl_ft.study.tune``): the tune block's checks, the trial
cells, the choice (validation only, ties, divergence), and real tiny studies: end to end
through tools/study.py, resumed after a kill in the tuning stage, and with poisoned test labels
(the choice must not move)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ssl_ft.errors import UserError
from ssl_ft.study import expand, load_study, run_study
from ssl_ft.study.tune import choose, diverged, normalize_grid, resolve, trial_score

REPO = Path(__file__).resolve().parents[1]

# the real runs below: a random resnet18, 100 BreastMNIST train images (78 val, 100 test), 1 epoch
BASE = {"arch": "resnet18", "data": "breastmnist", "limit": 100, "epochs": 1, "batch_size": 32}


def _recipe(tmp_path: Path, tune: dict | None, strategies=("ft", "l2-sp"), seeds=(0, 1),
            base: dict | None = None, name: str = "study.yaml") -> Path:
    data = {"name": "t", "out": str(tmp_path / "out"), "threads": 1,
            "checkpoints": {"random": "none"},
            "finetune": {"base": {**BASE, **(base or {})},
                         "grid": {"checkpoint": ["random"], "strategy": list(strategies),
                                  "seed": list(seeds)}}}
    if tune is not None:
        data["tune"] = tune
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


GRID = {"lr": {"ft": [0.001, 0.01]}, "strategy_args.alpha": {"l2-sp": [0.001, 0.1]}}


def test_trials_come_first_and_the_tuned_cells_wait_for_them(tmp_path):
    plain = expand(load_study(_recipe(tmp_path, None)))
    cells = expand(load_study(_recipe(tmp_path, {"grid": GRID})))
    trials = [c for c in cells if c.trial is not None]
    final = [c for c in cells if c.trial is None]
    # ft: 2 lr values, l2-sp: 2 alphas, on the default tuning seed (the first: 0)
    assert [c.id.split("/")[0] for c in cells] == ["tune"] * 4 + ["finetune"] * 4
    assert {c.trial["seed"] for c in trials} == {0}
    assert sorted(c.config.get("lr", 1e-3) for c in trials if c.config["strategy"] == "ft") \
        == [0.001, 0.01]
    assert sorted(c.config["strategy_args"]["alpha"] for c in trials
                  if c.config["strategy"] == "l2-sp") == [0.001, 0.1]
    for cell in final:
        ids = [i for row in cell.tune["trials"] for i in row]
        assert len(ids) == 2 and set(ids) <= set(cell.needs)
        assert all(t.config["strategy"] == cell.config["strategy"] for t in trials
                   if t.id in ids)
    # a tuned cell is a new cell (a study without tuning keeps its ids), and so is a new grid;
    # a trial is its configuration, so a new grid reuses the trials it shares with the old
    assert not {c.id for c in final} & {c.id for c in plain}
    other = expand(load_study(_recipe(tmp_path, {"grid": {**GRID, "lr": {"ft": [0.003, 0.01]}}})))
    ft = {c.id: c for c in cells if c.config["strategy"] == "ft"}
    assert [ft[i].config.get("lr") for i in {c.id for c in other} & set(ft)] == [0.01]
    assert [c.id for c in expand(load_study(_recipe(tmp_path, {"grid": GRID})))] == \
        [c.id for c in cells]  # stable


def test_a_one_point_grid_sets_the_value_without_trials(tmp_path):
    cells = expand(load_study(_recipe(tmp_path, {"seeds": [5], "grid": {
        "lr": {"default": [0.001, 0.01], "lp": [0.03]}}}, strategies=("ft", "lp"))))
    lp = [c for c in cells if c.config["strategy"] == "lp"]
    assert all(c.trial is None and c.config["lr"] == 0.03 and c.tune["trials"] == [] for c in lp)
    ft_trials = [c for c in cells if c.trial is not None]
    assert len(ft_trials) == 2 and {c.config["seed"] for c in ft_trials} == {5}


def test_nested_strategy_args_from_an_override_replace_the_flat_key():
    grid = normalize_grid({"strategy_args.alpha": {"l2-sp": [1.0]},
                           "strategy_args": {"alpha": {"l2-sp": [0.1, 0.2]}}})
    assert grid == {"strategy_args.alpha": {"l2-sp": [0.1, 0.2]}}


@pytest.mark.parametrize(("tune", "needle"), [
    ({"grid": {"epochs": [1, 2]}}, "tune.grid.epochs: not a tunable key"),
    ({"grid": {"lr": []}}, "tune.grid.lr = [] must be a non-empty list"),
    ({"grid": {"lr": {"ft": []}}}, "tune.grid.lr.ft = [] must be a non-empty list"),
    ({"grid": {"lr": 0.01}}, "tune.grid.lr = 0.01 must be a non-empty list"),
    ({"grid": {"lr": {"l2sp": [0.1]}}}, "unknown strategy 'l2sp'"),
    ({"grid": {"strategy_args.alpha": {"ft": [0.1]}}}, "strategy ft has no option 'alpha'"),
    ({"grid": {"strategy_args.alpha": [0.1]}}, "strategy ft has no option 'alpha'"),
    ({"grid": {"strategy_args.decay": {"discriminative": [0.5]}, "strategy_args.alpah":
               {"l2-sp": [0.1]}}}, "strategy l2-sp has no option 'alpah' (its strategy_args: "
                                   "alpha, beta)"),
    ({"grid": {"lr": ["fast", 0.1]}}, "lr = 'fast' has the wrong type"),
    ({"grid": {}}, "tune.grid is empty"),
    ({"seeds": [], "grid": {"lr": [0.1]}}, "tune.seeds is an empty list"),
    ({"seeds": [3, 3], "grid": {"lr": [0.1]}}, "tune.seeds = [3, 3] repeats a seed"),
    ({"metric": "test_auc", "grid": {"lr": [0.1]}}, "tune.metric = 'test_auc' is not allowed"),
    ({"grid": {"lr": [0.1]}, "rounds": 2}, "unknown key tune.rounds"),
])
def test_bad_tune_blocks_name_the_problem(tmp_path, tune, needle):
    with pytest.raises(UserError, match=None) as info:
        expand(load_study(_recipe(tmp_path, tune)))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_tuned_key_that_is_also_a_grid_axis_is_refused(tmp_path):
    path = _recipe(tmp_path, {"grid": {"lr": [0.1, 0.01]}})
    with pytest.raises(UserError, match="lr is also a finetune grid axis"):
        expand(load_study(path, ["finetune.grid.lr=[0.1,0.2]"]))


def test_bad_tune_block_on_the_command_line_is_one_line_exit_2(tmp_path, tool, capsys):
    mod = tool("study")
    path = _recipe(tmp_path, {"grid": {"strategy_args.alpha": {"ft": [0.1]}}})
    assert mod.run(mod.main, [str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "strategy ft has no option 'alpha'" in err


def test_choice_is_the_best_mean_with_ties_to_the_first_point():
    assert choose([[0.7, 0.9], [0.85, 0.85], [0.8, 0.8]]) == 1  # the best mean over seeds
    assert choose([[0.75], [0.7, 0.9], [0.8, 0.8]]) == 1  # tied means: the first of them
    assert choose([[0.8], [0.8 + 1e-12]]) == 0 and choose([[0.8], [0.8 + 1e-6]]) == 1
    assert choose([[0.95, -math.inf], [0.6, 0.6]]) == 1  # a seed diverged: the point is out
    with pytest.raises(ValueError, match="no tuning trial"):
        choose([[-math.inf], [-math.inf]])


def _write_trial(folder: Path, val: float, test: float) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(
        {"val": {"auc": val, "acc": 0.5}, "test": {"auc": test, "acc": 0.5}}))


def test_resolve_chooses_on_val_and_never_on_test(tmp_path):
    """Three trials whose test AUC ranks them the other way round from their val AUC."""
    cells = expand(load_study(_recipe(tmp_path, {"grid": {"lr": [0.001, 0.003, 0.01]}},
                                      strategies=("ft",), seeds=(0,))))
    final = next(c for c in cells if c.tune)
    for (tid,), val, test in zip(final.tune["trials"], (0.70, 0.80, 0.75), (0.95, 0.60, 0.70),
                                 strict=True):
        _write_trial(tmp_path / "out" / "cells" / tid, val, test)
    assert resolve(final, tmp_path / "out").config["lr"] == 0.003
    assert trial_score(tmp_path / "out" / "cells" / final.tune["trials"][0][0], "val_acc") == 0.5


def test_a_diverged_trial_ended_with_the_worst_score_and_an_unfinished_one_blocks(tmp_path):
    from ssl_ft.study import is_done

    cells = expand(load_study(_recipe(tmp_path, {"grid": {"lr": [0.001, 10.0]}},
                                      strategies=("ft",), seeds=(0,))))
    final, trials = next(c for c in cells if c.tune), [c for c in cells if c.trial]
    out = tmp_path / "out"
    with pytest.raises(UserError, match="has not finished"):
        resolve(final, out)
    _write_trial(trials[0].folder(out), 0.6, 0.9)
    trials[1].folder(out).mkdir(parents=True)
    (trials[1].folder(out) / "error.txt").write_text(
        "Traceback (most recent call last):\n  ...\nssl_ft.finite.NonFiniteError: the loss is "
        "nan at epoch 1, step 3; lower the learning rate\n")
    assert diverged(trials[1].folder(out)) and is_done(trials[1], out)
    assert trial_score(trials[1].folder(out), "val_auc") == -math.inf
    assert resolve(final, out).config["lr"] == 0.001
    (trials[0].folder(out) / "metrics.json").unlink()
    (trials[0].folder(out) / "error.txt").write_text("RuntimeError: out of memory\n")
    assert not diverged(trials[0].folder(out)) and not is_done(trials[0], out)


def _breast_copy(data_root: Path, folder: Path, flip_test: bool) -> Path:
    """breastmnist.npz with its first 120 train images (all of val and test), optionally with
    every test label flipped: AUC becomes 1 - AUC, so a chooser that read the test split would
    prefer the opposite point. (Not ``limit``: its subset of a split depends on the labels.)"""
    folder.mkdir(parents=True)
    with np.load(data_root / "breastmnist.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["train_images"], arrays["train_labels"] = (arrays["train_images"][:120],
                                                      arrays["train_labels"][:120])
    if flip_test:
        arrays["test_labels"] = 1 - arrays["test_labels"]
    np.savez(folder / "breastmnist.npz", **arrays)
    return folder


def test_the_choice_ignores_the_test_labels(data_root, tmp_path):
    """The same tuning on (120 train images of) BreastMNIST and on a copy whose test labels are
    all flipped: every trial's val scores and the choice are equal, every test AUC moved."""
    from ssl_ft.study.tuning_report import tuning_table

    tables, tests = [], []
    for name, flip in (("real", False), ("poisoned", True)):
        root = _breast_copy(data_root, tmp_path / name / "data", flip)
        path = _recipe(tmp_path / name, {"grid": {"lr": [0.0003, 0.001, 0.003]}},
                       strategies=("ft",), seeds=(0,), base={"data_root": str(root), "limit": None})
        study = load_study(path)
        cells = expand(study)
        trials = [c for c in cells if c.trial is not None]
        assert run_study(study, trials, progress=False) == {}
        table = tuning_table(cells, study.out)
        assert not [c for c in table.columns if "test" in c]  # no test score in tuning.csv
        tables.append(table)
        tests.append([json.loads((c.folder(study.out) / "metrics.json").read_text())["test"]
                      ["auc"] for c in trials])
        resolved = resolve(next(c for c in cells if c.tune), study.out)
        tables[-1]["resolved_lr"] = resolved.config["lr"]
    real, bad = tables
    assert real["val_auc"].nunique() == 3  # the points differ: there is something to choose
    assert np.allclose(np.array(tests[0]) + np.array(tests[1]), 1.0)  # the poison took effect
    assert int(np.argmax(tests[0])) != int(np.argmax(tests[1]))  # test would choose otherwise
    assert real["val_auc"].tolist() == bad["val_auc"].tolist()
    assert real["chosen"].tolist() == bad["chosen"].tolist() and real["chosen"].sum() == 1
    assert real["resolved_lr"].iloc[0] == bad["resolved_lr"].iloc[0] == \
        real.loc[real["val_auc"].idxmax(), "lr"]


def test_tiny_tuned_study_end_to_end_and_resumed_after_a_kill(data_root, tmp_path, tool,
                                                              capsys, monkeypatch):
    """tools/study.py as a user runs it: --dry-run, a run killed in the tuning stage, the same
    command again (the finished trials are not re-run), and what the report records."""
    import ssl_ft.study.runner as runner

    monkeypatch.setenv("SSL_FT_DATA", str(data_root))
    mod = tool("study")
    path = _recipe(tmp_path, {"grid": GRID}, seeds=(0, 1))
    assert mod.run(mod.main, [str(path), "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("todo  tune/") == 4 and "[tuned: waits for 2 trials]" in listing
    assert "8 cells (4 tuning trials)" in listing
    real, calls = runner.run_cell, []

    def killed_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "run_cell", killed_after_two)
    assert mod.run(mod.main, [str(path)]) == 130
    assert all("/tune/" in c for c in calls)
    monkeypatch.setattr(runner, "run_cell", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    assert mod.run(mod.main, [str(path)]) == 0
    assert len(calls) == 8 and len(set(calls)) == 8  # the two finished trials ran once
    assert all("/tune/" in c for c in calls[:4]) and all("/finetune/" in c for c in calls[4:])
    out = tmp_path / "out"
    tuning, results = pd.read_csv(out / "tuning.csv"), pd.read_csv(out / "results.csv")
    assert len(tuning) == 4 and set(tuning["status"]) == {"done"} and len(results) == 4
    for strategy, key in (("ft", "lr"), ("l2-sp", "strategy_args.alpha")):
        trials = tuning[tuning["strategy"] == strategy]
        best = trials.loc[trials["val_auc"].idxmax()]
        assert trials["chosen"].tolist() == [v == best["val_auc"] for v in trials["val_auc"]]
        name = key.removeprefix("strategy_args.")
        for row in results[results["strategy"] == strategy].itertuples():
            assert row.tuned == f"{name}={best[key]:g}" and row.tune_trials == 2
            assert row.tune_score == pytest.approx(best["val_auc"])
            recipe = json.loads((out / "cells" / row.cell / "metrics.json").read_text())["recipe"]
            assert (recipe["lr"] if key == "lr" else recipe["strategy_args"]["alpha"]) == best[key]
    assert (results["steps"] == 3).all() and (results["epochs"] == 1).all()  # 100 // 32 a run
    text = (out / "results.md").read_text()
    assert "## Tuning (validation split)" in text
    assert "every final run, whatever its strategy, trained 1 epochs = 3 optimiser steps" in text
    row = next(x for x in text.splitlines() if x.startswith("| breastmnist | resnet18 | 1 | "
                                                             "random | 0-100 | l2-sp |"))
    sp = tuning[tuning["strategy"] == "l2-sp"]
    alpha = sp.loc[sp["val_auc"].idxmax(), "strategy_args.alpha"]
    assert f"| alpha: 0.001/0.1 | alpha={alpha:g} | {sp['val_auc'].max():.4f} | 2 |" in row
    capsys.readouterr()
    assert mod.run(mod.main, [str(path), "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("done  ") == 8 and "chosen from 2 trials]" in listing


def test_the_shipped_tuned_recipe_expands():
    study = load_study(REPO / "recipes" / "study" / "tuned_strategies.yaml")
    cells = expand(study)
    final = [c for c in cells if c.kind == "finetune" and c.trial is None]
    trials = [c for c in cells if c.trial is not None]
    strategies = {c.config["strategy"] for c in final}
    assert len(strategies) == 9 and all(c.tune for c in final)
    per = {s: len({t.id for t in trials if t.config["strategy"] == s}) for s in strategies}
    assert per["l2-sp"] == per["l1-sp"] == per["discriminative"] == 9 and per["auto-rgn"] == 3
    assert {t.trial["seed"] for t in trials} == set(study.tune.seeds)
    assert not set(study.tune.seeds) & {c.config["seed"] for c in final}  # disjoint seeds


def test_tuning_trials_run_as_submitit_jobs_before_the_cells_that_use_them(data_root, tmp_path,
                                                                          tool, monkeypatch):
    """executor submitit-local: two trials and the tuned cell are three jobs; the cell's job is
    submitted after both trials ended, with the chosen value in its configuration."""
    import pickle

    monkeypatch.setenv("SSL_FT_DATA", str(data_root))
    mod = tool("study")
    path = _recipe(tmp_path, {"grid": {"lr": [0.001, 0.01]}}, strategies=("ft",), seeds=(0,))
    assert mod.run(mod.main, [str(path), "--executor", "submitit-local"]) == 0
    jobs = {}
    for sub in (tmp_path / "out" / "submitit").glob("*/*_submitted.pkl"):
        with open(sub, "rb") as fh:
            args = pickle.load(fh).args
        jobs[args[2]] = (sub.stat().st_mtime, args[1],
                         next(sub.parent.glob("*_result.pkl")).stat().st_mtime)
    trials = [v for k, v in jobs.items() if "/tune/" in k]
    (cell,) = [v for k, v in jobs.items() if "/finetune/" in k]
    assert len(trials) == 2 and cell[0] >= max(t[2] for t in trials)
    tuning = pd.read_csv(tmp_path / "out" / "tuning.csv")
    assert cell[1]["lr"] == tuning.loc[tuning["val_auc"].idxmax(), "lr"]
    assert tuning["chosen"].sum() == 1
