"""Throughput benchmarks measured inside one process, contenders alternating so drift cancels.

Pretraining (images/s, an image = one sample of the batch; both views counted once):

* ``limit``: a bare training step of the method's model and loss on tensors already in memory
  and already augmented (the method's ``augment`` replaced by a lookup of pre-made views), in
  fp32 and in bf16 autocast (the fastest precision of a CPU with native bf16);
* ``ssl_ft``: :func:`ssl_ft.pretrain.train_one_epoch` over the engine's ``DataLoader`` of raw
  images with the real :class:`~ssl_ft.augment.BatchAugment`, at pretraining's default precision;
* ``lightly``: the usual loop of lightly's examples -- ``SimCLRTransform`` / ``MoCoV2Transform``
  on PIL images through a ``DataLoader`` (``num_workers`` 0 and 2) -- into the same model and
  loss, fp32 (restorative methods have no lightly transform: no such row).

Fine-tuning (:func:`finetune_epochs`): the real :func:`ssl_ft.finetune.finetune` for each layer
range and ``lp``, with and without the frozen-prefix cache, second-epoch images/s; and a
100-epoch linear head on cached features against one forward pass over the same images.

Peak memory: the largest resident set size sampled (every 5 ms) while each contender ran.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["RssSampler", "Result", "alternate", "finetune_epochs", "pretrain_contenders",
           "probe_vs_forward"]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """``with sampler.measure() as peak:`` -- ``peak[0]`` is the largest RSS (bytes) seen."""

    @contextlib.contextmanager
    def measure(self) -> Iterator[list[int]]:
        peak, stop = [_rss_bytes()], threading.Event()

        def run() -> None:
            while not stop.wait(0.005):
                peak[0] = max(peak[0], _rss_bytes())

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield peak
        finally:
            stop.set()
            thread.join()
            peak[0] = max(peak[0], _rss_bytes())


@dataclass
class Result:
    """One contender: images/s of every round, and its peak RSS."""

    name: str
    rates: list[float] = field(default_factory=list)
    peak_rss: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.rates else float("nan")

    def as_dict(self) -> dict:
        return {"name": self.name, "images_per_s": self.median, "rounds": self.rates,
                "peak_rss_mb": self.peak_rss / 2**20}


def alternate(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, Result]:
    """Run every contender once per round, in a rotated order each round; each call returns
    images/s. The first call of each is a warm-up and is not counted."""
    results = {name: Result(name) for name in contenders}
    sampler = RssSampler()
    names = list(contenders)
    for name in names:
        contenders[name]()  # warm-up (allocations, oneDNN kernel selection)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            with sampler.measure() as peak:
                results[name].rates.append(contenders[name]())
            results[name].peak_rss = max(results[name].peak_rss, peak[0])
    return results


class _Views(torch.nn.Module):
    """Stands in for a method's ``augment``: returns pre-made views in turn."""

    def __init__(self, views: list[torch.Tensor]) -> None:
        super().__init__()
        self.views, self.i = views, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.views[self.i % len(self.views)]
        self.i += 1
        return v


def _method(name: str, images: np.ndarray, size: int, stem: str = "standard"):
    from ssl_ft.augment import BatchAugment
    from ssl_ft.methods import get_method
    from ssl_ft.models import create_backbone

    torch.manual_seed(0)
    cls = get_method(name)
    backbone = create_backbone("resnet18", in_chans=images.shape[1], stem=stem)
    aug = BatchAugment(None, size, images.shape[1])
    x = torch.from_numpy(images).float() / 255
    mean, std = [float(x.mean())] * images.shape[1], [float(x.std())] * images.shape[1]
    return cls(backbone, cls.Config(), augment=aug, mean=mean, std=std, image_size=size)


def _step_rate(method, optimizer, batches: Callable[[], Iterator[torch.Tensor]],
               precision: str) -> float:
    from ssl_ft.runtime import autocast

    device = torch.device("cpu")
    start, count = time.perf_counter(), 0
    for x in batches():
        with autocast(device, precision):
            loss = method(x)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.after_step(0, 1)
        count += len(x)
    return count / (time.perf_counter() - start)


def pretrain_contenders(method_name: str, images: np.ndarray, *, batch: int, steps: int,
                        precision: str, lightly_workers: tuple[int, ...] = (0, 2),
                        stem: str = "standard") -> dict[str, Callable[[], float]]:
    """The pretraining contenders (module docstring) for ``images`` ``(N, C, S, S)`` uint8,
    each a function that runs ``steps`` steps of ``batch`` images and returns images/s."""
    from torch.utils.data import DataLoader, TensorDataset

    from ssl_ft.pretrain.engine import train_one_epoch

    size = images.shape[-1]
    method = _method(method_name, images, size, stem)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.01,
                          momentum=0.9)
    real_augment = method.augment
    x = torch.from_numpy(images[:batch]).float() / 255
    views = [real_augment(x), real_augment(x)]
    out: dict[str, Callable[[], float]] = {}

    def limit(prec: str) -> Callable[[], float]:
        def run() -> float:
            method.augment = _Views(views)
            try:
                return _step_rate(method, opt, lambda: (x for _ in range(steps)), prec)
            finally:
                method.augment = real_augment
        return run

    out["limit fp32"], out["limit bf16"] = limit("fp32"), limit("bf16")
    tensor = torch.from_numpy(images[: batch * steps])
    loader = DataLoader(TensorDataset(tensor), batch_size=batch, shuffle=True, drop_last=True)

    def ssl_ft() -> float:
        _, stats = train_one_epoch(
            method, method, loader, opt, epoch=0, step=0, total_steps=steps,
            lr_fn=lambda s: 0.01, device=torch.device("cpu"), precision=precision,
            max_value=255, writer=None, show_progress=False)
        return stats["images_per_s"]

    out[f"ssl_ft ({precision})"] = ssl_ft
    if method_name in ("simclr", "moco"):
        for workers in lightly_workers:
            out[f"lightly loop, {workers} workers"] = _lightly_loop(
                method, opt, images[: batch * steps], batch, workers)
    return out


