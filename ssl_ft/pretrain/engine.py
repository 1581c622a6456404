"""The pretraining loop: recipe -> data -> backbone -> SSL method -> run folder.

Flat functions in the style of torchvision's ``references/classification/train.py``:
:func:`train_one_epoch`, :func:`evaluate`, :func:`pretrain`. The run folder holds

* ``recipe.yaml``: the resolved recipe;
* ``last.pt``: an ssl_ft checkpoint (backbone + metadata) that also carries the optimiser,
  method heads and queue, written atomically after every epoch; ``--resume`` continues from it;
* ``epoch_NNNN.pt`` every ``train.save_every`` epochs and ``checkpoint.pt`` at the end:
  backbone checkpoints that :mod:`ssl_ft.finetune` reads directly;
* ``tb/``: TensorBoard logs (loss, learning rate, images/s, online kNN/probe AUC and ACC,
  example reconstructions of restorative methods); ``metrics.jsonl``: one line an epoch.

Randomness is re-seeded from ``(seed, epoch)`` at the start of every epoch, so a run killed and
resumed at an epoch boundary repeats the same batches and augmentations as an uninterrupted one.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ssl_ft.augment import BatchAugment
from ssl_ft.checkpoint import load_checkpoint, save_checkpoint, write_json
from ssl_ft.config import from_dict, load_recipe, to_dict
from ssl_ft.data import ArraySplits, DataInfo, subsample
from ssl_ft.data.checks import check_learnable
from ssl_ft.errors import UserError
from ssl_ft.features import extract_features
from ssl_ft.finite import check_state, warn_if_diverging
from ssl_ft.methods import SSLMethod, get_method
from ssl_ft.models import check_input_size, create_backbone
from ssl_ft.pretrain.config import PretrainConfig
from ssl_ft.pretrain.data import PretrainData, WeightedEpochSampler, load_pretrain_data
from ssl_ft.pretrain.evaluate import probe
from ssl_ft.pretrain.precision import auto_precision
from ssl_ft.pretrain.summary import best_epoch, run_summary
from ssl_ft.resume import PRETRAIN_MAY_CHANGE, check_same_recipe, checkpoint_complete
from ssl_ft.runlock import RunLock
from ssl_ft.runtime import (
    Dist,
    autocast,
    distributed,
    grad_scaler,
    seed_everything,
    set_threads,
)
from ssl_ft.scaffold import (
    RunLog,
    build_optimizer,
    ddp,
    decode_history,
    encode_history,
    epoch_loader,
    image_tensor,
    optimizer_step,
    progress_bar,
    refuse_overwrite,
    seed_epoch,
    set_lr,
    show_progress,
    warmup_cosine,
)

__all__ = [
    "build_method", "evaluate", "load_method_state", "load_pretrain_recipe", "method_config",
    "method_state", "pretrain", "resolved_recipe", "train_one_epoch",
]


def load_pretrain_recipe(path: str | os.PathLike | None, overrides: list[str] = ()) -> PretrainConfig:
    """Load and fully validate a pretraining recipe, including its ``method_args``."""
    cfg = load_recipe(path, PretrainConfig, overrides)
    method_config(cfg, where=str(path) if path else "command line")
    return cfg


def method_config(cfg: PretrainConfig, where: str = "recipe") -> Any:
    """The method's own Config dataclass built from ``method_args`` (errors name the key)."""
    cls = get_method(cfg.method)
    return from_dict(cls.Config, cfg.method_args, where=where, prefix="method_args.")


def build_method(cfg: PretrainConfig, data: ArraySplits | DataInfo) -> SSLMethod:
    """Backbone + augmentation + SSL method for images described by ``data`` (its info)."""
    info = data.info if isinstance(data, ArraySplits) else data
    backbone = create_backbone(cfg.model.arch, in_chans=info.n_channels, stem=cfg.model.stem,
                               weights=cfg.model.weights)
    check_input_size(backbone, info.image_size)
    augment = BatchAugment(cfg.augment, info.image_size, info.n_channels)
    cls = get_method(cfg.method)
    return cls(backbone, method_config(cfg), augment=augment, mean=info.mean, std=info.std,
               image_size=info.image_size)


