"""Threads, precision and loss scaling: what a run picks on this machine and under a scheduler."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from ssl_ft.errors import UserError
from ssl_ft.runtime import (
    Dist,
    available_cores,
    cpu_has_bf16,
    grad_scaler,
    resolve_precision,
    set_threads,
)


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_available_cores_order_omp_then_slurm_then_affinity(clean_env):
    assert available_cores() == len(os.sched_getaffinity(0))
    clean_env.setenv("SLURM_CPUS_PER_TASK", "3")
    assert available_cores() == 3
    clean_env.setenv("OMP_NUM_THREADS", "1")
    assert available_cores() == 1
    clean_env.setenv("OMP_NUM_THREADS", "four")
    with pytest.raises(UserError, match="OMP_NUM_THREADS='four'"):
        available_cores()


def test_set_threads_shares_the_cores_among_local_processes(clean_env):
    before = torch.get_num_threads()
    try:
        clean_env.setenv("SLURM_CPUS_PER_TASK", "4")
        assert set_threads(None, Dist()) == 4 and torch.get_num_threads() == 4
        assert set_threads(None, Dist(rank=0, world_size=2)) == 2
        clean_env.setenv("LOCAL_WORLD_SIZE", "8")
        assert set_threads(None, Dist(rank=0, world_size=8)) == 1
        assert set_threads(3, Dist()) == 3
        with pytest.raises(UserError, match="threads must be >= 1"):
            set_threads(0, Dist())
    finally:
        torch.set_num_threads(before)


def test_cpu_affinity_bounds_the_default_threads():
    """A process pinned to one core (taskset) defaults to one thread, not the core count."""
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from ssl_ft.runtime import set_threads, Dist; print(set_threads(None, Dist()))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",
                                                           "SLURM_CPUS_PER_TASK")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "1", out.stderr


def test_precision_auto_and_explicit():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("auto", cpu, cpu_auto="bf16") == ("bf16" if cpu_has_bf16()
                                                               else "fp32")
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(UserError, match="'fp16' needs a CUDA device"):
        resolve_precision("fp16", cpu)
    with pytest.raises(UserError, match="unknown precision 'half'"):
        resolve_precision("half", cpu)


def test_grad_scaler_is_a_pass_through_off_cuda_fp16():
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = torch.optim.SGD([w], lr=0.5)
    scaler = grad_scaler(torch.device("cpu"), "bf16")
    assert not scaler.is_enabled()
    scaler.scale((w * 2).sum()).backward()
    scaler.step(opt)
    scaler.update()
    assert w.item() == pytest.approx(0.0)   # 1 - 0.5 * 2: the plain SGD step


def _blas_threads() -> set[int]:
    from threadpoolctl import threadpool_info

    return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}


def test_set_threads_caps_the_blas_pool_too():
    """NumPy/SciPy's OpenBLAS starts with one thread per core whatever torch is told: two
    workers with threads=1 each then still ran two BLAS threads each (a probe's fits ~20x
    slower, benchmarks/bench_blas.py). In a child: the cap is process-wide."""
    code = ("import torch; from threadpoolctl import threadpool_info; "
            "from ssl_ft.runtime import set_threads, Dist; set_threads(1, Dist()); "
            "print(sorted({p['num_threads'] for p in threadpool_info() "
            "if p['user_api'] == 'blas'}), torch.get_num_threads())")
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["[1]", "1"], out.stderr


def test_probe_fits_run_on_one_blas_thread_and_restore_the_cap(monkeypatch):
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from ssl_ft.features import fit_probe
    from ssl_ft.runtime import blas_threads

    seen: list[set[int]] = []
    real_fit = LogisticRegression.fit

    def fit(self, x, y):
        seen.append(_blas_threads())
        return real_fit(self, x, y)

    monkeypatch.setattr(LogisticRegression, "fit", fit)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 4)), np.arange(60) % 2
    with blas_threads(2):
        before = _blas_threads()
        fit_probe(x, y, x, y, task="binary-class", num_classes=2, c_grid=(0.1, 1.0))
        assert _blas_threads() == before  # the caller's cap is back
    assert seen == [{1}, {1}]
