"""Devices, threads, mixed precision, seeding and torchrun-style DDP from environment variables.

Follows torchvision's ``references/classification`` conventions: ``torchrun --nproc_per_node N``
sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_distributed` picks NCCL on CUDA and
gloo on the CPU; only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_ft.errors import UserError, writing

__all__ = [
    "Dist",
    "autocast",
    "available_cores",
    "cache_dir",
    "check_can_create",
    "cleanup_distributed",
    "cpu_has_bf16",
    "distributed",
    "grad_scaler",
    "init_distributed",
    "make_run_folder",
    "resolve_device",
    "resolve_precision",
    "seed_everything",
    "set_threads",
    "summary_writer",
]


@dataclass(frozen=True)
class Dist:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    """Join the process group torchrun set up (if any)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Dist()
    world = int(os.environ["WORLD_SIZE"])
    dist = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", 0)))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return dist


@contextlib.contextmanager
def distributed(device_name: str) -> Iterator[tuple[Dist, torch.device]]:
    """``(dist, device)`` for a run: the device asked for (this process's GPU under torchrun)
    and the process group torchrun set up, destroyed again when the run ends."""
    device = resolve_device(device_name)
    dist = init_distributed(device)
    if dist.enabled and device.type == "cuda":
        device = resolve_device(f"cuda:{dist.local_rank}")
    try:
        yield dist, device
    finally:
        cleanup_distributed()


def make_run_folder(out: str | os.PathLike) -> Path:
    """Create a run folder (and its parents); a :class:`UserError` says why it cannot be."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create run folder {out}: {exc.strerror}") from None
    return out


def summary_writer(log_dir: str | os.PathLike, purge_step: int | None = None) -> Any:
    """TensorBoard's ``SummaryWriter`` for ``log_dir`` whose failed writes are one line naming
    ``log_dir`` (:func:`ssl_ft.errors.writing`: a full disk is a
    :class:`~ssl_ft.errors.DiskFullError`) instead of a traceback. Its background thread's
    error surfaces at the next ``add_*``, ``flush`` or ``close``."""
    from torch.utils.tensorboard import SummaryWriter

    class Writer(SummaryWriter):
        def add_scalar(self, *args: Any, **kwargs: Any) -> None:
            with writing(log_dir):
                super().add_scalar(*args, **kwargs)

        def add_image(self, *args: Any, **kwargs: Any) -> None:
            with writing(log_dir):
                super().add_image(*args, **kwargs)

        def flush(self) -> None:
            with writing(log_dir):
                super().flush()

        def close(self) -> None:
            with writing(log_dir):
                super().close()

    with writing(log_dir):
        return Writer(str(log_dir), purge_step=purge_step)


def check_can_create(path: str | os.PathLike, what: str = "folder") -> Path:
    """Raise a :class:`UserError` now, before any work, if ``path`` (a ``"folder"`` or a
    ``"file"``) could not be created later: a regular file on its way, or a folder where a file
    is asked for. Nothing is created. Returns ``Path(path)``."""
    path = Path(path).expanduser()
    if what == "file" and path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")
    if what == "folder" and path.exists() and not path.is_dir():
        raise UserError(f"cannot create folder {path}: a file of that name exists")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"cannot create {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"cannot create {path}: {parent} is not writable")
            break
    return path


def cleanup_distributed() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` = CUDA (this process's local rank) if available, else CPU."""
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif name == "cuda" and torch.cuda.is_available():
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 matrix kernels natively (AVX512-BF16 or AMX)."""
    cpu = torch.cpu
    return any(getattr(cpu, f, lambda: False)() for f in
               ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def resolve_precision(name: str, device: torch.device, *, cpu_auto: str = "fp32") -> str:
    """``auto`` = bf16 on CUDA GPUs that support it (else fp16); on the CPU ``cpu_auto``, where
    ``"bf16"`` means bf16 only if the CPU has native bf16 kernels (:func:`cpu_has_bf16`)."""
    if name not in ("auto", "fp32", "bf16", "fp16"):
        raise UserError(f"unknown precision {name!r} (use auto, fp32, bf16 or fp16)")
    if name != "auto":
        if name == "fp16" and device.type != "cuda":
            raise UserError("precision 'fp16' needs a CUDA device; use bf16 on the CPU")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_auto == "bf16" and cpu_has_bf16() else "fp32"


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 on CUDA (fp16 gradients underflow without it); a pass-through
    (``enabled=False``) for fp32 and bf16, so the same three calls serve every precision."""
    return torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and precision == "fp16")


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed-precision context for ``bf16``/``fp16``; a no-op for ``fp32``."""
    if precision == "fp32":
        yield
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def available_cores() -> int:
    """The cores this process may use, as a scheduler or user set them: ``OMP_NUM_THREADS``,
    then ``SLURM_CPUS_PER_TASK``, then the process's CPU affinity (``taskset``, cgroups), then
    the machine's core count."""
    for var in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        value = os.environ.get(var, "").strip()
        if value:
            try:
                n = int(value.split(",")[0])
            except ValueError:
                raise UserError(f"{var}={value!r} is not a whole number of threads") from None
            if n < 1:
                raise UserError(f"{var}={value!r} must be >= 1")
            return n
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def set_threads(threads: int | None, dist: Dist) -> int:
    """Intra-op threads: the given number, or :func:`available_cores` shared among the local
    processes (two busy processes with two threads each on two cores run 10-20x slower than
    one, so a default never oversubscribes the cores this process was given)."""
    if threads is None:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world_size))
        threads = max(1, available_cores() // max(1, local))
    if threads < 1:
        raise UserError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    blas_threads(threads)  # NumPy/SciPy's BLAS pool has its own count (the core count)
    return threads


def blas_threads(threads: int) -> Any:
    """Cap the BLAS pools of NumPy and SciPy (scikit-learn's logistic fits run on them) at
    ``threads``; torch's own pool is untouched. Used as a context manager it restores the old
    caps on exit. Measured here (``benchmarks/bench_blas.py``): OpenBLAS's two threads make a
    probe's logistic fits 5.6x slower than one thread, and two such processes on two cores ~24x
    (the fits are many small matrix products, where the threads only wait on each other)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cache_dir(given: str | None = None) -> Path:
    """The project's cache folder (fusion features, pretraining's measured precision choices):
    ``given``, else ``$SSL_FT_CACHE``, else ``~/.cache/ssl_ft``."""
    return Path(given or os.environ.get("SSL_FT_CACHE") or "~/.cache/ssl_ft").expanduser()
