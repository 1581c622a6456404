"""Run a study's cells as ``submitit`` jobs: on a SLURM cluster, or as local processes.

In the manner of the ``run_with_submitit.py`` launchers of DeiT, DINO (Caron et al., "Emerging
Properties in Self-Supervised Vision Transformers", ICCV 2021) and MAE (He et al., "Masked
Autoencoders Are Scalable Vision Learners", CVPR 2022): an ``AutoExecutor`` with the job's
resources (``timeout_min``, ``cpus_per_task``, ``mem_gb``, ``gpus_per_node``, one task per GPU,
``slurm_partition``, ``slurm_signal_delay_s``), a job that is ``Checkpointable`` (on a timeout or
a preemption SLURM signals it, submitit requeues it, and the cell resumes from its ``last.pt``)
and, for a cell with several tasks, the ``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` variables that
``torchrun`` would set (``submitit.helpers.TorchDistributedEnvironment``).

The study runner (:func:`ssl_ft.study.run_study`) stays the same: :class:`SubmititPool` is a
``concurrent.futures.Executor`` whose futures are jobs, so finished cells are skipped,
pretraining cells run (and finish) before the cells that need them, and a failed cell -- or a job
that SLURM killed -- is reported as failed while the others go on. Each tick of a background
thread submits the queued cells (as one SLURM job array when there are several) and collects
the finished jobs. Recipe::

    executor: slurm                 # local (default) | submitit-local | slurm
    slurm: {partition: gpu, timeout_min: 240, cpus_per_task: 8, mem_gb: 32, gpus_per_node: 1}

The job folder (sbatch scripts, pickles, each job's stdout/stderr) is ``<out>/submitit``; each
cell also logs into its own ``log.txt`` as with the local runner. See ``docs/distributed.md``.
"""

from __future__ import annotations

import shutil
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssl_ft.errors import UserError

__all__ = ["EXECUTORS", "CellTask", "SlurmConfig", "SubmititPool", "executor_parameters",
           "make_pool"]

EXECUTORS = ("local", "submitit-local", "slurm")
SETTLE_S = 0.3  # after a submit, wait this long for more before sending a job array


@dataclass
class SlurmConfig:
    """Resources of one cell's job (the ``slurm:`` section of a study recipe). ``submitit-local``
    uses ``timeout_min``, ``tasks_per_node``, ``gpus_per_node`` and ``setup``; the rest are
    SLURM's (``sbatch`` options)."""

    partition: str | None = None
    timeout_min: int = 1440         # the job's time limit; a cell past it is requeued
    cpus_per_task: int = 4          # also the cell's torch threads (SLURM_CPUS_PER_TASK)
    mem_gb: float | None = None     # memory per node (None: the partition's default)
    gpus_per_node: int = 0
    tasks_per_node: int | None = None  # default: one task per GPU (a DDP cell), else 1
    nodes: int = 1
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = 256    # most cells of one job array running at once
    max_num_timeout: int = 3        # requeues after timeouts (preemptions do not count)
    signal_delay_s: int = 120       # SLURM signals the job this long before its time limit
    setup: list[str] = field(default_factory=list)  # shell lines first, e.g. "module load cuda"
    additional: dict[str, Any] = field(default_factory=dict)  # more sbatch options

    def __post_init__(self) -> None:
        for name in ("timeout_min", "cpus_per_task", "nodes", "array_parallelism"):
            if getattr(self, name) < 1:
                raise ValueError(f"slurm.{name} must be >= 1, got {getattr(self, name)}")
        if self.gpus_per_node < 0 or (self.tasks_per_node is not None and self.tasks_per_node < 1):
            raise ValueError("slurm.gpus_per_node must be >= 0 and slurm.tasks_per_node >= 1")


def executor_parameters(cfg: SlurmConfig, name: str) -> dict[str, Any]:
    """``AutoExecutor.update_parameters`` keywords for ``cfg`` (generic keys, then ``slurm_``
    and ``local_`` ones; each executor ignores the other's)."""
    params: dict[str, Any] = {
        "name": name, "timeout_min": cfg.timeout_min, "cpus_per_task": cfg.cpus_per_task,
        "nodes": cfg.nodes, "gpus_per_node": cfg.gpus_per_node,
        "tasks_per_node": cfg.tasks_per_node or max(1, cfg.gpus_per_node),
        "slurm_signal_delay_s": cfg.signal_delay_s,
        "slurm_array_parallelism": cfg.array_parallelism,
    }
    if cfg.mem_gb is not None:
        params["mem_gb"] = cfg.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(cfg, key) is not None:
            params[f"slurm_{key}"] = getattr(cfg, key)
    if cfg.setup:
        params["slurm_setup"] = list(cfg.setup)
        params["local_setup"] = list(cfg.setup)
    if cfg.additional:
        params["slurm_additional_parameters"] = dict(cfg.additional)
    return params


