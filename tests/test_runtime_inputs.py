"""ssl_ft.runtime and ssl_ft.finetune.steps paths the end-to-end tests do not reach: bad
device/precision/thread settings, thread counts from the environment, batch augmentation (the
learning-rate schedule is tested in test_scaffold.py)."""

from __future__ import annotations

import os

import pytest
import torch

from ssl_ft.errors import UserError
from ssl_ft.finetune.steps import augment_batch
from ssl_ft.runtime import (
    Dist,
    autocast,
    available_cores,
    resolve_device,
    resolve_precision,
    set_threads,
)


def test_devices_and_precisions():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="device 'cuda:1' asked for, but CUDA is not"):
            resolve_device("cuda:1")
        assert resolve_device("auto") == torch.device("cpu")
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(UserError, match="unknown precision 'half'"):
        resolve_precision("half", cpu)
    with pytest.raises(UserError, match="'fp16' needs a CUDA device"):
        resolve_precision("fp16", cpu)
    a = torch.ones(2, 2)
    with autocast(cpu, "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    with autocast(cpu, "fp32"):
        assert (a @ a).dtype == torch.float32


def test_thread_counts_from_the_environment(monkeypatch):
    threads = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "3,1")  # nested OpenMP levels: the first counts
        assert available_cores() == 3
        monkeypatch.setenv("OMP_NUM_THREADS", "")
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
        assert available_cores() == 2
        monkeypatch.delenv("SLURM_CPUS_PER_TASK")
        assert available_cores() == len(os.sched_getaffinity(0))
        for bad, word in (("x", "is not a whole number"), ("0", "must be >= 1")):
            monkeypatch.setenv("OMP_NUM_THREADS", bad)
            with pytest.raises(UserError, match=f"OMP_NUM_THREADS='{bad}' {word}"):
                available_cores()
        monkeypatch.setenv("OMP_NUM_THREADS", "4")
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert set_threads(None, Dist()) == 2  # 4 cores shared by 2 local processes
        assert torch.get_num_threads() == 2
        with pytest.raises(UserError, match="threads must be >= 1, got 0"):
            set_threads(0, Dist())
    finally:
        torch.set_num_threads(threads)


def test_flip_and_crop_flip_augmentation():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 16, 16)
    assert augment_batch(x, "none") is x
    flipped = augment_batch(x, "flip")
    same = [torch.equal(f, o) for f, o in zip(flipped, x, strict=True)]
    mirrored = [torch.equal(f, o.flip(-1)) for f, o in zip(flipped, x, strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 16 < sum(mirrored) < 48  # about half
    shifted = augment_batch(x, "crop-flip")
    assert shifted.shape == x.shape
    # one shift of at most 16 // 8 = 2 pixels for the whole batch: the centre 12 x 12 of every
    # image (or its mirror) reappears somewhere within 2 pixels
    found = None
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            ok = all(torch.equal(s[:, 2 + dy:14 + dy, 2 + dx:14 + dx], o[:, 2:14, 2:14]) or
                     torch.equal(s[:, 2 + dy:14 + dy, 2 + dx:14 + dx], o.flip(-1)[:, 2:14, 2:14])
                     for s, o in zip(shifted, x, strict=True))
            found = found or ok
    assert found
