"""A study recipe and its expansion into cells (one fine-tuning, fusion or pretraining run each).

A study is a grid of runs (Khan & Fang's layer ranges x SSL methods x label fractions; Davila et
al.'s strategies x architectures x datasets). The recipe::

    name: khan_fang
    out: runs/study/khan_fang
    workers: 1                      # cells run in parallel processes
    executor: local                 # or submitit-local | slurm (jobs through submitit)
    slurm: {partition: gpu, timeout_min: 240, gpus_per_node: 1}   # resources of a cell's job
    keep: model                     # finished cells keep model.pt (all: + last/best.pt; metrics)
    checkpoints:                    # names usable in the grids; {data} is filled per cell
      simclr: runs/pretrain/simclr_{data}/checkpoint.pt
    pretrain:                       # or pretrained by the study itself (before the other cells),
      genesis: {recipe: recipes/pretrain/genesis_{data}.yaml, overrides: [train.epochs=40]}
      simclr_r50: {recipe: recipes/pretrain/simclr_pneumoniamnist.yaml, data: pneumoniamnist,
                   overrides: [model.arch=resnet50]}   # one source dataset for every cell
    finetune:
      base: {epochs: 8}             # FinetuneConfig keys shared by every cell
      grid:                         # the product over these lists
        data: [pneumoniamnist]
        checkpoint: [simclr, genesis]
        layers,truncate: [[0-25, 100], [25-50, 100], [0-75, 75]]   # zipped keys
        seed: [0, 1, 2]
      extra:                        # more cells: each entry fixes some axes, the rest expand
        - {checkpoint: none, arch: resnet18, "layers,truncate": [0-100, 100]}
    ensemble:
      base: {}
      grid: {data: [pneumoniamnist], checkpoints: [[simclr, genesis]], seed: [0, 1, 2]}
    tune:                           # per-strategy tuning on the val split (ssl_ft.study.tune)
      seeds: [0]
      grid: {lr: [0.001, 0.01], strategy_args.alpha: {l2-sp: [0.001, 0.01, 0.1]}}

Every cell has a stable id built from the values that vary, which names its run folder, so a
re-started study finds its finished cells.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_ft.config import from_dict, read_yaml
from ssl_ft.ensemble.config import EnsembleConfig
from ssl_ft.errors import UserError
from ssl_ft.finetune.config import FinetuneConfig
from ssl_ft.study.submit import EXECUTORS, SlurmConfig
from ssl_ft.study.tune import Tune

__all__ = ["Cell", "Study", "cell_id", "expand", "load_study"]

KINDS = {"finetune": FinetuneConfig, "ensemble": EnsembleConfig}
# what a finished fine-tuning cell keeps besides metrics.json, logs and TensorBoard files: its
# model.pt (default), also the resume/best states (all), or no weights at all (metrics)
KEEP = {"model": ("last.pt", "best.pt"), "all": (), "metrics": ("last.pt", "best.pt", "model.pt")}


@dataclass
class Section:
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    extra: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Study:
    name: str = "study"
    out: str = "runs/study"
    workers: int = 1
    threads: int | None = None     # torch threads per worker (default: cores / workers)
    keep: str = "model"            # files of a finished fine-tuning cell: model | all | metrics
    executor: str = "local"        # local | submitit-local | slurm (ssl_ft.study.submit)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)  # a cell's job resources
    checkpoints: dict[str, str] = field(default_factory=dict)
    pretrain: dict[str, dict[str, Any]] = field(default_factory=dict)
    finetune: Section | None = None
    ensemble: Section | None = None
    tune: Tune | None = None       # per-strategy tuning of the finetune cells (ssl_ft.study.tune)
    reuse: list[str] = field(default_factory=list)  # other studies' out: their equal runs are
    #                                                 copied, not run again (ssl_ft.study.reuse)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.keep not in KEEP:
            raise ValueError(f"keep must be one of {', '.join(KEEP)}, got {self.keep!r}")
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, "
                             f"got {self.executor!r}")


@dataclass
class Cell:
    """One run: ``kind`` (pretrain | finetune | ensemble), its id, the values that vary across
    the grid (``labels``) and the full configuration for the library call. A tuning trial is a
    finetune cell with ``trial`` set (its group, grid point and seed); a cell of a tuned group
    has ``tune`` (the grid, its points and their trials' ids), and its configuration gets the
    chosen point when its trials have ended (:func:`ssl_ft.study.tune.resolve`)."""

    kind: str
    id: str
    labels: dict[str, Any]
    config: dict[str, Any]
    needs: list[str] = field(default_factory=list)  # ids of cells to finish first
    trial: dict[str, Any] | None = None
    tune: dict[str, Any] | None = None

    def folder(self, study_out: str | Path) -> Path:
        return Path(study_out) / "cells" / self.id


def load_study(path: str | Path, overrides: list[str] = ()) -> Study:
    """A validated study recipe (unknown keys and wrong types name the key)."""
    from ssl_ft.config import apply_overrides

    data = apply_overrides(read_yaml(path), overrides)
    tune = data.pop("tune", None)  # (read on its own: an optional section's errors name the key)
    study = from_dict(Study, data, where=str(path))
    if tune is not None:
        study.tune = from_dict(Tune, tune, where=str(path), prefix="tune.")
    sections = [k for k in ("finetune", "ensemble") if getattr(study, k) is not None]
    if not sections:
        raise UserError(f"{path}: the study has no finetune or ensemble section, so no cells")
    if study.tune is not None and study.finetune is None:
        raise UserError(f"{path}: tune: tunes fine-tuning cells, and the study has no finetune "
                        "section")
    for kind in sections:
        section = getattr(study, kind)
        if not section.grid and not section.extra:
            raise UserError(f"{path}: {kind}.grid is empty and there is no {kind}.extra, so "
                            f"no cells (give at least one axis, e.g. {kind}.grid.seed: [0])")
    return study


def _slug(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "+".join(_slug(v) for v in value)
    text = Path(str(value)).stem if "/" in str(value) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text)


def _digest(config: dict[str, Any]) -> str:
    """The first 8 hex digits of the SHA-256 of a cell's configuration (part of its id)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _axes(grid: dict[str, list]) -> list[tuple[list[str], list[tuple]]]:
    out = []
    for key, values in grid.items():
        names = [k.strip() for k in key.split(",")]
        if not isinstance(values, list) or not values:
            raise UserError(f"grid axis {key!r} must be a non-empty list")
        rows = []
        for v in values:
            row = tuple(v) if len(names) > 1 else (v,)
            if len(row) != len(names):
                raise UserError(f"grid axis {key!r}: {v!r} does not have {len(names)} values")
            rows.append(row)
        out.append((names, rows))
    return out


def expand(study: Study) -> list[Cell]:
    """All cells of the study, pretraining first, without duplicates."""
    cells: dict[str, Cell] = {}
    for kind in ("finetune", "ensemble"):
        section: Section | None = getattr(study, kind)
        if section is None:
            continue
        axes = _axes(section.grid)
        entries = ([{}] if axes else []) + list(section.extra)  # no axes: extras only
        for entry in entries:
            fixed = {tuple(k.strip() for k in key.split(",")): v for key, v in entry.items()}
            free = [(names, rows) for names, rows in axes if tuple(names) not in fixed]
            for combo in itertools.product(*[rows for _, rows in free]):
                labels: dict[str, Any] = {}
                for (names, _), row in zip(free, combo, strict=True):
                    labels.update(zip(names, row, strict=True))
                for names, v in fixed.items():
                    labels.update(zip(names, v if len(names) > 1 else (v,), strict=True))
                cell, pretrain = _cell(study, kind, section.base, labels)
                for p in pretrain:
                    cells.setdefault(p.id, p)
                cells.setdefault(cell.id, cell)
    order = {"pretrain": 0, "finetune": 1, "ensemble": 2}
    out = sorted(cells.values(), key=lambda c: order[c.kind])
    if study.tune is not None:
        from ssl_ft.study.tune import add_tuning

        out = add_tuning(study.tune, out)
    return out


def _resolve(study: Study, name: Any, data: str) -> tuple[str, list[Cell]]:
    """A checkpoint name -> its path for this dataset, and the pretrain cell it needs."""
    name = str(name)
    if name in study.pretrain:
        spec = study.pretrain[name]
        data = str(spec.get("data", data))  # a fixed pretraining dataset, or the cell's own
        if "recipe" not in spec:
            raise UserError(f"pretrain.{name} needs a recipe (e.g. recipes/pretrain/"
                            f"{name}_{{data}}.yaml)")
        overrides = [str(o).format(data=data) for o in spec.get("overrides", [])]
        config = {"recipe": str(spec["recipe"]).format(data=data),
                  "overrides": [f"data.name={data}", *overrides]}
        # the overrides are in the id: a changed pretraining is a new cell, not a stale one
        cid = f"pretrain/{_slug(name)}_{_slug(data)}-{_digest(config)}"
        cell = Cell("pretrain", cid, {"pretrain": name, "data": data}, config)
        return str(Path(study.out) / "cells" / cid / "checkpoint.pt"), [cell]
    if name in study.checkpoints:
        return study.checkpoints[name].format(data=data), []
    return name, []  # a literal path, none or imagenet


def cell_id(prefix: str, labels: dict[str, Any], config: dict[str, Any]) -> str:
    """``prefix/key=value,...-digest``: the values that vary, then a digest of the whole
    configuration (a changed configuration is a new cell, not a stale one)."""
    parts = [f"{k}={_slug(v)}" for k, v in sorted(labels.items())]
    return f"{prefix}/" + ",".join(parts)[:150] + f"-{_digest(config)}"


def _cell(study: Study, kind: str, base: dict, labels: dict[str, Any]) -> tuple[Cell, list[Cell]]:
    config = {**base, **labels}
    data = str(config.get("data", "pneumoniamnist"))
    needs: list[Cell] = []
    if kind == "finetune":
        config["checkpoint"], needs = _resolve(study, config.get("checkpoint", "none"), data)
    else:
        paths = []
        for name in config.get("checkpoints", []):
            path, need = _resolve(study, name, data)
            paths.append(path)
            needs += need
        config["checkpoints"] = paths
    cid = cell_id(kind, labels, config)
    cfg = from_dict(KINDS[kind], config, where=f"study cell {cid}")
    if kind == "finetune":  # fail before hours of runs, not in the middle of them
        from ssl_ft.finetune.strategies import get_strategy
        from ssl_ft.models.depth import parse_layers, parse_percent

        get_strategy(cfg.strategy)
        if cfg.layers != "auto":
            parse_layers(cfg.layers)
        if cfg.truncate != "auto":
            parse_percent(cfg.truncate)
        if "auto" in (cfg.layers, cfg.truncate):  # chosen per run (ssl_ft.auto_layers)
            from ssl_ft.auto_layers import auto_config

            auto_config(cfg)
    return Cell(kind, cid, labels, config, [n.id for n in needs]), needs
