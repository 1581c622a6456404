"""What a fine-tuning run writes besides its logs (:class:`ssl_ft.scaffold.RunLog`): ``last.pt``,
and at the end ``model.pt`` and ``metrics.json`` (see :mod:`ssl_ft.finetune.engine` for the run
folder)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ssl_ft.checkpoint import save_checkpoint, write_json
from ssl_ft.config import to_dict
from ssl_ft.data import ArraySplits
from ssl_ft.finetune.model import (
    FinetuneModel,
    finetuned_meta,
    load_finetuned,
    predict_proba,
    save_finetuned,
)
from ssl_ft.metrics import classification_metrics
from ssl_ft.runtime import autocast
from ssl_ft.scaffold import encode_history

if TYPE_CHECKING:
    from ssl_ft.finetune.engine import Prepared

__all__ = ["Cadence", "evaluate", "finish", "run_meta", "save_last"]


def evaluate(model: FinetuneModel, splits: ArraySplits, split: str, device: torch.device,
             precision: str, inputs: torch.Tensor | None = None) -> dict[str, Any]:
    """MedMNIST-convention metrics of ``model`` on one split (``inputs``: the split's cached
    prefix activations, when the model starts from them)."""
    info = splits.info
    with autocast(device, precision):
        probs = predict_proba(model, splits.images[split] if inputs is None else inputs,
                              max_value=info.max_value if inputs is None else 1, device=device)
    return classification_metrics(splits.labels[split], probs, info.task, info.label_names)


def run_meta(p: Prepared, epoch: int) -> dict[str, Any]:
    """The metadata of the checkpoints a run writes (model.pt, best.pt, last.pt)."""
    info, cfg = p.splits.info, p.cfg
    return {
        "method": f"finetune:{cfg.strategy}", "source_method": p.source["method"],
        "family": p.source["family"], "arch": p.source["arch"], "in_chans": info.n_channels,
        "image_size": info.image_size, "stem": p.source["stem"],
        "normalization": {"mean": p.source["mean"], "std": p.source["std"],
                          "max_value": info.max_value},
        "recipe": to_dict(cfg), "data": info.name, "data_fingerprint": info.fingerprint,
        "epoch": epoch, "label_names": list(info.label_names), "task": info.task,
        "layers": p.selection.layers_str, "truncate": float(p.selection.truncate),
    }


_clock = time.perf_counter  # (a test's fake clock replaces it)


class Cadence:
    """When a run writes ``best.pt`` and ``last.pt``: together, once ``every_s`` seconds have
    passed since the last write (0: after every epoch), and when the run ends or pauses
    (:meth:`ssl_ft.finetune.engine.Run.close`, :meth:`~ssl_ft.finetune.engine.Run.move_to`).
    Between writes the best model is kept in memory (a CPU copy of its tensors), so a kill loses
    at most ``every_s`` seconds of training and the files on disk always belong together: a
    resumed run retrains the epochs after ``last.pt`` and, being deterministic, finds the same
    best model again. At 1 % of the labels an epoch trains a few dozen images while ``last.pt``
    (Adam's state included) is ~135 MB for a resnet18: writing it every epoch cost more than the
    training (docs/performance.md, "Studies")."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.best: tuple[dict, dict, dict] | None = None  # (backbone, meta, extra) not written
        self.dirty = False       # the state in memory is a finished epoch's, not yet written
        self.since = _clock()

    def keep_best(self, model: FinetuneModel, meta: dict[str, Any]) -> None:
        """Hold the new best model until the next write."""
        cpu = {"device": "cpu", "copy": True}
        self.best = ({k: v.detach().to(**cpu) for k, v in model.backbone.state_dict().items()},
                     finetuned_meta(model, meta),
                     {"head": {k: v.detach().to(**cpu) for k, v in model.head.state_dict().items()}})

    def begin_epoch(self) -> None:
        """Training goes on: the state in memory is no longer that of a finished epoch."""
        self.dirty = False

    def due(self) -> bool:
        """Whether the epoch that just finished is to be written now."""
        self.dirty = True
        return _clock() - self.since >= self.every_s

    def write_best(self, out: Path) -> None:
        """``best.pt``, if a better model came since the last write (before ``last.pt``)."""
        if self.best is not None:
            save_checkpoint(out / "best.pt", *self.best[:2], extra=self.best[2])
            self.best = None

    def written(self) -> None:
        self.dirty, self.since = False, _clock()


def save_last(p: Prepared, out: Path, epoch: int, optimizer: torch.optim.Optimizer, step: int,
              best: dict[str, Any], history: list[dict], probe: dict[str, Any] | None) -> None:
    """``last.pt``: everything a resumed run starts from (the probe's record included)."""
    save_checkpoint(out / "last.pt", p.model.backbone.state_dict(), run_meta(p, epoch), extra={
        "head": p.model.head.state_dict(), "optimizer": optimizer.state_dict(),
        "strategy": p.strategy.state_dict(), "step": step, "best": best,
        "history": encode_history(history), "probe": probe})


def finish(p: Prepared, out: Path, best: dict[str, Any], history: list[dict],
           device: torch.device, precision: str, probe: dict[str, Any] | None,
           step: int) -> None:
    """Evaluate the best-validation model on val and test; write model.pt and metrics.json."""
    model = load_finetuned(out / "best.pt", map_location=device)
    results = {split: evaluate(model, p.splits, split, device, precision)
               for split in ("val", "test")}
    save_finetuned(out / "model.pt", model, model.meta)
    cfg, n = p.cfg, p.trainable_params
    metrics = {
        "val": results["val"], "test": results["test"],
        "layers": p.selection.layers_str, "truncate": float(p.selection.truncate),
        "strategy": cfg.strategy, "trainable_params": n["total"],
        "trainable_backbone_params": n["backbone"], "head_params": n["head"],
        "seed": cfg.seed, "label_fraction": cfg.label_fraction,
        "best_epoch": best["epoch"], "epochs": cfg.epochs,
        "sgd_epochs": p.strategy.train_epochs(), "optimizer_steps": step, "probe": probe,
        "checkpoint": cfg.checkpoint, "source": p.source, "data": p.splits.info.name,
        "n_train": len(p.splits.labels["train"]), "depth_unit": p.selection.depth_map.rule,
        "units": [{"name": u.name, "depth": float(u.depth), "params": u.params, "status": s}
                  for u, s in zip(p.selection.depth_map.units, p.selection.status, strict=True)],
        "history": history, "recipe": to_dict(cfg), "leakage": p.leakage,
        # what `precision: auto` and `threads` resolved to on this machine
        "runtime": {"device": str(device), "precision": precision,
                    "threads": torch.get_num_threads()},
    }
    write_json(out / "metrics.json", metrics)
    print(f"best epoch {best['epoch']}: val AUC {results['val']['auc']:.4f} ACC "
          f"{results['val']['acc']:.4f}; test AUC {results['test']['auc']:.4f} ACC "
          f"{results['test']['acc']:.4f}; wrote {out / 'metrics.json'}", file=sys.stderr)
