"""The fine-tuning loop: checkpoint -> select(layers, truncate) -> strategy -> metrics.json.

The run folder (``out``) holds

* ``metrics.json``: validation and test AUC/ACC (MedMNIST conventions) of the model with the
  best validation AUC, per-class metrics, confusion matrices, the selection and the recipe;
  for ``lp`` and ``lp-ft`` also ``probe``: the linear probe fitted before any step (``C``,
  ``n_features``, seconds; :func:`_probe_phase`);
* ``model.pt``: that model (truncated backbone + head), see :func:`~ssl_ft.finetune.load_finetuned`;
* ``last.pt``: model, optimiser and strategy state after the last finished epoch (``--resume``),
  ``best.pt``: the best model so far; both written atomically;
* ``recipe.yaml``, ``metrics.jsonl`` (one line an epoch) and ``tb/`` (TensorBoard).

Randomness is re-seeded from ``(seed, epoch)`` every epoch, so a resumed run repeats the batches
of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from tqdm import tqdm

from ssl_ft.checkpoint import load_checkpoint
from ssl_ft.config import from_dict, load_recipe, to_dict
from ssl_ft.data import ArraySplits, load_data
from ssl_ft.data.checks import check_learnable
from ssl_ft.errors import UserError, writing
from ssl_ft.features import fit_linear_head
from ssl_ft.finetune.config import FinetuneConfig
from ssl_ft.finetune.model import FinetuneModel, build_backbone, save_finetuned
from ssl_ft.finetune.outputs import evaluate, finish, log_epoch, run_meta, save_last
from ssl_ft.finetune.prefix_cache import cacheable_prefix, prefix_activations, prefix_bytes
from ssl_ft.finetune.steps import augment_batch, lr_at, make_measurer, set_trainable, train_mode
from ssl_ft.finetune.strategies import Strategy, get_strategy
from ssl_ft.finite import (
    chance_loss,
    check_gradients,
    check_loss,
    check_state,
    warn_if_diverging,
)
from ssl_ft.leakage import guard_checkpoint
from ssl_ft.models import check_input_size
from ssl_ft.models.depth import DepthMap, Selection
from ssl_ft.resume import check_same_recipe, rewrite_jsonl
from ssl_ft.runlock import RunLock
from ssl_ft.runtime import (
    Dist,
    autocast,
    distributed,
    grad_scaler,
    make_run_folder,
    resolve_precision,
    seed_everything,
    set_threads,
    summary_writer,
)

__all__ = ["Prepared", "evaluate", "finetune", "load_finetune_recipe", "prepare"]

# recipe keys that may change when a run is resumed
_RESUMABLE = {"out", "device", "threads", "precision", "data_root", "download", "prefix_cache",
              "prefix_cache_gb"}


def load_finetune_recipe(path: str | None, overrides: list[str] = ()) -> FinetuneConfig:
    """A validated :class:`FinetuneConfig` from an optional YAML recipe plus ``key=value``s."""
    cfg = load_recipe(path, FinetuneConfig, overrides)
    get_strategy(cfg.strategy)
    return cfg


@dataclass
class Prepared:
    """Everything a run needs before the first step (also what ``--dry-run`` prints)."""

    cfg: FinetuneConfig
    splits: ArraySplits
    model: FinetuneModel
    selection: Selection
    strategy: Strategy
    source: dict[str, Any]
    leakage: dict[str, Any] | None = None
    cache: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def trainable_params(self) -> dict[str, int]:
        """Backbone parameters trained in at least one epoch, head parameters, their sum."""
        units = sorted({i for e in range(self.cfg.epochs)
                        for i in self.strategy.trained_units(e)})
        bb = self.model.backbone
        backbone = sum(p.numel() for i in units for _, p in bb.unit_parameters(bb.units[i]))
        head = sum(p.numel() for p in self.model.head.parameters())
        return {"backbone": backbone, "head": head, "total": backbone + head}

    def describe(self) -> str:
        """The depth-map table plus what the strategy trains."""
        n = self.trainable_params
        lines = [self.selection.table(),
                 f"strategy {self.cfg.strategy}: trains {n['backbone']:,} backbone + "
                 f"{n['head']:,} head = {n['total']:,} parameters "
                 f"({self.splits.info.num_classes} classes)"]
        if self.strategy.fits_probe:
            lines.append("head: first the converged logistic probe of the frozen features (C "
                         f"from {self.strategy.config.c_grid} on val), then "
                         f"{self.strategy.train_epochs()} epochs of optimiser steps")
        if self.cfg.strategy != "ft" and self.strategy.train_epochs():
            per_epoch = [len(self.strategy.trained_units(e)) for e in range(self.cfg.epochs)]
            lines.append(f"trained units per epoch: {per_epoch}")
        return "\n".join(lines)


def prepare(cfg: FinetuneConfig) -> Prepared:
    """Load data, build and truncate the backbone, select units, build the strategy."""
    strategy_cls = get_strategy(cfg.strategy)
    strategy_cfg = from_dict(strategy_cls.Config, cfg.strategy_args, where="strategy_args",
                             prefix="strategy_args.")
    splits = load_data(cfg.data, data_root=cfg.data_root, size=cfg.size, channels=cfg.channels,
                       label_fraction=cfg.label_fraction, limit=cfg.limit, seed=cfg.seed,
                       download=cfg.download)
    check_learnable(splits)
    info = splits.info
    backbone, source = build_backbone(cfg.checkpoint, info, arch=cfg.arch, stem=cfg.stem,
                                      normalization=cfg.normalization)
    depth_map = DepthMap.from_backbone(backbone, cfg.depth_unit)
    selection = depth_map.select(cfg.layers, cfg.truncate,
                                 allow_empty=strategy_cls.allow_empty_selection)
    selection.apply(backbone)
    check_input_size(backbone, info.image_size)
    model = FinetuneModel(backbone, info.num_classes, tuple(source["mean"]),
                          tuple(source["std"]))
    selected = [u.index for u in selection.trained]
    strategy = strategy_cls(model, selected, cfg.epochs, strategy_cfg)
    # after every cheaper check, so that a bad flag is the run's one line of output
    whole = None if cfg.label_fraction == 1 else load_data(
        cfg.data, data_root=cfg.data_root, size=cfg.size, channels=cfg.channels,
        limit=cfg.limit, seed=cfg.seed, download=cfg.download).images["train"]
    leak = guard_checkpoint(cfg.checkpoint, splits.images, target=info.name,
                            allow=cfg.allow_overlap, warn=_warn, own_train=whole)
    return Prepared(cfg, splits, model, selection, strategy, source,
                    leak.as_dict() if leak else None)


def _use_prefix_cache(p: Prepared, model: FinetuneModel, device: torch.device,
                      precision: str) -> bool:
    """Compute the frozen prefix's train/val activations once (:mod:`.prefix_cache`) when
    they apply and fit; the model then starts from them. Returns whether it does."""
    cfg, info = p.cfg, p.splits.info
    if cfg.prefix_cache == "off" or not p.strategy.train_epochs():
        return False
    k = cacheable_prefix(model, p.strategy, cfg.epochs, augment=cfg.augment,
                         freeze_bn=cfg.freeze_bn)
    n_images = sum(len(p.splits.images[s]) for s in ("train", "val"))
    if k == 0 or prefix_bytes(model, k, n_images, info.image_size) > cfg.prefix_cache_gb * 2**30:
        return False
    t0 = time.perf_counter()
    for split in ("train", "val"):
        p.cache[split] = prefix_activations(model, p.splits.images[split], k,
                                            max_value=info.max_value, device=device,
                                            precision=precision)
    model.input_unit = k
    print(f"prefix cache: the {k} frozen units' activations of {n_images} images computed "
          f"once ({time.perf_counter() - t0:.1f} s); training starts at unit {k}", file=sys.stderr)
    return True


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def finetune(cfg: FinetuneConfig, *, resume: bool = False, progress: bool | None = None,
             stop_after: int | None = None) -> Path:
    """Run (or resume) one fine-tuning run; returns the run folder. ``layers: auto`` and
    ``truncate: auto`` are resolved first (:mod:`ssl_ft.auto_layers`). ``stop_after=k`` pauses
    the run after epoch ``k`` (``last.pt`` written, no test evaluation; resume to go on)."""
    from ssl_ft.auto_layers import record_run, resolve_auto

    t0, c0 = time.perf_counter(), time.process_time()
    cfg, auto, resume = resolve_auto(cfg, resume=resume)
    with distributed(cfg.device) as (dist, device), RunLock(cfg.out, enabled=dist.is_main):
        out = _finetune(cfg, dist, device, resume, progress, stop_after)
        if dist.is_main:  # wall/CPU time (chooser included) and the choice, in metrics.json
            record_run(out, auto, time.perf_counter() - t0, time.process_time() - c0)
        return out


def _check_resumable(old: dict[str, Any], cfg: FinetuneConfig, path: Path) -> None:
    check_same_recipe(old, to_dict(cfg), sorted(_RESUMABLE), path)


def _finetune(cfg: FinetuneConfig, dist: Dist, device: torch.device, resume: bool,
              progress: bool | None, stop_after: int | None = None) -> Path:
    out = Path(cfg.out)
    last = out / "last.pt"
    if (out / "metrics.json").exists() and resume:
        if dist.is_main:
            print(f"{out} is finished (metrics.json exists); nothing to do", file=sys.stderr)
        return out
    if last.exists() and not resume:
        raise UserError(f"run folder {out} already holds last.pt; pass --resume to continue it "
                        "or choose another --out")
    precision = resolve_precision(cfg.precision, device)
    threads = set_threads(cfg.threads, dist)
    seed_everything(cfg.seed)
    p = prepare(cfg)
    model, strategy, info = p.model.to(device), p.strategy, p.splits.info
    optimizer = _optimizer(cfg, strategy)
    images = p.splits.images["train"]
    x_all = torch.from_numpy(images.astype(np.int32) if images.dtype == np.uint16 else images)
    scale = info.max_value
    if _use_prefix_cache(p, model, device, precision):
        x_all, scale = p.cache["train"], 1
    y_all = torch.from_numpy(p.splits.labels["train"])
    per_rank = min(max(1, cfg.batch_size // dist.world_size), len(x_all) // dist.world_size)
    if per_rank < 2:
        raise UserError(f"{len(x_all)} training images are too few for {dist.world_size} "
                        "process(es); raise --label-fraction or --limit")
    data = TensorDataset(x_all, y_all)
    sampler = DistributedSampler(data, num_replicas=dist.world_size, rank=dist.rank,
                                 shuffle=True, seed=cfg.seed)
    loader = DataLoader(data, batch_size=per_rank, sampler=sampler, drop_last=True,
                        pin_memory=device.type == "cuda")
    steps = len(loader)
    phases = strategy.phases()

    start_epoch, step, history = 0, 0, []
    best: dict[str, Any] = {"auc": -1.0, "epoch": 0}
    probe: dict[str, Any] | None = None
    if resume and last.exists():
        ckpt = load_checkpoint(last, map_location=device)
        _check_resumable(ckpt.meta.get("recipe", {}), cfg, last)
        model.backbone.load_state_dict(ckpt.backbone)
        model.head.load_state_dict(ckpt.extra["head"])
        optimizer.load_state_dict(ckpt.extra["optimizer"])
        strategy.load_state_dict(ckpt.extra.get("strategy", {}))
        start_epoch, step = int(ckpt.meta["epoch"]), int(ckpt.extra["step"])
        best = dict(ckpt.extra["best"])
        history = [json.loads(h) for h in ckpt.extra.get("history", [])]
        probe = ckpt.extra.get("probe")
    writer = None
    if dist.is_main:
        make_run_folder(out)
        with writing(out / "recipe.yaml"):
            (out / "recipe.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        rewrite_jsonl(out / "metrics.jsonl", history)  # no rows of an epoch cut short by a kill
        writer = summary_writer(out / "tb", purge_step=start_epoch or None)
        n = p.trainable_params
        print(f"fine-tuning {p.source['arch']} from {cfg.checkpoint} on {info.name} "
              f"({len(x_all)} train images, {info.image_size}px): strategy {cfg.strategy}, "
              f"layers {p.selection.layers_str}, truncate {float(p.selection.truncate):g}, "
              f"{n['total']:,} trainable parameters, {strategy.train_epochs()} epochs x "
              f"{steps} steps, "
              f"device {device}, {precision}, {threads} threads, world {dist.world_size}",
              file=sys.stderr)
    show = dist.is_main and (sys.stderr.isatty() if progress is None else progress)
    loss_fn = nn.CrossEntropyLoss()
    scaler = grad_scaler(device, precision)  # fp16 on CUDA only; a pass-through otherwise
    ddp_units: list[int] | None = None
    net: nn.Module = model
    if strategy.fits_probe and probe is None and start_epoch > 0:
        raise UserError(f"cannot resume {last}: it was made before {cfg.strategy} began with a "
                        "converged linear probe (its head has trained without one); start a "
                        "new run in another folder")
    if strategy.fits_probe and probe is None:  # a resumed run has its probe: no refit
        probe, best = _probe_phase(p, out, best, history, optimizer, writer, device, precision,
                                   dist)
    end = strategy.train_epochs()
    stop = end if stop_after is None else min(stop_after, end)
    for epoch in range(start_epoch, stop):
        seed_everything(cfg.seed * 100_003 + epoch * 1_009 + dist.rank)
        sampler.set_epoch(epoch)
        trained = strategy.trained_units(epoch)
        set_trainable(model, trained)
        if dist.enabled and trained != ddp_units:  # DDP tracks a fixed set of parameters
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
            ddp_units = trained
        if strategy.keeps_bn_statistics():  # lp-ft: phase 2 sees the features the probe saw
            train_mode(model, [], freeze_bn=True)
        else:
            train_mode(model, trained, cfg.freeze_bn)
        measure = make_measurer(net, x_all, y_all, loss_fn, cfg.seed, epoch, per_rank,
                                scale, device, precision)
        stats: dict[str, Any] = dict(strategy.on_epoch_start(epoch, optimizer, measure))
        t0, seen, loss_sum = time.perf_counter(), 0, 0.0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=not show,
                   mininterval=2.0, file=sys.stderr)
        for xb, yb in bar:
            lr = lr_at(epoch + (step % steps) / steps, phases, cfg.lr, cfg.warmup_epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            x = xb.to(device, non_blocking=True).float() / scale
            x = augment_batch(x, cfg.augment)
            with autocast(device, precision):
                loss = loss_fn(net(x).float(), yb.to(device))
            extra = strategy.penalty()
            total = loss + extra if extra is not None else loss
            check_loss(total, f"epoch {epoch + 1}, step {step}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.unscale_(optimizer)
            check_gradients(model, f"epoch {epoch + 1}, step {step}")
            scaler.step(optimizer)
            scaler.update()
            step += 1
            seen += len(x)
            loss_sum += float(loss.detach()) * len(x)
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.3g}")
        stats.update({"epoch": epoch + 1, "phase": strategy.phase_name(epoch),
                      "train_loss": loss_sum / max(1, seen), "lr": lr,
                      "images_per_s": seen / max(1e-9, time.perf_counter() - t0),
                      "trained_units": len(trained)})
        check_state(model, f"the end of epoch {epoch + 1}")  # before anything is written
        if dist.is_main:
            best = _end_of_epoch(p, out, stats, best, history, optimizer, step, writer,
                                 device, precision, probe)
        if dist.enabled:
            torch.distributed.barrier()
    if writer is not None:
        writer.close()
    if dist.is_main and stop == end:  # (a paused run is not finished)
        finish(p, out, best, history, device, precision, probe, step)
    return out


def _end_of_epoch(p: Prepared, out: Path, stats: dict[str, Any], best: dict[str, Any],
                  history: list[dict], optimizer: torch.optim.Optimizer, step: int, writer: Any,
                  device: torch.device, precision: str,
                  probe: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate, keep the best model (best.pt), log, and write last.pt; returns the new best."""
    model, epoch = p.model, stats["epoch"]
    val = evaluate(model, p.splits, "val", device, precision, p.cache.get("val"))
    stats.update(val_auc=val["auc"], val_acc=val["acc"])
    score = val["auc"] if math.isfinite(val["auc"]) else val["acc"]  # a one-class val split
    if score > best["auc"]:
        best = {"auc": float(score), "epoch": epoch}
        save_finetuned(out / "best.pt", model, run_meta(p, epoch))
    history.append(stats)
    chance = chance_loss(p.splits.info.num_classes)
    warn_if_diverging(history, "train_loss", chance, f"the chance-level loss {chance:.4g}")
    log_epoch(writer, out, stats, p.cfg.epochs)
    save_last(p, out, epoch, optimizer, step, best, history, probe)
    return best


