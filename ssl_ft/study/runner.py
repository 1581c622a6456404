"""Run the cells of a study: finished cells are skipped, unfinished ones resumed, pretraining
first, several processes at a time when the cores allow, one progress bar with an ETA.

Each cell calls the same library function as its tool (:func:`ssl_ft.pretrain.pretrain`,
:func:`ssl_ft.finetune.finetune`, :func:`ssl_ft.ensemble.ensemble`) with its run folder under
``<out>/cells/<id>`` and its log in ``log.txt`` there. A failed cell writes ``error.txt`` and
the study goes on; a killed study re-started with the same recipe continues where it stopped.
A full disk is not a cell's failure: it stops the study with a
:class:`~ssl_ft.errors.DiskFullError` naming the file (the finished cells and every cell's last
checkpoint stay readable, as all of them are written atomically), and the same command resumes
once there is space.
With a ``tune:`` block the tuning trials run after the pretraining and before the other cells,
which then get their group's chosen values (:mod:`ssl_ft.study.tune`).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ssl_ft.errors import DiskFullError, UserError, is_disk_full
from ssl_ft.runlock import LOCK_NAME, RunLock, is_temp_file
from ssl_ft.runtime import available_cores
from ssl_ft.study.grid import KEEP, Cell, Study
from ssl_ft.study.reuse import reuse_cells
from ssl_ft.study.tune import diverged, resolve

__all__ = ["check_inputs", "is_done", "list_cells", "prune", "run_cell", "run_study"]


def is_done(cell: Cell, out: str | Path) -> bool:
    """Whether a cell has its result (a tuning trial also when it diverged: that is its result)."""
    folder = cell.folder(out)
    if cell.trial is not None and diverged(folder):
        return True
    # a pretraining's last file is summary.json, written after checkpoint.pt (a cell killed in
    # between resumes and writes it)
    names = ("checkpoint.pt", "summary.json") if cell.kind == "pretrain" else ("metrics.json",)
    return all((folder / name).is_file() for name in names)


def list_cells(study: Study, cells: list[Cell]) -> list[str]:
    """What ``tools/study.py --list`` / ``--dry-run`` prints: one line a cell (done, todo or
    diverged, its id; for a tuned cell what it chose, or how many trials it waits for), then the
    counts."""
    from ssl_ft.study.tune import value_of
    from ssl_ft.study.tuning_report import point_text

    lines = []
    for cell in cells:
        state = "done" if is_done(cell, study.out) else "todo"
        if cell.trial is not None and diverged(cell.folder(study.out)):
            state = "diverged"
        note = ""
        if cell.tune:
            n = sum(len(ids) for ids in cell.tune["trials"])
            try:
                config = resolve(cell, study.out).config
                chosen = point_text({k: value_of(config, k) for k in cell.tune["points"][0]})
                note = f"  [tuned: {chosen}" + (f", chosen from {n} trials]" if n else "]")
            except UserError:
                note = f"  [tuned: waits for {n} trials]"
        lines.append(f"{state}  {cell.id}{note}")
    trials = sum(c.trial is not None for c in cells)
    return lines + [f"{len(cells)} cells" + (f" ({trials} tuning trials)" if trials else "")]


def prune(cell: Cell, out: str | Path, keep: str) -> None:
    """Delete what a finished fine-tuning cell no longer needs (``Study.keep``): its resume
    state ``last.pt`` and ``best.pt`` (a copy of model.pt), so that hundreds of cells do not fill
    the disk (a resnet50 cell holds ~0.4 GB otherwise). A finished cell of any kind whose run was
    killed after its last file (before it let go of its lock) loses the stale lock and temp files.
    A tuning trial keeps no weights (``keep: metrics``)."""
    if not is_done(cell, out):
        return
    folder = cell.folder(out)
    if any(p.name == LOCK_NAME or is_temp_file(p) for p in folder.iterdir()):
        with contextlib.suppress(UserError), RunLock(folder):  # in use elsewhere: left alone
            pass
    if cell.kind == "finetune":
        for name in KEEP["metrics" if cell.trial is not None else keep]:
            (folder / name).unlink(missing_ok=True)


def check_inputs(study: Study, cells: list[Cell]) -> None:
    """Fail in a second, not after hours of runs: every dataset and checkpoint file that an
    unfinished cell reads must be there (checkpoints that the study pretrains excepted). Raises
    a :class:`UserError` naming the first missing input and how many cells need it."""
    from ssl_ft.data import locate_data
    from ssl_ft.pretrain import load_pretrain_recipe

    made = {str(c.folder(study.out) / "checkpoint.pt") for c in cells if c.kind == "pretrain"}
    problems: dict[str, list[str]] = {}
    leaks: dict[tuple, str | None] = {}
    seen: dict[tuple, str | None] = {}

    def data_ok(cell: Cell, data: str, root: str | None, size: int | None, download: bool) -> None:
        key = (data, root, size, download)
        if key not in seen:
            try:
                locate_data(data, data_root=root, size=size, download=download)
                seen[key] = None
            except UserError as exc:
                seen[key] = str(exc)
        if seen[key]:
            problems.setdefault(seen[key], []).append(cell.id)

    for cell in cells:
        if is_done(cell, study.out):
            continue
        cfg = cell.config
        if cell.kind == "pretrain":
            d = load_pretrain_recipe(cfg["recipe"], cfg["overrides"]).data
            for name in (d.name if isinstance(d.name, list) else [d.name]):
                data_ok(cell, name if isinstance(name, str) else name.name, d.root, d.size,
                        d.download)
            continue
        data_ok(cell, str(cfg.get("data", "pneumoniamnist")), cfg.get("data_root"),
                cfg.get("size"), bool(cfg.get("download", False)))
        paths = [cfg.get("checkpoint", "none")] if cell.kind == "finetune" else cfg["checkpoints"]
        for path in map(str, paths):
            if path not in ("none", "imagenet") and path not in made and not Path(path).is_file():
                problems.setdefault(f"checkpoint not found: {path}", []).append(cell.id)
            elif Path(path).is_file() and not cfg.get("allow_overlap"):
                err = _leak_problem(path, cfg, leaks)
                if err:
                    problems.setdefault(err, []).append(cell.id)
    if problems:
        first, ids = next(iter(problems.items()))
        more = f"; {len(problems) - 1} more missing input(s)" if len(problems) > 1 else ""
        raise UserError(f"{first} (needed by {len(ids)} cell(s), e.g. {ids[0]}){more}")


def _leak_problem(path: str, cfg: dict[str, Any], seen: dict[tuple, str | None]) -> str | None:
    """The leakage guard (:mod:`ssl_ft.leakage`) for a checkpoint that exists before the study
    runs and the data a cell evaluates it on (once per pair); the error text, or ``None``."""
    from ssl_ft.data import load_data
    from ssl_ft.leakage import guard_checkpoint

    key = (path, str(cfg.get("data", "pneumoniamnist")), cfg.get("data_root"), cfg.get("size"))
    if key not in seen:
        seen[key] = None
        try:
            splits = load_data(key[1], data_root=key[2], size=key[3])
            guard_checkpoint(path, splits.images, target=splits.info.name)
        except UserError as exc:
            seen[key] = str(exc)
    return seen[key]


def run_cell(kind: str, config: dict[str, Any], folder: str, threads: int | None) -> str | None:
    """Run one cell (in this process); returns None, or the error's last line. A full disk
    raises :class:`~ssl_ft.errors.DiskFullError` instead (the study cannot go on)."""
    folder_path = Path(folder)
    log_path = folder_path / "log.txt"
    try:
        folder_path.mkdir(parents=True, exist_ok=True)
        (folder_path / "error.txt").unlink(missing_ok=True)
        # line-buffered: a full disk shows at the cell's print, not later at close
        with open(log_path, "a", buffering=1) as log, contextlib.redirect_stderr(log), \
                contextlib.redirect_stdout(log):
            try:
                _call(kind, config, folder, threads)
                return None
            except BaseException as exc:  # noqa: BLE001  (a study outlives a failed cell)
                if isinstance(exc, KeyboardInterrupt | SystemExit):  # also submitit's requeue
                    raise
                if isinstance(exc, DiskFullError):
                    raise
                if is_disk_full(exc):  # a write of a library that does not name its file
                    raise DiskFullError(getattr(exc, "filename", None) or log_path) from exc
                text = traceback.format_exc()
                (folder_path / "error.txt").write_text(text)
                return f"{type(exc).__name__}: {exc}".splitlines()[0]
    except OSError as exc:  # the cell's own folder, log.txt or error.txt
        if is_disk_full(exc):
            raise DiskFullError(exc.filename or log_path) from exc
        raise


def timed_cell(kind: str, config: dict[str, Any], folder: str,
               threads: int | None) -> tuple[str | None, float]:
    """:func:`run_cell` and its wall seconds, measured where it runs (a pool's queue excluded)."""
    t0 = time.perf_counter()
    return run_cell(kind, config, folder, threads), time.perf_counter() - t0


def _call(kind: str, config: dict[str, Any], folder: str, threads: int | None) -> None:
    from ssl_ft.config import from_dict

    if kind == "pretrain":
        from ssl_ft.pretrain import load_pretrain_recipe, pretrain

        extra = [f"out={folder}"] + ([f"train.threads={threads}"] if threads else [])
        cfg = load_pretrain_recipe(config["recipe"], [*config["overrides"], *extra])
        pretrain(cfg, resume=True, progress=False)
    elif kind == "finetune":
        from ssl_ft.finetune import FinetuneConfig, finetune

        cfg = from_dict(FinetuneConfig, {**config, "out": folder, "threads": threads})
        finetune(cfg, resume=True, progress=False)
    else:
        from ssl_ft.ensemble import EnsembleConfig, ensemble

        ensemble(from_dict(EnsembleConfig, {**config, "out": folder, "threads": threads}))


def run_study(study: Study, cells: list[Cell], *, workers: int | None = None,
              progress: bool | None = None) -> dict[str, str]:
    """Run every unfinished cell; returns ``{cell id: error}`` for the cells that failed.
    Missing inputs stop the study before the first cell (:func:`check_inputs`). The study
    folder is locked while it runs (:class:`~ssl_ft.runlock.RunLock`; each cell locks its own)."""
    check_inputs(study, cells)
    with RunLock(study.out):
        return _run_study(study, cells, workers, progress)


def _run_study(study: Study, cells: list[Cell], workers: int | None,
               progress: bool | None) -> dict[str, str]:
    reuse_cells(cells, study.out, study.reuse)
    workers = workers or study.workers
    threads = study.threads or (study.slurm.cpus_per_task if study.executor == "slurm"
                                else max(1, available_cores() // workers))
    todo = [c for c in cells if not is_done(c, study.out)]
    for cell in cells:  # also cells that finished just before a kill
        prune(cell, study.out, study.keep)
    pool = _pool(study, workers)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc=study.name, unit="run",
               disable=not show, file=sys.stderr, dynamic_ncols=True)
    how = ("as SLURM jobs" if study.executor == "slurm" else f"with {workers} worker(s)")
    print(f"study {study.name}: {len(cells)} cells, {len(cells) - len(todo)} done, "
          f"{len(todo)} to run {how} x {threads} thread(s) ({study.executor})", file=sys.stderr)
    failed: dict[str, str] = {}
    count = [len(cells) - len(todo), len(cells)]
    t0, started = time.perf_counter(), time.time()
    try:
        for phase in ("pretrain", "tune", "rest"):
            batch = [c for c in todo if _phase(c) == phase]
            if phase == "rest":  # (also drops the cells whose inputs failed)
                batch = _resolve_tuned(batch, study.out, failed)
            batch = [c for c in batch if not any(n in failed for n in c.needs)]
            _run_batch(batch, study, threads, pool, bar, failed, count, show)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        bar.close()
        _log_timing(study.out, {"study": study.name, "started": started,
                                "wall_s": round(time.perf_counter() - t0, 3),
                                "cells_run": count[0] - (len(cells) - len(todo)),
                                "workers": workers, "threads": threads,
                                "executor": study.executor})
    for cid, err in failed.items():
        print(f"FAILED {cid}: {err}", file=sys.stderr)
    return failed


def _log_timing(out: str | Path, line: dict[str, Any]) -> None:
    """Append a line to ``out/timing.jsonl``: one per finished cell (its id and wall seconds
    as the runner saw them) and one per call of the runner (so a resumed study keeps every
    part); read by :mod:`ssl_ft.study.profile_report`."""
    try:
        with open(Path(out) / "timing.jsonl", "a") as fh:
            fh.write(json.dumps(line) + "\n")
    except OSError as exc:  # a record of the time must not hide the study's own error
        print(f"warning: could not record the study's time: {exc}", file=sys.stderr)


def _phase(cell: Cell) -> str:
    return "pretrain" if cell.kind == "pretrain" else "tune" if cell.trial is not None else "rest"


def _resolve_tuned(batch: list[Cell], out: str | Path, failed: dict[str, str]) -> list[Cell]:
    """The cells with their group's chosen values (:func:`ssl_ft.study.tune.resolve`); a
    diverged trial is a result, not a failure; a cell whose group cannot choose fails."""
    for cid in [c for c in failed if c.startswith("tune/")]:
        if diverged(Path(out) / "cells" / cid):
            print(f"tuning trial {cid} diverged (scored as the worst point)", file=sys.stderr)
            del failed[cid]
    ready = []
    for cell in batch:
        if any(n in failed for n in cell.needs):
            continue
        try:
            ready.append(resolve(cell, out))
        except UserError as exc:
            failed[cell.id] = str(exc)
    return ready


def _pool(study: Study, workers: int) -> Executor | None:
    """None (in this process), a process pool, or submitit jobs (:mod:`ssl_ft.study.submit`)."""
    if study.executor != "local":
        from ssl_ft.study.submit import make_pool

        return make_pool(study.executor, study.slurm, Path(study.out) / "submitit", study.name,
                         workers)
    return None if workers == 1 else ProcessPoolExecutor(workers,
                                                         mp_context=mp.get_context("spawn"))


def _run_batch(batch: list[Cell], study: Study, threads: int, pool: Executor | None,
               bar: tqdm, failed: dict[str, str], count: list[int], show: bool) -> None:
    def finished(cell: Cell, err: str | None, seconds: float, own: bool = True) -> None:
        if err is not None:
            failed[cell.id] = err
        # own: measured by the cell's process (False: since it was queued, a worker that died)
        _log_timing(study.out, {"cell": cell.id, "kind": cell.kind, "wall_s": round(seconds, 3),
                                "own": own, "failed": err is not None})
        prune(cell, study.out, study.keep)
        bar.update(1)
        bar.set_postfix_str(f"last {seconds:.0f}s", refresh=False)
        count[0] += 1
        if not show:  # no bar (not a terminal): one line a cell
            print(f"[{count[0]}/{count[1]}] {'FAILED' if err else 'done'} {cell.id} "
                  f"({seconds:.0f} s)", file=sys.stderr)

    if pool is None:
        for cell in batch:
            t0 = time.perf_counter()
            err = run_cell(cell.kind, cell.config, str(cell.folder(study.out)), threads)
            finished(cell, err, time.perf_counter() - t0)
        return
    running: dict[Future, tuple[Cell, float]] = {}
    for cell in batch:
        fut = pool.submit(timed_cell, cell.kind, cell.config, str(cell.folder(study.out)),
                          threads)
        running[fut] = (cell, time.perf_counter())
    while running:
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for fut in done:
            cell, t0 = running.pop(fut)
            seconds, own = time.perf_counter() - t0, False  # since it was queued
            try:
                err = fut.result()
                if isinstance(err, tuple):  # (error, its own wall seconds)
                    (err, seconds), own = err, True
            except DiskFullError:  # the study stops (the pool is shut down by the caller)
                raise
            except Exception as exc:  # noqa: BLE001  (a worker died)
                err = f"{type(exc).__name__}: {exc}"
            finished(cell, err, seconds, own)
