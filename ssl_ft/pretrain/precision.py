"""What ``train.precision: auto`` pretrains in on a CPU with native bf16: measured, not assumed.

bf16 autocast pays very differently between CPUs and sizes (``tools/bench.py``, ``limit bf16`` /
``limit fp32``): on one AVX512-BF16 CPU 1.03-1.43x fp32 for a resnet18 at 28 px on 2 threads and
1.4-1.9x at 64 px; on an AMX CPU at 28 px in the channels_last layout it was slower than fp32.
So ``auto`` times a few training steps of the run's own method, on its batch size,
image size, memory format and threads, in fp32 and in bf16 (after a warm-up step of each,
:data:`CHECK_ROUNDS` rounds in the order fp32, bf16, bf16, fp32 so that drift cancels, the
median of the rounds' ratios), and takes bf16 only if it is at least
:data:`BF16_MIN_SPEEDUP` times faster (issue #16's bar: below it the speed does not pay for
the rounding). The method's state is restored afterwards and the random state forked, so the
run itself starts as it would have without the measurement.

The choice is recorded (checkpoint metadata ``precision_auto``, ``summary.json``'s
``runtime``), cached per machine and configuration (``$SSL_FT_CACHE/precision.json``, default
``~/.cache/ssl_ft``: the same recipe on the same machine gets the same precision, measured
once) and kept by a resumed run (the precision in its ``last.pt``). Under DDP every rank
measures (the methods' forward passes may gather across ranks) and all take rank 0's choice. GPUs (bf16 where supported, else fp16) and explicit values are
not measured.
"""

from __future__ import annotations

import copy
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from ssl_ft.runtime import Dist, autocast, cache_dir, cpu_has_bf16, resolve_precision

__all__ = ["BF16_MIN_SPEEDUP", "CHECK_ROUNDS", "auto_precision", "measure_bf16", "train_step"]

BF16_MIN_SPEEDUP = 1.3
#: Rounds of the check (four timed steps each; one before 2026-12-02): the median of three
#: ratios, so that one slow step does not decide. Near the bar it still varies between runs: for
#: SimCLR at 28 px on 2 threads of one AMD CPU, 0.92-1.50x (docs/performance.md, run 5).
CHECK_ROUNDS = 3


def train_step(method: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               device: torch.device, precision: str) -> None:
    """One optimiser step of ``method`` on the batch ``x`` (its forward under ``precision``'s
    autocast, the backward, the step): what this module and ``ssl_ft.benchmark``'s limits time."""
    with autocast(device, precision):
        loss = method(x)["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def measure_bf16(method: torch.nn.Module, batch: int, channels: int, size: int,
                 device: torch.device, rounds: int = CHECK_ROUNDS) -> dict[str, Any]:
    """Images/s of a training step (forward, backward, an SGD step at lr 0) of ``method`` on
    ``batch`` random images, fp32 and bf16: one warm-up step of each, then ``rounds`` rounds
    of four timed steps in the order fp32, bf16, bf16, fp32. ``speedup`` is the median of the
    rounds' bf16 / fp32 ratios (``round_speedups``): one slow step moves it less than it
    moves a ratio of totals. The method's state
    (weights, buffers such as BatchNorm statistics, :meth:`extra_state` such as a MoCo queue),
    gradients, mode and the random state are restored afterwards. (The method itself is timed,
    not a copy: DINO's weight-normalised head cannot be deep-copied.)"""
    saved = {k: v.detach().clone() for k, v in method.state_dict().items()}
    extra = copy.deepcopy(method.extra_state()) if hasattr(method, "extra_state") else None
    was_training = method.training
    method.train()
    with torch.random.fork_rng(devices=[]):
        opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.0)
        x = torch.rand(batch, channels, size, size, device=device)

        def step(precision: str) -> float:
            t0 = time.perf_counter()
            train_step(method, opt, x, device, precision)
            return time.perf_counter() - t0

        per_round: list[dict[str, float]] = []
        try:
            for precision in ("fp32", "bf16"):
                step(precision)  # oneDNN picks and caches its kernels
            for _ in range(max(1, rounds)):
                seconds = {"fp32": 0.0, "bf16": 0.0}
                for precision in ("fp32", "bf16", "bf16", "fp32"):
                    seconds[precision] += step(precision)
                per_round.append(seconds)
        finally:
            method.load_state_dict(saved)
            if extra is not None:
                method.load_extra_state(extra)
            opt.zero_grad(set_to_none=True)
            method.train(was_training)
    n = 2 * batch * len(per_round)
    rate = {f"{p}_images_per_s": n / sum(r[p] for r in per_round) for p in ("fp32", "bf16")}
    ratios = [r["fp32"] / r["bf16"] for r in per_round]
    return {**rate, "speedup": statistics.median(ratios), "round_speedups": ratios}


