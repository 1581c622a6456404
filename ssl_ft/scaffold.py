"""The training scaffold that pretraining, fine-tuning and fusion share.

In the manner of torchvision's ``references/classification/utils.py``: small flat helpers that
the three loops (:mod:`ssl_ft.pretrain.engine`, :mod:`ssl_ft.finetune.engine`,
:mod:`ssl_ft.ensemble.engine`) call, so that each piece is written once:

* data: :func:`image_tensor` (raw arrays as tensors), :func:`epoch_loader` (a
  ``DistributedSampler`` loader, one shard a rank, reshuffled by ``set_epoch``);
* randomness: :func:`seed_epoch` re-seeds Python, NumPy and torch from ``(seed, epoch, rank)``
  at the start of every epoch, so a run resumed at an epoch boundary repeats the batches and
  augmentations of an uninterrupted one;
* optimisation: :func:`build_optimizer`, :func:`warmup_cosine` (linear warm-up, then a cosine
  per phase), :func:`set_lr` (times each group's ``lr_scale``), :func:`optimizer_step` (finite
  checks, fp16 loss scaling, a hook before the step), :func:`ddp`;
* model selection: :func:`val_score` (validation AUC, or ACC where AUC is undefined);
* the run folder: :class:`RunLog` (``recipe.yaml``, ``metrics.jsonl``, TensorBoard in ``tb/``
  and the per-epoch line on stderr; a failed write, a full disk included, is one line naming
  the file, :func:`ssl_ft.errors.writing`), :func:`refuse_overwrite`, :func:`encode_history` /
  :func:`decode_history` (the per-epoch rows stored in ``last.pt``), :func:`progress_bar`.

Example (the skeleton of every loop)::

    >>> loader, sampler = epoch_loader(image_tensor(images), batch_size=64, dist=dist,
    ...                                seed=cfg.seed, device=device)
    >>> for epoch in range(start_epoch, epochs):
    ...     seed_epoch(cfg.seed, epoch, dist.rank)
    ...     sampler.set_epoch(epoch)
    ...     for (x,) in progress_bar(loader, epoch, show):
    ...         set_lr(optimizer, warmup_cosine(step, base=lr, warmup=w, phases=[(w, total)]))
    ...         optimizer_step(loss_of(x), optimizer, scaler, model, f"step {step}")
    ...     log.epoch({"epoch": epoch + 1, "val_auc": ...}, epochs)
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler, TensorDataset
from tqdm import tqdm

from ssl_ft.errors import UserError, writing
from ssl_ft.finite import check_gradients, check_loss
from ssl_ft.resume import rewrite_jsonl
from ssl_ft.runtime import Dist, make_run_folder, seed_everything, summary_writer

__all__ = [
    "OPTIMIZERS", "RunLog", "build_optimizer", "ddp", "decode_history", "encode_history",
    "epoch_loader", "image_tensor", "optimizer_step", "progress_bar", "refuse_overwrite",
    "seed_epoch", "set_lr", "show_progress", "val_score", "warmup_cosine",
]

T = TypeVar("T")

#: Optimisers by the names recipes use (each engine's config allows a subset).
OPTIMIZERS = ("sgd", "adam", "adamw", "lars")


# ---- data ----------------------------------------------------------------------------------

def image_tensor(images: np.ndarray) -> torch.Tensor:
    """Raw ``uint8`` / ``uint16`` images as a tensor without a copy where torch can share the
    memory (``uint16`` becomes ``int32``: torch has no arithmetic on ``uint16``)."""
    return torch.from_numpy(images.astype(np.int32) if images.dtype == np.uint16 else images)


def epoch_loader(*tensors: torch.Tensor, batch_size: int, dist: Dist, seed: int,
                 device: torch.device, sampler: Sampler | None = None
                 ) -> tuple[DataLoader, Sampler]:
    """A loader of full batches (``drop_last``) of ``tensors`` and its sampler: by default a
    ``DistributedSampler`` (shuffled from ``seed``, this rank's shard); call
    ``sampler.set_epoch(epoch)`` before each epoch."""
    data = TensorDataset(*tensors)
    if sampler is None:
        sampler = DistributedSampler(data, num_replicas=dist.world_size, rank=dist.rank,
                                     shuffle=True, seed=seed)
    loader = DataLoader(data, batch_size=batch_size, sampler=sampler, drop_last=True,
                        pin_memory=device.type == "cuda")
    return loader, sampler


# ---- randomness ----------------------------------------------------------------------------

def seed_epoch(seed: int, epoch: int, rank: int = 0, *, stride: int = 1_009) -> int:
    """Seed Python, NumPy and torch for one epoch of one rank; returns the seed used,
    ``seed * 100_003 + epoch * stride + rank``. Fusion passes ``stride=1`` (its historical
    series, kept so that its results do not change)."""
    value = seed * 100_003 + epoch * stride + rank
    seed_everything(value)
    return value


# ---- optimisation --------------------------------------------------------------------------

def build_optimizer(name: str, params: Iterable[Any], *, lr: float, momentum: float = 0.9,
                    weight_decay: float | None = None) -> torch.optim.Optimizer:
    """``sgd`` (with ``momentum``), ``adam``, ``adamw`` or ``lars`` (lightly's, with
    ``momentum``) over ``params`` (tensors or parameter groups). ``weight_decay=None`` leaves
    it to the groups (or the optimiser's default). Adam and AdamW use torch's fused kernel
    where it takes the parameters (float tensors on the CPU or a GPU): one kernel for all
    tensors, 2.7x the for-loop step on resnet18 and 9x on its layer4 here
    (benchmarks/bench_optimizer.py); the same update up to float rounding."""
    kw = {} if weight_decay is None else {"weight_decay": weight_decay}
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, **kw)
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        params = [{**g, "params": _tensors(g["params"])} if isinstance(g, dict) else g
                  for g in params]
        if _fusable(params):
            try:
                return cls(params, lr=lr, fused=True, **kw)
            except (RuntimeError, ValueError):  # torch < 2.4 has no fused CPU kernel
                pass
        return cls(params, lr=lr, **kw)
    if name == "lars":
        from lightly.utils.lars import LARS

        return LARS(params, lr=lr, momentum=momentum, **kw)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def _tensors(params: Any) -> list[torch.Tensor]:
    return [params] if isinstance(params, torch.Tensor) else list(params)


def _fusable(params: list[Any]) -> bool:
    """Whether torch's fused Adam takes these tensors or parameter groups."""
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    return bool(tensors) and all(
        t.is_floating_point() and t.device.type in ("cpu", "cuda") for t in tensors)


def warmup_cosine(t: float, *, base: float, warmup: float, phases: Sequence[tuple[float, float]],
                  min_ratio: float = 0.0, warmup_offset: float = 1.0) -> float:
    """The learning rate at time ``t`` (steps or fractional epochs, as the caller counts).

    ``base * (t + warmup_offset) / warmup`` while ``t < warmup`` (linear warm-up); then, inside
    the phase ``start <= t < end`` that holds ``t``, a half cosine from ``base`` down to
    ``base * min_ratio`` that restarts at each phase (SGDR, Loshchilov & Hutter, ICLR 2017, as
    gradual unfreezing uses it); ``base * min_ratio`` after the last phase.

    Pretraining counts steps (``warmup_offset=1``: the first step already has ``base /
    warmup``), fine-tuning and fusion count epochs (``warmup_offset=1e-3``).

        >>> warmup_cosine(5, base=1.0, warmup=0, phases=[(0, 10)])
        0.5
    """
    if t < warmup:
        return base * (t + warmup_offset) / warmup
    for start, end in phases:
        if start <= t < end:
            frac = (t - start) / (end - start)
            return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))
    return base * min_ratio


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group's learning rate: ``lr`` times its ``lr_scale`` (1 where it has none)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler, model: nn.Module, where: str,
                   before_step: Callable[[], None] | None = None) -> None:
    """One step on ``loss``: stop on a non-finite loss or gradient of ``model``
    (:mod:`ssl_ft.finite`, naming ``where``), backward through ``scaler`` (fp16 loss scaling;
    a pass-through otherwise, :func:`ssl_ft.runtime.grad_scaler`), then ``before_step()`` on
    the true (unscaled) gradients, then the step."""
    check_loss(loss, where)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # before the checks and the hook: true gradients
    check_gradients(model, where)
    if before_step is not None:
        before_step()
    scaler.step(optimizer)
    scaler.update()


def ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` wrapped in ``DistributedDataParallel`` on ``device`` (torchrun runs)."""
    return nn.parallel.DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None)


# ---- model selection -----------------------------------------------------------------------

def val_score(metrics: Mapping[str, float]) -> float:
    """What model selection maximises: the validation AUC, or the ACC where the AUC is not
    defined (a validation split with one class)."""
    return float(metrics["auc"] if math.isfinite(metrics["auc"]) else metrics["acc"])


# ---- the run folder ------------------------------------------------------------------------

def refuse_overwrite(out: Path, resume: bool, another: str) -> None:
    """A :class:`UserError` if ``out`` holds ``last.pt`` and the run was not asked to resume
    (``another``: how the user names another folder, ``out=`` or ``--out``)."""
    if (out / "last.pt").exists() and not resume:
        raise UserError(f"run folder {out} already holds last.pt; pass --resume to continue it "
                        f"or choose another {another}")


def encode_history(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per-epoch rows as JSON strings, as ``last.pt`` stores them (weights-only safe)."""
    return [json.dumps(dict(row)) for row in history]


def decode_history(rows: Sequence[str]) -> list[dict[str, Any]]:
    """The rows :func:`encode_history` wrote."""
    return [json.loads(row) for row in rows]


def show_progress(dist: Dist, progress: bool | None) -> bool:
    """Whether this process draws progress bars: rank 0, when asked or stderr is a terminal."""
    return dist.is_main and (sys.stderr.isatty() if progress is None else progress)


def progress_bar(loader: Iterable[T], epoch: int, show: bool) -> tqdm:
    """A tqdm bar over one epoch's batches on stderr (gone when the epoch ends)."""
    return tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=not show,
                mininterval=2.0, file=sys.stderr)


class RunLog:
    """The logs of a run folder, written by rank 0.

    Creating it makes the folder, writes ``recipe.yaml`` (the resolved recipe) and rewrites
    ``metrics.jsonl`` from ``history`` (the rows stored in ``last.pt``: none of an epoch that a
    kill cut short). :meth:`open_tensorboard` starts ``tb/``; :meth:`epoch` logs one epoch's
    row to TensorBoard (``epoch/<key>``), ``metrics.jsonl`` and stderr.

    Example:
        >>> log = RunLog("runs/r1", to_dict(cfg), history)
        >>> log.open_tensorboard(purge_step=start_epoch or None)
        >>> log.epoch({"epoch": 1, "train_loss": 0.41, "val_auc": 0.93}, epochs=10)
        epoch 1/10  train_loss 0.41  val_auc 0.93
    """

    def __init__(self, out: str | os.PathLike, recipe: Mapping[str, Any],
                 history: Sequence[Mapping[str, Any]] = ()) -> None:
        self.out = make_run_folder(out)
        with writing(self.out / "recipe.yaml"):
            (self.out / "recipe.yaml").write_text(yaml.safe_dump(dict(recipe), sort_keys=False))
        rewrite_jsonl(self.out / "metrics.jsonl", history)
        self.writer: Any = None

    def open_tensorboard(self, purge_step: int | None = None) -> None:
        """Open ``tb/`` (:func:`ssl_ft.runtime.summary_writer`: a failed write is one line);
        ``purge_step``: a resumed run drops the events logged after it."""
        self.writer = summary_writer(self.out / "tb", purge_step=purge_step)

    def epoch(self, stats: Mapping[str, Any], epochs: int) -> None:
        """One epoch's row (``stats["epoch"]`` is its number): its numbers to TensorBoard, the
        row to ``metrics.jsonl``, and ``epoch E/epochs  key value ...`` on stderr."""
        for key, value in stats.items():
            if isinstance(value, int | float) and key != "epoch" and self.writer is not None:
                self.writer.add_scalar(f"epoch/{key}", value, stats["epoch"])
        with writing(self.out / "metrics.jsonl"), (self.out / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps(dict(stats)) + "\n")
        shown = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in stats.items() if k != "epoch")
        print(f"epoch {stats['epoch']}/{epochs}  {shown}", file=sys.stderr)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
