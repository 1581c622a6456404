"""Shared fixtures: where the real offline datasets live."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

if os.environ.get("PYTEST_XDIST_WORKER"):  # one of `-n N`'s test processes: one thread each,
    os.environ["OMP_NUM_THREADS"] = "1"  # also in the tools it starts, so that N processes
    torch.set_num_threads(1)  # never fight over N cores (docs/performance.md: 10-20x slower)


# the tests' own cache (fusion features, pretraining's measured precision choices), never the
# user's ~/.cache/ssl_ft; tests that need a particular folder still set their own
os.environ.setdefault("SSL_FT_CACHE", tempfile.mkdtemp(prefix="ssl_ft_tests_cache_"))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:  # noqa: ARG001 (the hook's)
    """``-n auto`` (the default, pyproject.toml): one test process per core this process may
    use, at most 4 (each holds its own copy of the datasets it reads)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, cores or 1))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared data folder: ``$SSL_FT_DATA`` if set, else ``<repo>/../shared/data``."""
    root = Path(os.environ.get("SSL_FT_DATA") or REPO.parent / "shared" / "data").expanduser()
    if not root.is_dir():
        pytest.skip(
            f"data folder {root} not found; set SSL_FT_DATA to the folder that holds "
            f"pneumoniamnist.npz and the other shared .npz files"
        )
    return root


@pytest.fixture(scope="module")
def pneumonia(data_root: Path):
    """128 PneumoniaMNIST training images, ``(128, 1, 28, 28)`` float in [0, 1]."""
    import numpy as np
    import torch

    path = data_root / "pneumoniamnist.npz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with np.load(path) as npz:
        images = npz["train_images"][:128]
    return torch.from_numpy(images).float().div(255).unsqueeze(1)


def load_tool(name: str):
    """The module of ``tools/<name>.py`` (tools are scripts, not package modules)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_tool", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def tool():
    """``tool("probe")`` loads ``tools/probe.py`` so a test can call its ``main``."""
    return load_tool


def grey_meta(method: str = "simclr", family: str = "contrastive", mean: float = 0.57,
              std: float = 0.16) -> dict:
    """Metadata of a hand-made 1-channel resnet18 checkpoint at 28 px (tests that save a
    backbone of their own with ``save_checkpoint(path, state_dict, grey_meta(...))``)."""
    return {"method": method, "family": family, "arch": "resnet18", "in_chans": 1,
            "image_size": 28, "stem": "standard",
            "normalization": {"mean": [mean], "std": [std], "max_value": 255},
            "recipe": {}, "data_fingerprint": "x", "epoch": 1}


class TwoViews:
    """A deterministic 'augmentation' for the joint-embedding method tests: a horizontal flip, then the image itself, in turn."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x.flip(-1) if self.calls % 2 else x