def _probe_phase(p: Prepared, out: Path, best: dict[str, Any], history: list[dict],
                 optimizer: torch.optim.Optimizer, writer: Any, device: torch.device,
                 precision: str, dist: Dist) -> tuple[dict[str, Any], dict[str, Any]]:
    """Phase 1 of ``lp`` / ``lp-ft`` (Kumar et al., ICLR 2022): the head becomes the converged
    logistic probe of the frozen backbone's features (:func:`~ssl_ft.features.fit_linear_head`),
    logged as epoch 0 and checkpointed before any optimiser step, so that a resumed run loads
    this head instead of fitting it again. For ``lp`` (no epochs follow) it is the best model;
    for ``lp-ft`` model selection is over the fine-tuning epochs only. Returns the probe's
    record and the best so far."""
    model = p.model
    probe = fit_linear_head(model.backbone, model.head, p.splits, mean=p.source["mean"],
                            std=p.source["std"], device=device, precision=precision,
                            c_grid=p.strategy.config.c_grid)
    if not dist.is_main:
        return probe, best
    val = evaluate(model, p.splits, "val", device, precision, p.cache.get("val"))
    stats = {"epoch": 0, "phase": "probe", "C": probe["C"], "n_features": probe["n_features"],
             "probe_seconds": probe["seconds"], "val_auc": val["auc"], "val_acc": val["acc"]}
    if not p.strategy.train_epochs():
        score = val["auc"] if math.isfinite(val["auc"]) else val["acc"]
        best = {"auc": float(score), "epoch": 0}
        save_finetuned(out / "best.pt", model, run_meta(p, 0))
    history.append(stats)
    log_epoch(writer, out, stats, p.strategy.train_epochs())
    save_last(p, out, 0, optimizer, 0, best, history, probe)
    return probe, best


def _optimizer(cfg: FinetuneConfig, strategy: Strategy) -> torch.optim.Optimizer:
    groups = strategy.param_groups(cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.Adam(groups, lr=cfg.lr)