def _optimizer(cfg: PretrainConfig, method: SSLMethod) -> torch.optim.Optimizer:
    t = cfg.train
    return build_optimizer(t.optimizer, [p for p in method.parameters() if p.requires_grad],
                           lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def train_one_epoch(
    model: torch.nn.Module, method: SSLMethod, loader: DataLoader, optimizer: torch.optim.Optimizer,
    *, epoch: int, step: int, total_steps: int, lr_fn, device: torch.device, precision: str,
    max_value: int, writer: Any, show_progress: bool, scaler: torch.amp.GradScaler | None = None,
) -> tuple[int, dict[str, float]]:
    """One pass over ``loader``; returns the global step and the epoch's mean scalars.
    ``scaler``: fp16 loss scaling (:func:`ssl_ft.runtime.grad_scaler`; none for fp32/bf16)."""
    scaler = scaler or grad_scaler(device, precision)
    model.train()
    sums: dict[str, float] = {}
    n_images, start = 0, time.perf_counter()
    bar = progress_bar(loader, epoch, show_progress)
    for (batch,) in bar:
        lr = lr_fn(step)
        set_lr(optimizer, lr)
        x = batch.to(device, non_blocking=True).float() / max_value
        with autocast(device, precision):
            out = model(x)
        loss = out["loss"]
        optimizer_step(loss, optimizer, scaler, method, f"epoch {epoch + 1}, step {step}",
                       before_step=functools.partial(method.before_step, step, total_steps))
        method.after_step(step, total_steps)
        step += 1
        n_images += len(x)
        for key, value in out.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach()) * len(x)
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.3g}")
        if writer is not None and step % 10 == 0:
            writer.add_scalar("train/loss", loss.item(), step)
            writer.add_scalar("train/lr", lr, step)
    elapsed = time.perf_counter() - start
    stats = {k: v / max(1, n_images) for k, v in sums.items()}
    stats["images_per_s"] = n_images / max(elapsed, 1e-9)
    stats["lr"] = lr_fn(max(0, step - 1))
    return step, stats


def evaluate(method: SSLMethod, splits: ArraySplits, cfg: PretrainConfig, device: torch.device,
             precision: str, norm: DataInfo | None = None) -> dict[str, float]:
    """kNN or linear-probe AUC/ACC of the frozen backbone on the validation split of
    ``splits``, with the pretraining input normalisation ``norm`` (default: ``splits``')."""
    info = splits.info
    norm = norm or info
    idx = subsample(splits.labels["train"], limit=cfg.eval.limit, seed=cfg.seed)
    kw = dict(max_value=info.max_value, mean=norm.mean, std=norm.std, device=device,
              precision=precision)
    bank = extract_features(method.backbone, splits.images["train"][idx], **kw)
    query = extract_features(method.backbone, splits.images["val"], **kw)
    res = probe(cfg.eval.method, bank, splits.labels["train"][idx], query, splits.labels["val"],
                task=info.task, num_classes=info.num_classes, k=cfg.eval.k,
                temperature=cfg.eval.temperature)
    return {f"{cfg.eval.method}_auc": res["auc"], f"{cfg.eval.method}_acc": res["acc"]}


def _meta(cfg: PretrainConfig, method: SSLMethod, data: PretrainData, epoch: int,
          precision: str, auto: dict | None = None) -> dict:
    info = data.info
    return {
        "method": cfg.method,
        "family": method.family,
        "arch": cfg.model.arch,
        "in_chans": info.n_channels,
        "image_size": info.image_size,
        "stem": cfg.model.stem,
        "normalization": {"mean": list(info.mean), "std": list(info.std),
                          "max_value": info.max_value},
        "recipe": resolved_recipe(cfg, info),
        "data": info.name,
        "data_fingerprint": info.fingerprint,
        "sources": data.pool.sources,
        "precision": precision,
        "precision_auto": auto,  # how `train.precision: auto` chose (ssl_ft.pretrain.precision)
        "epoch": epoch,
    }


def resolved_recipe(cfg: PretrainConfig, info: DataInfo | None = None) -> dict:
    """The recipe as plain data, with every method argument (and, given the data, every
    augmentation setting) filled in."""
    data = to_dict(cfg)
    data["method_args"] = to_dict(method_config(cfg))
    if info is not None:
        data["augment"] = to_dict(cfg.augment.resolve(info.image_size, info.n_channels))
    return data


def _head_state(method: SSLMethod) -> dict[str, torch.Tensor]:
    return {k: v for k, v in method.state_dict().items() if not k.startswith("backbone.")}


