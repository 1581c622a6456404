"""Throughput benchmarks measured inside one process, contenders alternating so drift cancels.

Pretraining (images/s, an image = one sample of the batch; both views counted once):

* ``limit``: a bare training step of the method's model and loss on tensors already in memory
  and already augmented (the method's ``augment`` replaced by a lookup of pre-made views), in
  fp32 and in bf16 autocast (the fastest precision of a CPU with native bf16);
* ``ssl_ft``: :func:`ssl_ft.pretrain.train_one_epoch` over the engine's ``DataLoader`` of raw
  images with the real :class:`~ssl_ft.augment.BatchAugment`, at pretraining's default precision,
  and the same with a copy of the model in the other memory format (``contiguous``, the layout
  before ``train.channels_last`` became the default);
* ``lightly``: the usual loop of lightly's examples -- ``SimCLRTransform`` / ``MoCoV2Transform``
  on PIL images through a ``DataLoader`` (``num_workers`` 0 and 2) -- into the same model and
  loss, fp32 (restorative methods have no lightly transform: no such row).

Every pretraining row but the ``contiguous`` one runs the model in pretraining's default memory
format (channels_last), the limits included, so each ratio compares like with like.

Fine-tuning (:func:`finetune_epochs`): the real :func:`ssl_ft.finetune.finetune` for each layer
range, with and without the frozen-prefix cache, second-epoch images/s, at fine-tuning's default
precision and (``0-100`` and cached ``75-100``) in bf16; ``lp``: train images per second of its
probe phase (features of train and val, the logistic fits); and a 100-epoch linear head on
cached features against one forward pass over the same images (:func:`probe_vs_forward`).

Peak memory: the largest resident set size sampled (every 5 ms) while each contender ran.

Targets (:func:`targets`, issue #16): the ratios between these numbers that the project aims
for, each computed from a report and marked pass or fail.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import statistics
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["FINETUNE_CONTENDERS", "TARGETS", "RssSampler", "Result", "alternate", "bench_method",
           "finetune_epochs", "own_precision", "pretrain_contenders", "probe_vs_forward", "targets"]


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


def alternate(contenders: dict[str, Callable[..., float]], rounds: int, *,
              warmup: bool = True, warmup_args: Mapping[str, Any] | None = None
              ) -> dict[str, Result]:
    """Run every contender once per round, in a rotated order each round; each call returns
    images/s. With ``warmup`` each contender is first called once, uncounted, as
    ``contender(**warmup_args)`` (``{"steps": 1}`` for the pretraining contenders: one step
    runs every kernel once); without, for contenders that warm up inside each call (a
    fine-tuning run timed on its last epoch)."""
    results = {name: Result(name) for name in contenders}
    sampler = RssSampler()
    names = list(contenders)
    for name in names if warmup else ():
        contenders[name](**(warmup_args or {}))  # allocations, oneDNN kernel selection
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


def bench_method(name: str, images: np.ndarray, size: int, stem: str = "standard"):
    """The benchmark's resnet18 ``name`` method for ``images`` at ``size`` (seeded)."""
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
    from ssl_ft.pretrain.precision import train_step

    device = torch.device("cpu")
    start, count = time.perf_counter(), 0
    for x in batches():
        train_step(method, optimizer, x, device, precision)
        method.after_step(0, 1)
        count += len(x)
    return count / (time.perf_counter() - start)


def _sgd(method: torch.nn.Module) -> torch.optim.Optimizer:
    """The contenders' optimiser: SGD with momentum over the trainable parameters."""
    return torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.01,
                           momentum=0.9)