class CellTask:
    """The job function: one study cell (:func:`ssl_ft.study.runner.run_cell`) on the node.

    A timeout or preemption signal makes submitit call :meth:`checkpoint`, which resubmits the
    same call; the cell then resumes from its ``last.pt``. With several tasks (``tasks_per_node``
    or ``nodes`` > 1) every task joins one torch process group (the variables torchrun would set;
    ``CUDA_VISIBLE_DEVICES`` is left alone, the runtime picks ``cuda:LOCAL_RANK``); only rank 0
    logs into the cell's ``log.txt`` and ``error.txt``."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, kind: str, config: dict[str, Any], folder: str,
                 threads: int | None) -> Any:
        import submitit

        env = submitit.JobEnvironment()
        if env.num_tasks > 1:
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
            if env.global_rank > 0:  # the other ranks train too; their output: the job's log
                from ssl_ft.study.runner import _call

                _call(kind, config, folder, threads)
                return None
        return self.fn(kind, config, folder, threads)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Requeue the same cell (submitit's ``Checkpointable`` protocol)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(CellTask(self.fn), *args, **kwargs)


class SubmititPool(Executor):
    """A ``concurrent.futures.Executor`` over a submitit executor: ``submit`` queues a call,
    a background thread submits what is queued (at most ``limit`` jobs in flight, None: no
    limit) and resolves each future with its job's result, or with a one-line
    ``RuntimeError`` naming the job and its log when the job itself failed."""

    def __init__(self, executor: Any, *, limit: int | None = None, poll_s: float = 1.0) -> None:
        self.executor, self.limit, self.poll_s = executor, limit, poll_s
        self._queued: list[tuple[Future, Callable, tuple]] = []
        self._running: dict[Future, Any] = {}
        self._lock = threading.Lock()
        self._stop, self._wake = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="submitit-pool", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:  # noqa: D102
        if kwargs:
            raise TypeError("SubmititPool.submit takes positional arguments only")
        fut: Future = Future()
        with self._lock:
            self._queued.append((fut, fn, args))
        self._wake.set()
        return fut

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._wake.wait(self.poll_s):  # a submit: let the rest of its batch come too
                self._stop.wait(SETTLE_S)
                self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._tick()
            except Exception as exc:  # noqa: BLE001  (keep polling; a stuck study is worse)
                print(f"submitit pool: {_one_line(exc)}", file=sys.stderr)

    def _tick(self) -> None:
        with self._lock:
            free = len(self._queued) if self.limit is None else self.limit - len(self._running)
            take, self._queued = self._queued[:max(0, free)], self._queued[max(0, free):]
        take = [t for t in take if t[0].set_running_or_notify_cancel()]
        if take:
            try:
                jobs = self._launch(take)
            except Exception as exc:  # noqa: BLE001  (sbatch refused: every cell of it failed)
                for fut, _, _ in take:
                    fut.set_exception(RuntimeError(f"submission failed: {_one_line(exc)}"))
            else:
                with self._lock:
                    self._running.update(zip((t[0] for t in take), jobs, strict=True))
        for fut, job in list(self._running.items()):
            if job.done():
                with self._lock:
                    self._running.pop(fut)
                _resolve(fut, job)

    def _launch(self, take: list[tuple[Future, Callable, tuple]]) -> list[Any]:
        if len(take) == 1:
            fut, fn, args = take[0]
            return [self.executor.submit(CellTask(fn), *args)]
        with self.executor.batch():  # one job array
            jobs = [self.executor.submit(CellTask(fn), *args) for _, fn, args in take]
        return jobs

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the thread; with ``cancel_futures``, cancel the queued calls and the jobs still
        running (``scancel`` on SLURM)."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        if cancel_futures:
            with self._lock:
                queued, self._queued = self._queued, []
                running, self._running = dict(self._running), {}
            for fut, _, _ in queued:
                fut.cancel()
            for fut, job in running.items():
                job.cancel(check=False)
                fut.set_exception(RuntimeError(f"job {job.job_id} cancelled"))
        elif wait:
            while self._running or self._queued:
                self._tick()
                self._stop.wait(self.poll_s)


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _resolve(fut: Future, job: Any) -> None:
    try:
        fut.set_result(job.result())
    except Exception as exc:  # noqa: BLE001  (the job died: killed, out of memory, requeues spent)
        fut.set_exception(RuntimeError(f"job {job.job_id} failed ({_one_line(exc)}); see "
                                       f"{job.paths.stderr}"))


def make_pool(executor: str, cfg: SlurmConfig, folder: str | Path, name: str,
              workers: int, poll_s: float | None = None) -> SubmititPool:
    """The pool for ``executor`` (``submitit-local``: at most ``workers`` jobs at once;
    ``slurm``: the array's ``array_parallelism`` limits them). Raises a :class:`UserError`
    when SLURM's ``sbatch`` or ``srun`` is not on the PATH."""
    if executor not in EXECUTORS[1:]:
        raise UserError(f"executor {executor!r} does not submit jobs (use submitit-local or slurm)")
    missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
    if executor == "slurm" and missing:
        raise UserError(f"executor slurm: {missing[0]} is not on the PATH (run the study on a "
                        "SLURM login node, or use executor=submitit-local)")
    import submitit

    cluster = "slurm" if executor == "slurm" else "local"
    ex = submitit.AutoExecutor(folder=str(Path(folder) / "%j"), cluster=cluster,
                               slurm_max_num_timeout=cfg.max_num_timeout,
                               local_max_num_timeout=cfg.max_num_timeout)
    try:
        ex.update_parameters(**executor_parameters(cfg, name))
    except ValueError as exc:  # e.g. nodes > 1 for the local executor
        raise UserError(f"slurm: {_one_line(exc)}") from None
    if executor == "slurm":  # job states come from sacct, which submitit calls sparingly
        return SubmititPool(ex, limit=None, poll_s=poll_s or 15.0)
    return SubmititPool(ex, limit=workers, poll_s=poll_s or 0.5)