def method_state(method: SSLMethod) -> dict[str, Any]:
    """What ``last.pt`` keeps of a method besides its backbone (``extra`` entries): the heads,
    momentum networks and buffers (``method_state``) and :meth:`~SSLMethod.extra_state`
    (``method_extra``, e.g. a MoCo queue)."""
    return {"method_state": _head_state(method), "method_extra": method.extra_state()}


def load_method_state(method: SSLMethod, backbone: dict[str, torch.Tensor],
                      extra: dict[str, Any]) -> None:
    """Restore a method from a checkpoint's backbone weights and :func:`method_state`."""
    state = dict(extra["method_state"])
    state.update({f"backbone.{k}": v for k, v in backbone.items()})
    method.load_state_dict(state)
    method.load_extra_state(extra.get("method_extra", {}))


def _check_resumable(ckpt_meta: dict, cfg: PretrainConfig, path: Path,
                     info: DataInfo | None = None) -> None:
    """The whole resolved recipe must be the one the run was made with (see ssl_ft.resume)."""
    check_same_recipe(ckpt_meta.get("recipe", {}), resolved_recipe(cfg, info),
                      PRETRAIN_MAY_CHANGE, path)


def pretrain(cfg: PretrainConfig, *, resume: bool = False, progress: bool | None = None) -> Path:
    """Run (or resume) a pretraining recipe; returns the run folder."""
    with distributed(cfg.train.device) as (dist, device), RunLock(cfg.out, enabled=dist.is_main):
        return _pretrain(cfg, dist, device, resume, progress)


def _pretrain(cfg: PretrainConfig, dist: Dist, device: torch.device, resume: bool,
              progress: bool | None) -> Path:
    out = Path(cfg.out)
    refuse_overwrite(out, resume, "out=")
    threads = set_threads(cfg.train.threads, dist)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True)
    seed_everything(cfg.seed)
    data, method = _data_and_method(cfg, device)
    info = data.info
    optimizer = _optimizer(cfg, method)
    tensor = image_tensor(data.images)
    loader, sampler = _loader(cfg, data, tensor, dist, device)
    steps_per_epoch = len(loader)
    total = steps_per_epoch * cfg.train.epochs
    lr_fn = _schedule(cfg, steps_per_epoch)
    start_epoch, step, history, resumed = _resume(cfg, method, optimizer, out / "last.pt",
                                                  resume, dist, device, info)
    precision, auto = auto_precision(
        cfg.train.precision, device, method, batch=loader.batch_size, channels=info.n_channels,
        size=info.image_size, channels_last=cfg.train.channels_last, dist=dist, resumed=resumed)
    how = _why(auto) if resumed is None or cfg.train.precision != "auto" else \
        " (auto: as the run being resumed)"
    model = ddp(method, device) if dist.enabled else method
    if cfg.train.compile:
        # the backbone only, in place (state-dict keys unchanged): the methods' augmentations
        # stay eager, so their random draws are the same as without compilation
        method.backbone.compile()
    log = None
    if dist.is_main:
        log = _open_log(cfg, method, data, out, start_epoch, step, history, precision, auto)
        print(f"pretraining {cfg.method} on {info.name}: {len(tensor)} images "
              f"{info.image_size}px x{info.n_channels}, {cfg.model.arch} "
              f"({cfg.model.stem} stem), {cfg.train.epochs} epochs x {steps_per_epoch} steps, "
              f"device {device}, {precision}{how}, {threads} threads, world "
              f"{dist.world_size}", file=sys.stderr)
    writer = log.writer if log is not None else None
    show = show_progress(dist, progress)
    scoring = cfg.eval.every and data.eval is not None
    if start_epoch == 0 and scoring and dist.is_main:  # the baseline to improve on
        history.append(_baseline(method, data.eval, cfg, device, precision, info, writer))
    for epoch in range(start_epoch, cfg.train.epochs):
        seed_epoch(cfg.seed, epoch, dist.rank)
        sampler.set_epoch(epoch)
        step, stats = train_one_epoch(
            model, method, loader, optimizer, epoch=epoch, step=step, total_steps=total,
            lr_fn=lr_fn, device=device, precision=precision,
            max_value=info.max_value, writer=writer, show_progress=show)
        check_state(method, f"the end of epoch {epoch + 1}")  # before anything is written
        last_epoch = epoch + 1 == cfg.train.epochs
        if scoring and ((epoch + 1) % cfg.eval.every == 0 or last_epoch):
            if dist.is_main:
                stats.update(evaluate(method, data.eval, cfg, device, precision, info))
                _log_images(writer, method, tensor, info.max_value, device, epoch)
            if dist.enabled:
                torch.distributed.barrier()
        stats["epoch"] = epoch + 1
        history.append(stats)
        if dist.is_main:
            _end_of_epoch(cfg, method, optimizer, data, out, epoch + 1, step, history,
                          log, last_epoch, precision, auto)
    if log is not None:
        log.close()
    return out