def pretrain_contenders(method_name: str, images: np.ndarray, *, batch: int, steps: int,
                        precision: str, lightly_workers: tuple[int, ...] = (0, 2),
                        stem: str = "standard", channels_last: bool = True,
                        method: torch.nn.Module | None = None
                        ) -> dict[str, Callable[..., float]]:
    """The pretraining contenders (module docstring) for ``images`` ``(N, C, S, S)`` uint8,
    each a function ``run(steps=steps)`` that trains ``steps`` steps of ``batch`` images and
    returns images/s.
    ``channels_last``: pretraining's memory format (``train.channels_last``, on by default).
    The limits, ``ssl_ft (<precision>)`` and the lightly loops use the method in that format
    (the usual loop gets the same model: only the data path differs); ``ssl_ft (<precision>,
    contiguous)`` / ``(<precision>, channels_last)`` is a second copy in the other format.
    ``method``: the first copy, if already built by :func:`bench_method` and put in that format
    (``tools/bench.py`` builds it to measure ``auto``'s precision on it)."""
    from torch.utils.data import DataLoader, TensorDataset

    from ssl_ft.pretrain.engine import train_one_epoch

    size = images.shape[-1]
    if method is None:
        method = bench_method(method_name, images, size, stem)
        if channels_last:  # as the engine does for train.channels_last: the whole method
            method.to(memory_format=torch.channels_last)
    opt = _sgd(method)
    real_augment = method.augment
    x = torch.from_numpy(images[:batch]).float() / 255
    views = [real_augment(x), real_augment(x)]
    out: dict[str, Callable[..., float]] = {}

    def limit(prec: str) -> Callable[..., float]:
        def run(steps: int = steps) -> float:
            method.augment = _Views(views)
            try:
                return _step_rate(method, opt, lambda: (x for _ in range(steps)), prec)
            finally:
                method.augment = real_augment
        return run

    out["limit fp32"], out["limit bf16"] = limit("fp32"), limit("bf16")
    tensor = torch.from_numpy(images[: batch * steps])
    loader = DataLoader(TensorDataset(tensor), batch_size=batch, shuffle=True, drop_last=True)

    def ssl_ft(m, o) -> Callable[..., float]:
        def run(steps: int = steps) -> float:
            _, stats = train_one_epoch(
                m, m, itertools.islice(loader, steps), o, epoch=0, step=0, total_steps=steps,
                lr_fn=lambda s: 0.01, device=torch.device("cpu"), precision=precision,
                max_value=255, writer=None, show_progress=False)
            return stats["images_per_s"]
        return run

    out[f"ssl_ft ({precision})"] = ssl_ft(method, opt)
    other = bench_method(method_name, images, size, stem)
    if not channels_last:
        other.to(memory_format=torch.channels_last)
    other_opt = _sgd(other)
    out[f"ssl_ft ({precision}, {'contiguous' if channels_last else 'channels_last'})"] = \
        ssl_ft(other, other_opt)
    if method_name in ("simclr", "moco"):
        for workers in lightly_workers:
            out[f"lightly loop, {workers} workers"] = _lightly_loop(
                method, opt, images[: batch * steps], batch, workers)
    return out


def _lightly_loop(method, opt, images: np.ndarray, batch: int, workers: int
                  ) -> Callable[..., float]:
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
    steps = len(loader)

    def run(steps: int = steps) -> float:
        start, count = time.perf_counter(), 0
        batches = iter(loader)
        for views, _ in itertools.islice(batches, steps):
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
        rate = count / (time.perf_counter() - start)
        for _ in batches:  # a short (warm-up) call ends its epoch untimed: persistent workers
            pass           # would otherwise finish its prefetched batches in the next call
        return rate

    return run


#: fine-tuning contenders: name -> (layers, strategy, prefix_cache, precision); ``auto`` is
#: fine-tuning's default precision (fp32 on a CPU). ``0-100`` has nothing frozen to cache.
FINETUNE_CONTENDERS: dict[str, tuple[str, str, str, str]] = {
    "ft 0-100 cache off": ("0-100", "ft", "off", "auto"),
    "ft 0-100 cache off bf16": ("0-100", "ft", "off", "bf16"),
    **{f"ft {layers} cache {'on' if cache == 'auto' else 'off'}": (layers, "ft", cache, "auto")
       for layers in ("25-100", "50-100", "75-100") for cache in ("off", "auto")},
    "ft 75-100 cache on bf16": ("75-100", "ft", "auto", "bf16"),
    "lp (probe phase)": ("0-100", "lp", "auto", "auto"),
    "lp-ft 50-100 cache off": ("50-100", "lp-ft", "off", "auto"),
    "lp-ft 50-100 cache on": ("50-100", "lp-ft", "auto", "auto"),
}


def finetune_epochs(data: str, data_root: str | None, out: str, *, epochs: int = 2,
                    limit: int | None = None, threads: int | None = None,
                    names: Collection[str] | None = None) -> dict[str, Callable[[], float]]:
    """Fine-tuning contenders (:data:`FINETUNE_CONTENDERS`, or those of them in ``names``):
    images/s of the last epoch of a real :func:`ssl_ft.finetune.finetune` run (random-init
    resnet18, ``epochs`` epochs, so each run warms up in its own first epoch); for ``lp``,
    which has no epochs, train images per second of its probe phase (``probe_seconds``)."""
    import json
    import shutil
    from pathlib import Path

    from ssl_ft.config import from_dict
    from ssl_ft.finetune import FinetuneConfig, finetune

    unknown = sorted(set(names or ()) - set(FINETUNE_CONTENDERS))
    if unknown:
        raise ValueError(f"unknown fine-tuning contenders {unknown}; "
                         f"choose from {sorted(FINETUNE_CONTENDERS)}")
    out_dict: dict[str, Callable[[], float]] = {}
    for name, (layers, strategy, cache, precision) in FINETUNE_CONTENDERS.items():
        if names is not None and name not in names:
            continue

        def run(layers=layers, strategy=strategy, cache=cache, precision=precision,
                name=name) -> float:
            folder = Path(out) / name.replace(" ", "_").replace("(", "").replace(")", "")
            shutil.rmtree(folder, ignore_errors=True)
            cfg = from_dict(FinetuneConfig, dict(
                checkpoint="none", arch="resnet18", data=data, data_root=data_root,
                layers=layers, strategy=strategy, epochs=epochs, limit=limit,
                prefix_cache=cache, precision=precision, out=str(folder), threads=threads,
                seed=0))
            finetune(cfg, progress=False)
            rows = [json.loads(r) for r in (folder / "metrics.jsonl").read_text().splitlines()]
            if strategy == "lp":
                n_train = json.loads((folder / "metrics.json").read_text())["n_train"]
                return n_train / float(rows[-1]["probe_seconds"])
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