def _lightly_loop(method, opt, images: np.ndarray, batch: int, workers: int
                  ) -> Callable[[], float]:
    from lightly.transforms import MoCoV2Transform, SimCLRTransform
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    size, grey = images.shape[-1], images.shape[1] == 1
    cls = SimCLRTransform if method.name == "simclr" else MoCoV2Transform
    # the same intensity jitter as ssl_ft's grey preset; lightly normalises nothing here because
    # the method normalises its inputs itself (the same work on both paths)
    transform = cls(input_size=size, cj_bright=0.4, cj_contrast=0.4,
                    cj_sat=0.0 if grey else 0.4, cj_hue=0.0 if grey else 0.1,
                    random_gray_scale=0.0 if grey else 0.2, min_scale=0.35, gaussian_blur=0.2,
                    sigmas=(0.1, 0.5), rr_prob=1.0, rr_degrees=10, normalize=None)

    class Pil(Dataset):
        def __len__(self) -> int:
            return len(images)

        def __getitem__(self, i: int):
            arr = images[i, 0] if grey else images[i].transpose(1, 2, 0)
            return transform(Image.fromarray(arr)), 0

    loader = DataLoader(Pil(), batch_size=batch, shuffle=True, drop_last=True,
                        num_workers=workers, persistent_workers=workers > 0)
    real_augment = method.augment

    def run() -> float:
        start, count = time.perf_counter(), 0
        for views, _ in loader:
            method.augment = _Views(list(views))
            try:
                loss = method(views[0])["loss"]
            finally:
                method.augment = real_augment
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            method.after_step(0, 1)
            count += len(views[0])
        return count / (time.perf_counter() - start)

    return run


def finetune_epochs(data: str, data_root: str | None, out: str, *, epochs: int = 2,
                    limit: int | None = None, threads: int | None = None
                    ) -> dict[str, Callable[[], float]]:
    """Fine-tuning contenders: layer ranges and ``lp``, cache on/off; images/s of the last
    epoch of a real :func:`ssl_ft.finetune.finetune` run (random-init resnet18)."""
    import json
    import shutil
    from pathlib import Path

    from ssl_ft.config import from_dict
    from ssl_ft.finetune import FinetuneConfig, finetune

    out_dict: dict[str, Callable[[], float]] = {}
    for layers, strategy in [("0-100", "ft"), ("25-100", "ft"), ("50-100", "ft"),
                             ("75-100", "ft"), ("50-100", "lp-ft")]:
        for cache in ("off", "auto"):
            if layers == "0-100" and strategy == "ft" and cache == "auto":
                continue  # nothing frozen: nothing to cache
            name = f"{strategy} {layers} cache {'on' if cache == 'auto' else 'off'}"

            def run(layers=layers, strategy=strategy, cache=cache, name=name) -> float:
                folder = Path(out) / name.replace(" ", "_")
                shutil.rmtree(folder, ignore_errors=True)
                cfg = from_dict(FinetuneConfig, dict(
                    checkpoint="none", arch="resnet18", data=data, data_root=data_root,
                    layers=layers, strategy=strategy, epochs=epochs, limit=limit,
                    prefix_cache=cache, out=str(folder), threads=threads, seed=0))
                finetune(cfg, progress=False)
                text = (folder / "metrics.jsonl").read_text()
                rows = [json.loads(r) for r in text.splitlines()]
                return float(rows[-1]["images_per_s"])

            out_dict[name] = run
    return out_dict


def probe_vs_forward(images: np.ndarray, labels: np.ndarray, *, epochs: int = 100,
                     batch: int = 128) -> dict[str, float]:
    """Seconds of one forward pass of a resnet18 over ``images`` (the features a cached probe
    needs) against ``epochs`` epochs of a linear head trained on those cached features."""
    from ssl_ft.models import create_backbone

    torch.manual_seed(0)
    backbone = create_backbone("resnet18", in_chans=images.shape[1]).eval()
    x = torch.from_numpy(images).float() / 255
    t0 = time.perf_counter()
    with torch.no_grad():
        feats = torch.cat([backbone(x[i:i + 256]) for i in range(0, len(x), 256)])
    forward = time.perf_counter() - t0
    y = torch.from_numpy(labels.astype(np.int64))
    head = torch.nn.Linear(feats.shape[1], int(y.max()) + 1)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(feats)).split(batch):
            loss = torch.nn.functional.cross_entropy(head(feats[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    probe = time.perf_counter() - t0
    return {"forward_s": forward, "probe_s": probe, "ratio": probe / forward}