def _data_and_method(cfg: PretrainConfig, device: torch.device) -> tuple[PretrainData, SSLMethod]:
    """The pretraining pool (checked for labels if the online evaluation needs them) and the
    method built for its images, on ``device``."""
    data = load_pretrain_data(cfg)
    if cfg.eval.every and data.eval is not None:
        check_learnable(data.eval, "the online evaluation needs labels: set eval.every=0")
    method = build_method(cfg, data.info).to(device)
    if cfg.train.channels_last:
        method.to(memory_format=torch.channels_last)
    return data, method


def _baseline(method: SSLMethod, splits: ArraySplits, cfg: PretrainConfig, device: torch.device,
              precision: str, norm: DataInfo, writer: Any) -> dict[str, float]:
    """The epoch-0 row: the online score before any step, logged to TensorBoard and stderr (not
    to metrics.jsonl)."""
    before = evaluate(method, splits, cfg, device, precision, norm)
    for key, value in before.items():
        writer.add_scalar(f"epoch/{key}", value, 0)
    print("epoch 0 (before training)  " + "  ".join(f"{k} {v:.4g}" for k, v in before.items()),
          file=sys.stderr)
    return {**before, "epoch": 0}


def _loader(cfg: PretrainConfig, data: PretrainData, tensor: torch.Tensor, dist: Dist,
            device: torch.device) -> tuple[DataLoader, Any]:
    """This rank's loader: a shuffled shard of the pool, or the pool's weighted sampler."""
    per_rank = max(1, cfg.train.batch_size // dist.world_size)
    if len(tensor) // dist.world_size < per_rank:
        raise UserError(f"train.batch_size {cfg.train.batch_size} is larger than the "
                        f"{len(tensor)} training images of {data.info.name}")
    sampler = None if data.pool.uniform else WeightedEpochSampler(
        data.pool.weights, cfg.seed, dist.rank, dist.world_size)
    return epoch_loader(tensor, batch_size=per_rank, dist=dist, seed=cfg.seed, device=device,
                        sampler=sampler)


def _schedule(cfg: PretrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning rate of a step: ``lr * batch_size / 256`` (the linear scaling rule of
    Goyal et al. 2017), warmed up over ``warmup_epochs``, then a cosine to ``min_lr_ratio``."""
    t = cfg.train
    base, warmup = t.lr * t.batch_size / 256, t.warmup_epochs * steps_per_epoch
    total = steps_per_epoch * t.epochs
    return functools.partial(warmup_cosine, base=base, warmup=warmup, phases=[(warmup, total)],
                             min_ratio=t.min_lr_ratio)


def _resume(cfg: PretrainConfig, method: SSLMethod, optimizer: torch.optim.Optimizer,
            last: Path, resume: bool, dist: Dist, device: torch.device,
            info: DataInfo) -> tuple[int, int, list[dict], tuple | None]:
    """``(start_epoch, step, history, precision)``: from ``last`` when resuming a run that has
    it (``precision``: the one it ran in and how it was chosen; None for a new run)."""
    if resume and last.exists():
        ckpt = load_checkpoint(last, map_location=device)
        _check_resumable(ckpt.meta, cfg, last, info)
        load_method_state(method, ckpt.backbone, ckpt.extra)
        optimizer.load_state_dict(ckpt.extra["optimizer"])
        return (int(ckpt.meta["epoch"]), int(ckpt.extra["step"]),
                decode_history(ckpt.extra.get("history", [])),
                (ckpt.meta.get("precision"), ckpt.meta.get("precision_auto")))
    if resume and dist.is_main:
        print(f"no {last} yet: starting from epoch 1", file=sys.stderr)
    return 0, 0, [], None


def _why(auto: dict | None) -> str:
    """How ``auto`` chose the precision, for the run's first line."""
    if auto is None or "speedup" not in auto:
        return ""
    return (f" (auto: bf16 {auto['speedup']:.2f}x fp32 {'>=' if auto['choice'] == 'bf16' else '<'}"
            f" {auto['threshold']:g}, {auto['source']})")


def _open_log(cfg: PretrainConfig, method: SSLMethod, data: PretrainData, out: Path,
              start_epoch: int, step: int, history: list[dict], precision: str,
              auto: dict | None) -> RunLog:
    # no rows of an epoch cut short by a kill (the epoch-0 score lives in history only)
    log = RunLog(out, resolved_recipe(cfg, data.info),
                 [h for h in history if h.get("epoch", 0) >= 1])
    if start_epoch:  # a kill after last.pt may have cut its snapshot / checkpoint.pt short
        _derived_files(cfg, method, _meta(cfg, method, data, start_epoch, precision, auto), out,
                       start_epoch, history, only_missing=True,
                       extra={"method_state": _head_state(method),
                              "seen_codes": torch.from_numpy(data.pool.codes)})
    log.open_tensorboard(purge_step=step if step else None)
    return log


def _log_images(writer: Any, method: SSLMethod, tensor: torch.Tensor, max_value: int,
                device: torch.device, epoch: int) -> None:
    x = tensor[:8].to(device).float() / max_value
    grid = method.example_images(x)
    if grid is not None and writer is not None:
        import torchvision

        writer.add_image("examples", torchvision.utils.make_grid(grid.cpu(), nrow=8), epoch + 1)


def _end_of_epoch(cfg: PretrainConfig, method: SSLMethod, optimizer: torch.optim.Optimizer,
                  data: PretrainData, out: Path, epoch: int, step: int, history: list[dict],
                  log: RunLog, last_epoch: bool, precision: str, auto: dict | None) -> None:
    warn_if_diverging(history, "loss")
    log.epoch(history[-1], cfg.train.epochs)
    meta = _meta(cfg, method, data, epoch, precision, auto)
    backbone = method.backbone.state_dict()
    state = method_state(method)
    seen = {"seen_codes": torch.from_numpy(data.pool.codes)}
    save_checkpoint(out / "last.pt", backbone, meta, extra={
        **state, "optimizer": optimizer.state_dict(), "step": step,
        "history": encode_history(history), **seen,
    })
    _derived_files(cfg, method, meta, out, epoch, history, only_missing=False,
                   extra={"method_state": state["method_state"], **seen})


def _derived_files(cfg: PretrainConfig, method: SSLMethod, meta: dict, out: Path, epoch: int,
                   history: list[dict], only_missing: bool, extra: dict) -> None:
    """The files made from an epoch's state after last.pt commits it: the epoch_NNNN.pt
    snapshot, best.pt if this epoch scored best so far and, at the end, checkpoint.pt and
    summary.json. A resumed run writes those that a kill cut short (``only_missing``: absent,
    unreadable or of another epoch)."""
    names = [f"epoch_{epoch:04d}.pt"] if cfg.train.save_every and \
        epoch % cfg.train.save_every == 0 else []
    names += ["checkpoint.pt"] if epoch == cfg.train.epochs else []
    best = best_epoch(history, f"{cfg.eval.method}_auc")
    names += ["best.pt"] if best is not None and best["epoch"] == epoch else []
    for name in names:
        if not only_missing or not checkpoint_complete(out / name, epoch):
            save_checkpoint(out / name, method.backbone.state_dict(), meta, extra=extra)
            if name == "checkpoint.pt":
                print(f"wrote {out / 'checkpoint.pt'}", file=sys.stderr)
    if epoch == cfg.train.epochs and not (only_missing and (out / "summary.json").is_file()):
        summary = run_summary(history, f"{cfg.eval.method}_auc")
        # what `train.precision: auto` resolved to, and the memory format (docs/performance.md)
        summary["runtime"] = {"precision": meta["precision"],
                              "precision_auto": meta.get("precision_auto"),
                              "channels_last": cfg.train.channels_last,
                              "compile": cfg.train.compile}
        write_json(out / "summary.json", summary)
        print(summary["text"], file=sys.stderr)
