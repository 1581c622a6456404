"""Per-strategy tuning in a study: a small grid tried on the validation split, then the seeds.

Every group of fine-tuning cells that differ only by their seed (data x label fraction x model x
layers x strategy x ...) first runs *tuning trials*: one ordinary, resumable cell per point of
the group's grid and tuning seed, under ``<out>/cells/tune/``. When the trials of a group have
ended, the point with the highest mean validation score over the tuning seeds is written into
the group's cells, which then run every seed. Recipe::

    tune:
      seeds: [0]            # seeds of the trials (default: the first seed of each group)
      metric: val_auc       # or val_acc
      grid:                 # a list: every strategy; a mapping: per strategy (``default``: the rest)
        lr: {default: [0.001, 0.003, 0.01], auto-rgn: [0.003, 0.01, 0.03]}
        strategy_args.alpha: {l2-sp: [0.001, 0.01, 0.1], l1-sp: [1.0e-5, 1.0e-4, 1.0e-3]}
        strategy_args.decay: {discriminative: [0.5, 0.7, 0.9]}

The score of a trial is ``metrics.json["val"][auc|acc]``, the validation score of the
checkpoint that the run kept (its best validation AUC); nothing else of the trial is read, so
the test split never takes part in a choice. Ties (means within 1e-9) go to the point that comes
first in the grid: the product of the lists in the order they are written, the first key
outermost. A trial whose loss became NaN or infinite (:class:`~ssl_ft.finite.NonFiniteError`)
has ended with the worst score; any other failed trial stops its group, and the study reports it.
Only keys that leave the budget alone are tunable (``lr``, ``weight_decay``, ``momentum``,
``warmup_epochs``, ``strategy_args.<knob>``), so the final runs of every strategy keep the same
epochs and optimiser steps; the trials are the extra cost, and the report states it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from ssl_ft.config import from_dict
from ssl_ft.errors import UserError

__all__ = ["TUNABLE", "Tune", "add_tuning", "apply_point", "choose", "diverged", "group_scores",
           "normalize_grid", "resolve", "trial_score", "value_of"]

TUNABLE = ("lr", "weight_decay", "momentum", "warmup_epochs")  # plus strategy_args.<knob>
DEFAULT = "default"   # the per-strategy mapping's entry for the strategies it does not name
TIE = 1e-9            # means closer than this are tied


@dataclass
class Tune:
    """The ``tune:`` block of a study recipe."""

    seeds: list[int] | None = None
    metric: Literal["val_auc", "val_acc"] = "val_auc"
    grid: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.grid:
            raise ValueError("tune.grid is empty (give e.g. tune.grid.lr: [0.001, 0.01])")
        if self.seeds is not None and not self.seeds:
            raise ValueError("tune.seeds is an empty list (leave it out to use each group's "
                             "first seed)")
        if self.seeds is not None and len(set(self.seeds)) < len(self.seeds):
            raise ValueError(f"tune.seeds = {self.seeds} repeats a seed")


def _strategy_names() -> list[str]:
    from ssl_ft.finetune.strategies import STRATEGIES

    return list(STRATEGIES)


def _knobs(strategy: str) -> list[str]:
    from ssl_ft.finetune.strategies import get_strategy

    return [f.name for f in dataclasses.fields(get_strategy(strategy).Config)]


def normalize_grid(grid: dict[str, Any]) -> dict[str, dict[str, list]]:
    """``{key: {strategy or "default": values}}`` from the recipe's grid; a nested
    ``strategy_args: {knob: ...}`` (what a ``tune.grid.strategy_args.knob=`` override makes)
    replaces the flat ``strategy_args.knob`` key. Raises a :class:`UserError` naming the key for
    an untunable key, an empty list, an unknown strategy, or a knob the strategy lacks."""
    flat = {k: v for k, v in grid.items() if k != "strategy_args"}
    nested = grid.get("strategy_args", {})
    if not isinstance(nested, dict):
        raise UserError(f"tune.grid.strategy_args = {nested!r} must map knobs to lists")
    flat.update({f"strategy_args.{knob}": v for knob, v in nested.items()})
    names = _strategy_names()
    out: dict[str, dict[str, list]] = {}
    for key, values in flat.items():
        knob = key.removeprefix("strategy_args.") if key.startswith("strategy_args.") else None
        if key not in TUNABLE and (not knob or "." in knob):
            raise UserError(f"tune.grid.{key}: not a tunable key (tune {', '.join(TUNABLE)} or "
                            "strategy_args.<knob>; epochs and batch size stay equal for every "
                            "strategy)")
        spec = values if isinstance(values, dict) else {DEFAULT: values}
        for strategy, vals in spec.items():
            if strategy != DEFAULT and strategy not in names:
                raise UserError(f"tune.grid.{key}: unknown strategy {strategy!r} (choose from "
                                f"{', '.join(names)}, or {DEFAULT})")
            if not isinstance(vals, list) or not vals:
                raise UserError(f"tune.grid.{key}{'' if values is vals else '.' + strategy} = "
                                f"{vals!r} must be a non-empty list")
            if knob and strategy != DEFAULT:
                _check_knob(key, strategy, knob)
        out[key] = {str(s): list(v) for s, v in spec.items()}
    return out


def _check_knob(key: str, strategy: str, knob: str) -> None:
    known = _knobs(strategy)
    if knob not in known:
        raise UserError(f"tune.grid.{key}: strategy {strategy} has no option {knob!r} (its "
                        f"strategy_args: {', '.join(known) or 'none'})")


def points_for(grid: dict[str, dict[str, list]], strategy: str) -> list[dict[str, Any]]:
    """The grid points a strategy's groups try, in grid order (``[{}]``: nothing to tune)."""
    keys, lists = [], []
    for key, spec in grid.items():
        values = spec.get(strategy, spec.get(DEFAULT))
        if values is None:
            continue
        if key.startswith("strategy_args."):
            _check_knob(key, strategy, key.removeprefix("strategy_args."))
        keys.append(key)
        lists.append(values)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*lists)]