def _cache_file() -> Path:
    return cache_dir() / "precision.json"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_key(method: torch.nn.Module, batch: int, channels: int, size: int,
               channels_last: bool) -> str:
    parts = [_cpu_name(), f"torch {torch.__version__}", type(method).__name__,
             f"{sum(p.numel() for p in method.parameters())} params", f"batch {batch}",
             f"{channels}x{size}x{size}", f"{torch.get_num_threads()} threads",
             "channels_last" if channels_last else "contiguous",
             f"check of {CHECK_ROUNDS} rounds"]  # records of an older check are not reused
    return " | ".join(parts)


def _cached(key: str) -> dict[str, Any] | None:
    try:
        return json.loads(_cache_file().read_text()).get(key)
    except (OSError, ValueError):
        return None


def _store(key: str, record: dict[str, Any]) -> None:
    """Add ``record`` to the cache, atomically; as a file that is not one of the run's own
    (``run_file=False``), so it stays out of ``tools/killtest.py``'s count of the run's writes."""
    from ssl_ft.checkpoint import write_json
    from ssl_ft.errors import UserError

    path = _cache_file()
    try:
        table = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        table = {}
    try:
        write_json(path, {**table, key: record}, run_file=False)
    except UserError:
        pass  # (a read-only or full home, DiskFullError included: measured again next time)


def auto_precision(name: str, device: torch.device, method: torch.nn.Module, *, batch: int,
                   channels: int, size: int, channels_last: bool, dist: Dist,
                   resumed: tuple[str, dict[str, Any] | None] | None = None
                   ) -> tuple[str, dict[str, Any] | None]:
    """``(precision, record)``: ``name`` resolved (module docstring); ``record`` says how
    (``source``: ``measured`` or ``cache``, the speeds and the bar), None where nothing was
    measured. ``resumed``: the precision and record of the run being resumed, kept as they are
    (so that its files are those of an uninterrupted run; ``source: last.pt`` for a run whose
    checkpoint has no record)."""
    if name != "auto" or device.type != "cpu":
        return resolve_precision(name, device), None
    if not cpu_has_bf16():
        return "fp32", None
    if resumed is not None:
        return resumed[0], resumed[1] or {"source": "last.pt", "choice": resumed[0]}
    key = _cache_key(method, batch, channels, size, channels_last)
    record = _shared(_cached(key) if dist.is_main else None, dist)
    if record is not None:
        return record["choice"], {**record, "source": "cache"}
    # every rank measures: a method's forward may gather across ranks (SimCLR, VICReg)
    record = {**measure_bf16(method, batch, channels, size, device),
              "threshold": BF16_MIN_SPEEDUP, "key": key}
    record["choice"] = "bf16" if record["speedup"] >= BF16_MIN_SPEEDUP else "fp32"
    record = _shared(record, dist)  # rank 0's measurement decides for all
    if dist.is_main:
        _store(key, record)
    return record["choice"], {**record, "source": "measured"}


def _shared(obj: Any, dist: Dist) -> Any:
    """Rank 0's ``obj`` on every rank (itself without DDP)."""
    if not dist.enabled:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
