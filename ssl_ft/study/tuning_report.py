"""What the tuning of a study chose, and what it cost: ``tuning.csv`` (one row per trial, its
validation scores and whether its point was chosen; no test score), the per-run columns of
``results.csv`` (``lr``, ``epochs``, ``steps``, ``tuned``, ``tune_grid``, ``tune_score``,
``tune_trials``) and the tuning section of ``results.md`` (see :mod:`ssl_ft.study.tune`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from ssl_ft.study.tune import TIE, choose, group_scores, trial_score, value_of

__all__ = ["budget_columns", "point_text", "tune_columns", "tuning_md", "tuning_table"]


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def point_text(point: dict[str, Any]) -> str:
    """``lr=0.01 alpha=0.001``."""
    return " ".join(f"{k.removeprefix('strategy_args.')}={_num(v)}" for k, v in point.items())


def budget_columns(m: dict[str, Any]) -> dict[str, Any]:
    """A fine-tuning run's learning rate, epochs and optimiser steps: as ``metrics.json``
    records them (``sgd_epochs``, ``optimizer_steps``; ``lp`` takes none, its head is the
    converged probe), else computed (one process: each epoch takes
    ``n_train // min(batch_size, n_train)`` steps, the last partial batch dropped)."""
    recipe = m.get("recipe", {})
    epochs, n, batch = m.get("sgd_epochs", m.get("epochs")), m.get("n_train"), \
        recipe.get("batch_size")
    steps = m.get("optimizer_steps")
    if steps is None:
        steps = epochs * (n // min(batch, n)) if epochs and n and batch else None
    return {"lr": recipe.get("lr"), "epochs": epochs, "steps": steps}


def tune_columns(cell: Any, m: dict[str, Any], out: str | Path) -> dict[str, Any]:
    """The tuning record of one run of a tuned group: the values it ran with (read from its own
    recipe), its group's grid, the chosen point's mean val score over the tuning seeds and the
    number of trials. Empty for a cell that was not tuned."""
    spec = cell.tune
    if not spec:
        return {}
    keys = list(spec["points"][0])
    ran = {k: value_of(m.get("recipe", {}), k) for k in keys}
    score = math.nan
    if spec["trials"] and ran in spec["points"]:
        row = group_scores(spec, out)[spec["points"].index(ran)]
        if all(s is not None for s in row):
            score = sum(row) / len(row)
    grid = "; ".join(f"{k.removeprefix('strategy_args.')}: {'/'.join(map(_num, v))}"
                     for k, v in spec["grid"].items())
    return {"tuned": point_text(ran), "tune_grid": grid, "tune_metric": spec["metric"],
            "tune_score": score, "tune_trials": sum(len(ids) for ids in spec["trials"])}


def _status(folder: Path, score: float | None) -> str:
    if score is None:
        return "failed" if (folder / "error.txt").is_file() else "todo"
    return "done" if (folder / "metrics.json").is_file() else "diverged"


def _choice(spec: dict[str, Any], out: str | Path) -> int | None:
    """The index of the group's chosen point, or None while a trial has not ended (or when no
    trial has a finite score)."""
    scores = group_scores(spec, out)
    if any(s is None for row in scores for s in row):
        return None
    try:
        return choose(scores)
    except ValueError:
        return None


def tuning_table(cells: list, out: str | Path) -> pd.DataFrame:
    """One row per tuning trial: its group, strategy, seed and point, its validation score
    (``score``, the tuning metric; ``val_auc``, ``val_acc``), status (done, diverged, failed,
    todo), wall time, and ``chosen`` (its point is its group's choice; decided once every trial
    of the group has ended). Reads only ``metrics.json["val"]`` and the wall time."""
    specs: dict[str, tuple[dict, int]] = {}
    for cell in cells:
        for index, ids in enumerate((cell.tune or {}).get("trials", [])):
            for tid in ids:
                specs[tid] = (cell.tune, index)
    rows, choices = [], {}
    for cell in cells:
        if cell.trial is None or cell.id not in specs:
            continue
        spec, index = specs[cell.id]
        if id(spec) not in choices:
            choices[id(spec)] = _choice(spec, out)
        folder = cell.folder(out)
        score = trial_score(folder, spec["metric"])
        val: dict[str, Any] = {}
        wall = None
        if (folder / "metrics.json").is_file():
            m = json.loads((folder / "metrics.json").read_text())
            val, wall = m["val"], m.get("wall_time_s")
        best = choices[id(spec)]
        rows.append({"group": cell.trial["group"], "strategy": cell.config.get("strategy", "ft"),
                     "seed": cell.trial["seed"], "point": point_text(cell.trial["point"]),
                     **cell.trial["point"], "metric": spec["metric"],
                     "score": math.nan if score is None else score,
                     "val_auc": val.get("auc", math.nan), "val_acc": val.get("acc", math.nan),
                     "status": _status(folder, score), "wall_time_s": wall,
                     "chosen": best == index, "cell": cell.id})
    return pd.DataFrame(rows)


def _budget_lines(df: pd.DataFrame, tuning: pd.DataFrame) -> list[str]:
    ft = df[df["kind"] == "finetune"]
    if ft.empty or "steps" not in ft:
        return []
    per = ft.groupby("strategy", sort=False)[["epochs", "steps"]].agg(lambda v: sorted(set(v)))
    same = ft[["epochs", "steps"]].drop_duplicates()
    if len(same) == 1:
        e, s = same.iloc[0]
        text = (f"every final run, whatever its strategy, trained {e:g} epochs = {s:g} optimiser "
                "steps (tuning changes no epoch count or batch size)")
    else:
        text = "the final runs' epochs / optimiser steps per strategy: " + "; ".join(
            f"{k} {'/'.join(f'{x:g}' for x in r.epochs)} epochs, "
            f"{'/'.join(f'{x:g}' for x in r.steps)} steps" for k, r in per.iterrows())
    wall_t = pd.to_numeric(tuning["wall_time_s"], errors="coerce").sum()
    wall_f = pd.to_numeric(ft["wall_time_s"], errors="coerce").sum()
    return [f"Budget: {text}. Tuning cost extra: {len(tuning)} trials (each as long as a final "
            f"run of its group), {wall_t:.0f} s wall time, against {wall_f:.0f} s for the "
            f"{len(ft)} final fine-tuning runs."]


def tuning_md(df: pd.DataFrame, tuning: pd.DataFrame) -> list[str]:
    """The tuning section of results.md: the rule, the budget, and per tuned group the grid,
    the chosen values, their val score and the final runs' test AUC."""
    metric, seeds = tuning["metric"].iloc[0], sorted(set(tuning["seed"]))
    lines = ["", "## Tuning (validation split)", "",
             f"Each group of cells that differ only by the seed tried every point of its grid "
             f"on tuning seed(s) {', '.join(map(str, seeds))}; the point with the highest mean "
             f"{metric} (the validation score of the checkpoint each trial kept, from its "
             f"metrics.json) ran every seed. Ties (within {TIE:g}) go to the point listed first "
             "in the grid; a diverged trial scores worst. The test split is never read to "
             "choose: tuning.csv holds every trial's validation scores and no test score.", ""]
    lines += _budget_lines(df, tuning)
    if "tune_grid" not in df:
        return lines
    tuned = df[df["kind"].eq("finetune") & df["tune_grid"].notna()]
    lines += ["", "| data | arch | labels | model | layers | strategy | grid | chosen | "
              f"{metric} (chosen) | trials | test AUC of the final runs (n) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = ["data", "arch", "label_fraction", "model", "selection", "strategy", "tune_grid"]
    for key, g in tuned.groupby(keys, sort=False):
        r = dict(zip(keys, key, strict=True))
        chosen = ", ".join(dict.fromkeys(g["tuned"]))
        score = g["tune_score"].iloc[0]
        auc = g["test_auc"].to_numpy(float)
        spread = f" ± {auc.std(ddof=1):.3f}" if len(auc) > 1 else ""
        lines.append(f"| {r['data']} | {r['arch']} | {r['label_fraction']:g} | {r['model']} | "
                     f"{r['selection']} | {r['strategy']} | {r['tune_grid']} | {chosen} | "
                     f"{'' if math.isnan(score) else f'{score:.4f}'} | "
                     f"{int(g['tune_trials'].iloc[0])} | {auc.mean():.3f}{spread} ({len(auc)}) |")
    return lines
