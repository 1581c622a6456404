"""What a fine-tuning run writes besides its logs (:class:`ssl_ft.scaffold.RunLog`): ``last.pt``,
and at the end ``model.pt`` and ``metrics.json`` (see :mod:`ssl_ft.finetune.engine` for the run
folder)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ssl_ft.checkpoint import save_checkpoint, write_json
from ssl_ft.config import to_dict
from ssl_ft.data import ArraySplits
from ssl_ft.finetune.model import FinetuneModel, load_finetuned, predict_proba, save_finetuned
from ssl_ft.metrics import classification_metrics
from ssl_ft.runtime import autocast
from ssl_ft.scaffold import encode_history

if TYPE_CHECKING:
    from ssl_ft.finetune.engine import Prepared

__all__ = ["evaluate", "finish", "run_meta", "save_last"]


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
