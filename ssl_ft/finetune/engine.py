"""The fine-tuning loop: checkpoint -> select(layers, truncate) -> strategy -> metrics.json.

The run folder (``out``) holds

* ``metrics.json``: validation and test AUC/ACC (MedMNIST conventions) of the model with the
  best validation AUC, per-class metrics, confusion matrices, the selection and the recipe;
  for ``lp`` and ``lp-ft`` also ``probe``: the linear probe fitted before any step (``C``,
  ``n_features``, seconds; :func:`_probe_phase`);
* ``model.pt``: that model (truncated backbone + head), see :func:`~ssl_ft.finetune.load_finetuned`;
* ``last.pt``: model, optimiser and strategy state after a finished epoch (``--resume``),
  ``best.pt``: the best model up to it; both written atomically, together, every
  ``checkpoint_every_s`` seconds and when the run ends or pauses (:class:`Cadence`);
* ``recipe.yaml``, ``metrics.jsonl`` (one line an epoch) and ``tb/`` (TensorBoard).

Randomness is re-seeded from ``(seed, epoch)`` every epoch, so a resumed run repeats the batches
of an uninterrupted one.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ssl_ft.checkpoint import load_checkpoint
from ssl_ft.config import load_recipe, to_dict
from ssl_ft.data import ArraySplits
from ssl_ft.errors import UserError
from ssl_ft.features import fit_linear_head
from ssl_ft.finetune.config import FinetuneConfig
from ssl_ft.finetune.model import FinetuneModel, save_finetuned
from ssl_ft.finetune.outputs import Cadence, evaluate, finish, run_meta, save_last
from ssl_ft.finetune.prepare import Prepared, prepare, use_prefix_cache
from ssl_ft.finetune.steps import augment_batch, make_measurer, set_trainable, train_mode
from ssl_ft.finetune.strategies import Strategy, get_strategy
from ssl_ft.finite import chance_loss, check_state, warn_if_diverging
from ssl_ft.profile import phase, profiling
from ssl_ft.resume import check_same_recipe
from ssl_ft.runlock import RunLock
from ssl_ft.runtime import (
    Dist,
    autocast,
    distributed,
    grad_scaler,
    resolve_precision,
    seed_everything,
    set_threads,
)
from ssl_ft.scaffold import (
    RunLog,
    build_optimizer,
    ddp,
    decode_history,
    epoch_loader,
    image_tensor,
    optimizer_step,
    progress_bar,
    refuse_overwrite,
    seed_epoch,
    set_lr,
    show_progress,
    val_score,
    warmup_cosine,
)

__all__ = ["Prepared", "Run", "evaluate", "finetune", "load_finetune_recipe", "prepare",
           "train_one_epoch"]

# recipe keys that may change when a run is resumed
_RESUMABLE = {"out", "device", "threads", "precision", "data_root", "download", "prefix_cache",
              "prefix_cache_gb", "checkpoint_every_s"}


def load_finetune_recipe(path: str | None, overrides: list[str] = ()) -> FinetuneConfig:
    """A validated :class:`FinetuneConfig` from an optional YAML recipe plus ``key=value``s."""
    cfg = load_recipe(path, FinetuneConfig, overrides)
    get_strategy(cfg.strategy)
    return cfg


def finetune(cfg: FinetuneConfig, *, resume: bool = False, progress: bool | None = None,
             stop_after: int | None = None) -> Path:
    """Run (or resume) one fine-tuning run; returns the run folder. ``layers: auto`` and
    ``truncate: auto`` are resolved first (:mod:`ssl_ft.auto_layers`; its race's winner goes
    on as the run, set up once). ``stop_after=k`` pauses the run after epoch ``k``
    (``last.pt`` written, no test evaluation; resume to go on)."""
    from ssl_ft.auto_layers import record_run, resolve_auto

    t0, c0 = time.perf_counter(), time.process_time()
    with profiling() as phases:
        with distributed(cfg.device) as (dist, device), RunLock(cfg.out, enabled=dist.is_main):
            with phase("auto"):
                cfg, auto, resume, run = resolve_auto(cfg, resume=resume, device=device)
            out = Path(cfg.out)
            if run is None and (out / "metrics.json").exists() and resume:
                if dist.is_main:
                    print(f"{out} is finished (metrics.json exists); nothing to do",
                          file=sys.stderr)
                return out
            run = run or Run(cfg, dist, device, resume=resume, progress=progress)
            run.train_to(stop_after)
            run.close(test=True)  # (a paused run is not finished: no test evaluation)
            if dist.is_main:  # wall/CPU time (chooser included), the choice, the phases
                record_run(out, auto, time.perf_counter() - t0, time.process_time() - c0,
                           phases)
            return out


def _check_resumable(old: dict[str, Any], cfg: FinetuneConfig, path: Path) -> None:
    check_same_recipe(old, to_dict(cfg), sorted(_RESUMABLE), path)


class Run:
    """One fine-tuning run between its epochs. Creating it sets the run up (data, model, the
    frozen prefix's cache, the state of ``last.pt`` when resuming, the log and, for ``lp`` /
    ``lp-ft``, the probe); :meth:`train_to` trains up to an epoch (each one validated; written
    to ``last.pt`` every ``checkpoint_every_s`` seconds: a kill loses at most that much training
    and the epoch under way); :meth:`close` ends it (writing what is not written yet),
    with the test evaluation and ``metrics.json`` once every epoch is done. The race of
    ``layers: auto`` keeps its candidates open between rungs and hands the winner on
    (:meth:`move_to`), so that no run of the race is set up twice. ``splits``: data already
    loaded for the same recipe (shared by the race's runs)."""

    def __init__(self, cfg: FinetuneConfig, dist: Dist, device: torch.device, *,
                 resume: bool, progress: bool | None, splits: ArraySplits | None = None
                 ) -> None:
        self.cfg, self.dist, self.device, self.out = cfg, dist, device, Path(cfg.out)
        refuse_overwrite(self.out, resume, "--out")
        self.precision = precision = resolve_precision(cfg.precision, device)
        threads = set_threads(cfg.threads, dist)
        seed_everything(cfg.seed)
        with phase("setup"):  # data, model, checkpoint, leakage guard
            self.p = p = prepare(cfg, splits)
        model, info = p.model.to(device), p.splits.info
        self.optimizer = _optimizer(cfg, p.strategy)
        x_all, y_all, scale = _train_inputs(p, model, device, precision)
        per_rank = min(max(1, cfg.batch_size // dist.world_size), len(x_all) // dist.world_size)
        if per_rank < 2:
            raise UserError(f"{len(x_all)} training images are too few for {dist.world_size} "
                            "process(es); raise --label-fraction or --limit")
        loader, self.sampler = epoch_loader(x_all, y_all, batch_size=per_rank, dist=dist,
                                            seed=cfg.seed, device=device)
        (self.epoch, self.step, self.history, self.best,
         self.probe) = _resume(p, self.optimizer, self.out / "last.pt", resume, device)
        self.log, self.cadence = None, Cadence(cfg.checkpoint_every_s)
        if dist.is_main:
            self.log = RunLog(self.out, to_dict(cfg), self.history)  # no rows of a cut epoch
            self.log.open_tensorboard(purge_step=self.epoch or None)
            print(f"fine-tuning {p.source['arch']} from {cfg.checkpoint} on {info.name} "
                  f"({len(x_all)} train images, {info.image_size}px): {_what(p, len(loader))}"
                  f", device {device}, {precision}, {threads} threads, world "
                  f"{dist.world_size}", file=sys.stderr)
        self._probe_first()
        self.epoch_args = dict(loader=loader, x_all=x_all, y_all=y_all, scale=scale,
                               device=device, precision=precision,
                               show=show_progress(dist, progress),
                               scaler=grad_scaler(device, precision))  # fp16 on CUDA only
        self.end = p.strategy.train_epochs()
        self.net: nn.Module = model
        self.ddp_units: list[int] | None = None

    def _probe_first(self) -> None:
        """``lp`` / ``lp-ft``: the converged probe before any step (a resumed run has it)."""
        p = self.p
        if p.strategy.fits_probe and self.probe is None and self.epoch > 0:
            raise UserError(f"cannot resume {self.out / 'last.pt'}: it was made before "
                            f"{self.cfg.strategy} began with a converged linear probe (its head "
                            "has trained without one); start a new run in another folder")
        if p.strategy.fits_probe and self.probe is None:
            self.probe, self.best = _probe_phase(p, self.out, self.best, self.history,
                                                 self.optimizer, self.log, self.device,
                                                 self.precision, self.dist)

    def train_to(self, stop: int | None = None) -> None:
        """Train the epochs before ``stop`` (all of them: None) that are not trained yet."""
        p, dist, model = self.p, self.dist, self.p.model
        for epoch in range(self.epoch, self.end if stop is None else min(stop, self.end)):
            seed_epoch(self.cfg.seed, epoch, dist.rank)
            self.sampler.set_epoch(epoch)
            trained = p.strategy.trained_units(epoch)
            set_trainable(model, trained)
            self.cadence.begin_epoch()
            if dist.enabled and trained != self.ddp_units:  # DDP tracks fixed parameters
                self.net, self.ddp_units = ddp(model, self.device), trained
            with phase("train"):
                self.step, stats = train_one_epoch(self.net, p, self.optimizer, epoch=epoch,
                                                   step=self.step, **self.epoch_args)
            check_state(model, f"the end of epoch {epoch + 1}")  # before anything is written
            if dist.is_main:
                self.best = _end_of_epoch(p, stats, self.best, self.history, self.log,
                                          self.device, self.precision, self.cadence)
            self.epoch = epoch + 1
            if dist.is_main and self.cadence.due():
                self.write()
            if dist.enabled:
                torch.distributed.barrier()

    def write(self) -> None:
        """Write ``best.pt`` (if a better model came) and ``last.pt`` of the epoch just trained."""
        with phase("checkpoint"):
            self.cadence.write_best(self.out)
            save_last(self.p, self.out, self.epoch, self.optimizer, self.step, self.best,
                      self.history, self.probe)
        self.cadence.written()

    def flush(self) -> None:
        """:meth:`write` the finished epoch in memory, if it is not written yet."""
        if self.dist.is_main and self.cadence.dirty:
            self.write()

    def val_curve(self) -> list[float]:
        """Val AUC of every trained epoch so far (lp-ft's epoch-0 probe row is not one; lp has
        only that row)."""
        rows = [r for r in self.history if r.get("phase") != "probe"] or self.history
        return [r["val_auc"] for r in rows]

    def move_to(self, cfg: FinetuneConfig) -> None:
        """Go on in ``cfg.out`` (the same recipe elsewhere: the race's winner becomes the run):
        its checkpoints and TensorBoard log are copied there (``last.pt`` last: it marks a
        resumable run), ``metrics.jsonl`` is written there from the history, and the run goes on
        writing there."""
        dst = Path(cfg.out)
        if self.log is not None:
            self.log.close()
        self.flush()
        dst.mkdir(parents=True, exist_ok=True)
        for name in ("best.pt", "last.pt"):
            if (self.out / name).exists():
                shutil.copy2(self.out / name, dst / name)
        if (self.out / "tb").is_dir():
            shutil.copytree(self.out / "tb", dst / "tb", dirs_exist_ok=True)
        self.cfg = self.p.cfg = cfg
        self.out = dst
        if self.dist.is_main:
            self.log = RunLog(dst, to_dict(cfg), self.history)
            self.log.open_tensorboard(purge_step=self.epoch or None)

    def close(self, test: bool = True) -> None:
        """Close the log; with ``test`` and every epoch trained, evaluate the best model on val
        and test and write ``metrics.json`` / ``model.pt``."""
        self.flush()
        if self.log is not None:
            self.log.close()
            self.log = None
        if test and self.dist.is_main and self.epoch >= self.end:
            with phase("test"):
                finish(self.p, self.out, self.best, self.history, self.device, self.precision,
                        self.probe, self.step)


def _train_inputs(p: Prepared, model: FinetuneModel, device: torch.device,
                  precision: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(inputs, labels, scale)`` of the train split: the raw images (scaled by their maximum
    value), or the frozen prefix's cached activations (scale 1) when the cache applies."""
    if use_prefix_cache(p, model, device, precision):
        x_all, scale = p.cache["train"], 1
    else:
        x_all, scale = image_tensor(p.splits.images["train"]), p.splits.info.max_value
    return x_all, torch.from_numpy(p.splits.labels["train"]), scale


def _what(p: Prepared, steps: int) -> str:
    """The run's strategy, selection and budget, for its first line on stderr."""
    n = p.trainable_params
    return (f"strategy {p.cfg.strategy}, layers {p.selection.layers_str}, truncate "
            f"{float(p.selection.truncate):g}, {n['total']:,} trainable parameters, "
            f"{p.strategy.train_epochs()} epochs x {steps} steps")


def train_one_epoch(net: nn.Module, p: Prepared, optimizer: torch.optim.Optimizer, *,
                    epoch: int, step: int, loader: DataLoader, x_all: torch.Tensor,
                    y_all: torch.Tensor, scale: int, device: torch.device, precision: str,
                    show: bool, scaler: torch.amp.GradScaler) -> tuple[int, dict[str, Any]]:
    """One epoch of the strategy ``p.strategy`` (whose units :func:`set_trainable` has made
    trainable) on ``loader``'s batches through ``net`` (the model, or its DDP wrapper):
    BatchNorm modes, the strategy's epoch-start work, then cross-entropy (+ its penalty) steps
    on the warm-up + cosine schedule of its phases. Returns the global step and the epoch's
    row (without the validation scores)."""
    cfg, model, strategy = p.cfg, p.model, p.strategy
    trained = strategy.trained_units(epoch)
    if strategy.keeps_bn_statistics():  # lp-ft: phase 2 sees the features the probe saw
        train_mode(model, [], freeze_bn=True)
    else:
        train_mode(model, trained, cfg.freeze_bn)
    loss_fn = nn.CrossEntropyLoss()
    measure = make_measurer(net, x_all, y_all, loss_fn, cfg.seed, epoch, loader.batch_size,
                            scale, device, precision)
    stats: dict[str, Any] = dict(strategy.on_epoch_start(epoch, optimizer, measure))
    steps, phases = len(loader), strategy.phases()
    t0, seen, loss_sum = time.perf_counter(), 0, 0.0
    bar = progress_bar(loader, epoch, show)
    for xb, yb in bar:
        lr = warmup_cosine(epoch + (step % steps) / steps, base=cfg.lr, warmup=cfg.warmup_epochs,
                           phases=phases, warmup_offset=1e-3)
        set_lr(optimizer, lr)
        x = augment_batch(xb.to(device, non_blocking=True).float() / scale, cfg.augment)
        with autocast(device, precision):
            loss = loss_fn(net(x).float(), yb.to(device))
        extra = strategy.penalty()
        optimizer_step(loss + extra if extra is not None else loss, optimizer, scaler, model,
                       f"epoch {epoch + 1}, step {step}")
        step += 1
        seen += len(x)
        loss_sum += float(loss.detach()) * len(x)
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.3g}")
    stats.update({"epoch": epoch + 1, "phase": strategy.phase_name(epoch),
                  "train_loss": loss_sum / max(1, seen), "lr": lr,
                  "images_per_s": seen / max(1e-9, time.perf_counter() - t0),
                  "trained_units": len(trained)})
    return step, stats


def _resume(p: Prepared, optimizer: torch.optim.Optimizer, last: Path, resume: bool,
            device: torch.device) -> tuple[int, int, list[dict], dict[str, Any], dict | None]:
    """``(start_epoch, step, history, best, probe)``, from ``last`` when resuming."""
    if not (resume and last.exists()):
        return 0, 0, [], {"auc": -1.0, "epoch": 0}, None
    ckpt = load_checkpoint(last, map_location=device)
    _check_resumable(ckpt.meta.get("recipe", {}), p.cfg, last)
    p.model.backbone.load_state_dict(ckpt.backbone)
    p.model.head.load_state_dict(ckpt.extra["head"])
    optimizer.load_state_dict(ckpt.extra["optimizer"])
    p.strategy.load_state_dict(ckpt.extra.get("strategy", {}))
    return (int(ckpt.meta["epoch"]), int(ckpt.extra["step"]),
            decode_history(ckpt.extra.get("history", [])), dict(ckpt.extra["best"]),
            ckpt.extra.get("probe"))


def _end_of_epoch(p: Prepared, stats: dict[str, Any], best: dict[str, Any],
                  history: list[dict], log: RunLog, device: torch.device, precision: str,
                  cadence: Cadence) -> dict[str, Any]:
    """Validate, keep the best model (for best.pt) and log; returns the new best."""
    model, epoch = p.model, stats["epoch"]
    with phase("validate"):
        val = evaluate(model, p.splits, "val", device, precision, p.cache.get("val"))
    stats.update(val_auc=val["auc"], val_acc=val["acc"])
    score = val_score(val)
    if score > best["auc"]:
        best = {"auc": score, "epoch": epoch}
        cadence.keep_best(model, run_meta(p, epoch))
    history.append(stats)
    chance = chance_loss(p.splits.info.num_classes)
    warn_if_diverging(history, "train_loss", chance, f"the chance-level loss {chance:.4g}")
    log.epoch(stats, p.cfg.epochs)
    return best


def _probe_phase(p: Prepared, out: Path, best: dict[str, Any], history: list[dict],
                 optimizer: torch.optim.Optimizer, log: RunLog | None, device: torch.device,
                 precision: str, dist: Dist) -> tuple[dict[str, Any], dict[str, Any]]:
    """Phase 1 of ``lp`` / ``lp-ft`` (Kumar et al., ICLR 2022): the head becomes the converged
    logistic probe of the frozen backbone's features (:func:`~ssl_ft.features.fit_linear_head`),
    logged as epoch 0 and checkpointed before any optimiser step, so that a resumed run loads
    this head instead of fitting it again. For ``lp`` (no epochs follow) it is the best model;
    for ``lp-ft`` model selection is over the fine-tuning epochs only. Returns the probe's
    record and the best so far."""
    model = p.model
    with phase("probe"):
        probe = fit_linear_head(model.backbone, model.head, p.splits, mean=p.source["mean"],
                                std=p.source["std"], device=device, precision=precision,
                                c_grid=p.strategy.config.c_grid)
    if not dist.is_main:
        return probe, best
    val = evaluate(model, p.splits, "val", device, precision, p.cache.get("val"))
    stats = {"epoch": 0, "phase": "probe", "C": probe["C"], "n_features": probe["n_features"],
             "probe_seconds": probe["seconds"], "val_auc": val["auc"], "val_acc": val["acc"]}
    if not p.strategy.train_epochs():
        best = {"auc": val_score(val), "epoch": 0}
        save_finetuned(out / "best.pt", model, run_meta(p, 0))
    history.append(stats)
    log.epoch(stats, p.strategy.train_epochs())
    save_last(p, out, 0, optimizer, 0, best, history, probe)
    return probe, best


def _optimizer(cfg: FinetuneConfig, strategy: Strategy) -> torch.optim.Optimizer:
    """The optimiser over the strategy's groups (each carries its weight decay)."""
    return build_optimizer(cfg.optimizer, strategy.param_groups(cfg.weight_decay), lr=cfg.lr,
                           momentum=cfg.momentum)