#: issue #16's targets: (contender ratio, comparison, threshold)
TARGETS: dict[str, tuple[str, float]] = {
    "limit": (">=", 0.90),      # ssl_ft pretraining / the bare step at its own precision
    "lightly": (">=", 1.3),     # ssl_ft pretraining / the fastest usual lightly loop
    "bf16": (">=", 1.3),        # limit bf16 / limit fp32 where bf16 is the default
    "layers": ("<=", 0.35),     # epoch time of cached 75-100 / epoch time of 0-100
    "probe": ("<=", 1.5),       # 100-epoch cached probe / one forward pass
}


def _holds(value: float, op: str, threshold: float) -> bool:
    ops = {">=": value >= threshold, "<=": value <= threshold, "<": value < threshold}
    return bool(ops[op])  # NaN (a contender that did not run) fails every comparison


def own_precision(names: Iterable[str]) -> str | None:
    """The precision of a pretraining section's ``ssl_ft (<precision>)`` row (the one
    pretraining's ``auto`` chose there), None without such a row."""
    found = [m.group(1) for m in map(re.compile(r"ssl_ft \((\w+)\)").fullmatch, names) if m]
    return found[0] if found else None


def targets(report: dict) -> list[dict]:
    """Issue #16's targets computed from a benchmark ``report`` (what ``tools/bench.py --json``
    writes: ``pretrain[config][contender]["images_per_s"]`` with the row ``ssl_ft
    (<precision>)`` at the precision pretraining chose there, ``finetune``,
    ``probe_vs_forward``); one dict per target whose contenders were measured: ``target``
    (what is divided by what), ``value``, ``op``, ``threshold`` and ``pass``.

    * per pretraining configuration: ssl_ft / the limit at ssl_ft's precision >= 0.90; ssl_ft /
      the fastest lightly loop >= 1.3 (contrastive methods only); where bf16 was chosen,
      limit bf16 / limit fp32 >= 1.3 (where fp32 was, < 1.3: bf16 would not have paid);
    * fine-tuning: the cached ``75-100`` epoch <= 0.35 x the ``0-100`` epoch (epoch time, the
      inverse of images/s over the same train images);
    * a 100-epoch probe on cached features <= 1.5 x one forward pass over the same images.

    Whether bf16 costs probe AUC (the rest of issue #16's bf16 target) is not measured here."""
    rows: list[dict] = []

    def add(target: str, value: float, key: str, op: str | None = None) -> None:
        op = op or TARGETS[key][0]
        threshold = TARGETS[key][1]
        rows.append({"target": target, "value": value, "op": op, "threshold": threshold,
                     "pass": _holds(value, op, threshold)})

    for config, res in report.get("pretrain", {}).items():
        rate = {name: float(r["images_per_s"]) for name, r in res.items()}
        precision = own_precision(rate)  # what pretraining's `auto` chose for this configuration
        if precision is None:
            continue
        own = rate[f"ssl_ft ({precision})"]
        if f"limit {precision}" in rate:
            add(f"{config}: ssl_ft ({precision}) / limit {precision}",
                own / rate[f"limit {precision}"], "limit")
        lightly = [v for name, v in rate.items() if name.startswith("lightly loop")]
        if lightly:
            add(f"{config}: ssl_ft ({precision}) / fastest lightly loop", own / max(lightly),
                "lightly")
        if "limit fp32" in rate and "limit bf16" in rate:
            add(f"{config}: {precision} chosen, limit bf16 / limit fp32",
                rate["limit bf16"] / rate["limit fp32"], "bf16",
                None if precision == "bf16" else "<")
    ft = {name: float(r["images_per_s"]) for name, r in report.get("finetune", {}).items()}
    if "ft 0-100 cache off" in ft and "ft 75-100 cache on" in ft:
        add("fine-tuning epoch time: 75-100 cache on / 0-100", ft["ft 0-100 cache off"] /
            ft["ft 75-100 cache on"], "layers")
    probe = report.get("probe_vs_forward")
    if probe:
        add("100-epoch cached probe / one forward pass", float(probe["ratio"]), "probe")
    return rows