def apply_point(config: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    """A copy of a cell's configuration with a grid point's values set."""
    out = dict(config)
    for key, value in point.items():
        if key.startswith("strategy_args."):
            out["strategy_args"] = {**out.get("strategy_args", {}),
                                    key.removeprefix("strategy_args."): value}
        else:
            out[key] = value
    return out


def value_of(config: dict[str, Any], key: str) -> Any:
    """The value of a grid key (``lr``, ``strategy_args.alpha``) in a configuration."""
    if key.startswith("strategy_args."):
        return config.get("strategy_args", {}).get(key.removeprefix("strategy_args."))
    return config.get(key)


def _short(key: str) -> str:
    return key.removeprefix("strategy_args.")


def _group_key(config: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True,
                      default=str)


def add_tuning(tune: Tune, cells: list) -> list:
    """The study's cells with the tuning trials added (before the fine-tuning cells) and each
    tuned group's cells given their ``tune`` record (and new ids: a changed tune block makes new
    cells). Groups with one grid point get its values without trials."""
    from ssl_ft.study.grid import Cell, cell_id

    grid = normalize_grid(tune.grid)  # (checked before any cell, so a bad key is the one error)
    groups: dict[str, list] = {}
    for cell in cells:
        if cell.kind == "finetune":
            groups.setdefault(_group_key(cell.config), []).append(cell)
    changed: dict[str, Cell] = {}
    trials: list[Cell] = []
    for members in groups.values():
        first = members[0]
        for key in grid:
            if key.split(".")[0] in first.labels:
                raise UserError(f"tune.grid.{key}: {key.split('.')[0]} is also a finetune grid "
                                "axis; vary it or tune it, not both")
        strategy = str(first.config.get("strategy", "ft"))
        try:
            points = points_for(grid, strategy)
        except UserError as exc:
            raise UserError(f"{exc} (the cells of strategy {strategy} get every list that is "
                            "not a per-strategy mapping)") from None
        if points == [{}]:
            continue
        seeds = tune.seeds or [int(first.config.get("seed", 0))]
        spec = {"metric": tune.metric, "seeds": seeds, "points": points,
                "grid": {k: v.get(strategy, v.get(DEFAULT)) for k, v in grid.items()
                         if strategy in v or DEFAULT in v}, "trials": []}
        fixed = {k: v for k, v in first.labels.items() if k != "seed"}
        group = ",".join(f"{k}={v}" for k, v in sorted(fixed.items())) or "all"
        if len(points) > 1:
            spec["trials"] = _trials(first, fixed, group, points, seeds, trials)
        for cell in members:
            config = cell.config if len(points) > 1 else apply_point(cell.config, points[0])
            _validate(config, cell.id)
            record = {k: spec[k] for k in ("metric", "seeds", "points")}
            cid = cell_id("finetune", cell.labels, {**config, "tune": record})
            changed[cell.id] = replace(cell, id=cid, config=config, tune={**spec, "group": group},
                                       needs=cell.needs + [i for ids in spec["trials"]
                                                           for i in ids])
    rest = [changed.get(c.id, c) for c in cells]
    first_ft = next((i for i, c in enumerate(rest) if c.kind == "finetune"), len(rest))
    return rest[:first_ft] + trials + rest[first_ft:]


def _trials(first: Any, fixed: dict[str, Any], group: str, points: list[dict[str, Any]],
            seeds: list[int], into: list) -> list[list[str]]:
    """Append a group's trial cells (one per point and tuning seed) to ``into``; returns their
    ids per point."""
    from ssl_ft.study.grid import Cell, cell_id

    ids = []
    for point in points:
        row = []
        for seed in seeds:
            config = apply_point({**first.config, "seed": seed}, point)
            labels = {**fixed, "seed": seed, **{_short(k): v for k, v in point.items()}}
            cid = cell_id("tune", labels, config)
            _validate(config, cid)
            into.append(Cell("finetune", cid, labels, config, list(first.needs),
                             trial={"group": group, "point": point, "seed": seed}))
            row.append(cid)
        ids.append(row)
    return ids


def _validate(config: dict[str, Any], where: str) -> None:
    from ssl_ft.finetune.config import FinetuneConfig
    from ssl_ft.finetune.strategies import get_strategy

    cfg = from_dict(FinetuneConfig, config, where=f"study cell {where}")
    from_dict(get_strategy(cfg.strategy).Config, cfg.strategy_args,
              where=f"study cell {where}", prefix="strategy_args.")


def diverged(folder: str | Path) -> bool:
    """Whether a run ended on a NaN or infinite loss (the last line of its ``error.txt``)."""
    from ssl_ft.finite import NonFiniteError

    path = Path(folder) / "error.txt"
    if not path.is_file():
        return False
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    name = f"{NonFiniteError.__module__}.{NonFiniteError.__qualname__}"
    return bool(lines) and lines[-1].startswith(name)


def trial_score(folder: str | Path, metric: str) -> float | None:
    """A trial's validation score (``metrics.json["val"]``, the kept checkpoint's), ``-inf`` for
    a trial that diverged, ``None`` for one that has not ended. Reads nothing but ``val``."""
    path = Path(folder) / "metrics.json"
    if path.is_file():
        value = float(json.loads(path.read_text())["val"][metric.removeprefix("val_")])
        return value if math.isfinite(value) else -math.inf
    return -math.inf if diverged(folder) else None


def choose(scores: list[list[float]]) -> int:
    """The index of the best point: the highest mean over its seeds (a diverged seed makes the
    point ``-inf``); ties within ``TIE`` go to the earliest point. Raises a ``ValueError`` when no
    point has a finite score."""
    means = [-math.inf if any(s == -math.inf for s in row) else sum(row) / len(row)
             for row in scores]
    best = max(means)
    if best == -math.inf:
        raise ValueError("no tuning trial has a finite score")
    return next(i for i, m in enumerate(means) if m >= best - TIE)


def group_scores(spec: dict[str, Any], out: str | Path) -> list[list[float | None]]:
    """Per point of a tuned group, its trials' scores (:func:`trial_score`)."""
    return [[trial_score(Path(out) / "cells" / tid, spec["metric"]) for tid in ids]
            for ids in spec["trials"]]


def resolve(cell: Any, out: str | Path) -> Any:
    """A tuned cell with its group's chosen point written into its configuration. Raises a
    :class:`UserError` when a trial has not ended or none has a finite score."""
    spec = cell.tune
    if not spec or not spec["trials"]:
        return cell
    scores = group_scores(spec, out)
    for ids, row in zip(spec["trials"], scores, strict=True):
        for tid, score in zip(ids, row, strict=True):
            if score is None:
                raise UserError(f"tuning trial {tid} has not finished")
    try:
        best = choose(scores)
    except ValueError:
        raise UserError(f"no tuning trial of {spec['group']} has a finite {spec['metric']} "
                        "(all diverged, or a one-class val split: try metric val_acc)") from None
    return replace(cell, config=apply_point(cell.config, spec["points"][best]))
