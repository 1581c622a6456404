"""Multi-SSL fusion: features of several models at chosen depths -> concatenation -> a head.

Khan & Fang, "Revisiting Fine-Tuning Strategies for Self-supervised Medical Imaging Analysis"
(arXiv 2307.10915): contrastive and restorative models learn complementary features, and a
classifier on their concatenated intermediate features beat the best single model.

Strategies:

* ``lp`` (default): all backbones frozen; features come from the cache; a logistic-regression
  head (``C`` chosen on validation AUC) on the block-normalised concatenation.
* ``ft`` / ``lp-ft``: the ``layers`` of each model are fine-tuned jointly with a linear head
  (``lp-ft`` starts from the logistic-regression head, Kumar et al., ICLR 2022).

The same run evaluates the baselines: each model alone at its depth (same head, same strategy)
and late fusion (the average of the single models' probabilities).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ssl_ft.checkpoint import write_json
from ssl_ft.config import load_recipe, to_dict
from ssl_ft.ensemble.config import EnsembleConfig
from ssl_ft.ensemble.members import (
    Member,
    block_normalize,
    cache_dir,
    load_members,
    member_features,
)
from ssl_ft.errors import UserError
from ssl_ft.features import head_from_probe, padded_proba, probe_features
from ssl_ft.finetune.model import FinetuneModel, predict_proba
from ssl_ft.finetune.steps import train_mode
from ssl_ft.leakage import guard_checkpoint, own_train_split
from ssl_ft.metrics import classification_metrics
from ssl_ft.runlock import RunLock
from ssl_ft.runtime import (
    Dist,
    autocast,
    check_can_create,
    grad_scaler,
    make_run_folder,
    resolve_device,
    resolve_precision,
    seed_everything,
    set_threads,
)
from ssl_ft.scaffold import (
    build_optimizer,
    image_tensor,
    optimizer_step,
    seed_epoch,
    set_lr,
    val_score,
    warmup_cosine,
)

__all__ = ["FusionNet", "ensemble", "load_ensemble_recipe"]

C_GRID = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1000.0)
SPLITS = ("train", "val", "test")


def load_ensemble_recipe(path: str | None, overrides: list[str] = ()) -> EnsembleConfig:
    return load_recipe(path, EnsembleConfig, overrides)


class FusionNet(nn.Module):
    """``head(concat_i((features_i(x) - shift_i) * scale_i))`` for images ``x`` in ``[0, 1]``."""

    def __init__(self, members: list[Member], norms: list[tuple[np.ndarray, np.ndarray]],
                 num_classes: int) -> None:
        super().__init__()
        self.models = nn.ModuleList(
            FinetuneModel(m.backbone, num_classes, tuple(m.source["mean"]), tuple(m.source["std"]))
            for m in members)
        self.trained = [[u.index for u in m.selection.trained] for m in members]
        for i, (fm, trained) in enumerate(zip(self.models, self.trained, strict=True)):
            fm.head = nn.Identity()
            fm.grad_from = min(trained) if trained else len(fm.backbone.units)
            shift, scale = norms[i]
            self.register_buffer(f"shift{i}", torch.as_tensor(shift, dtype=torch.float32))
            self.register_buffer(f"scale{i}", torch.as_tensor(scale, dtype=torch.float32))
        self.head = nn.Linear(sum(m.dim for m in members), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = [(fm.features(x) - getattr(self, f"shift{i}")) * getattr(self, f"scale{i}")
                  for i, fm in enumerate(self.models)]
        return self.head(torch.cat(blocks, 1))

    def train(self, mode: bool = True) -> FusionNet:
        super().train(mode)
        if mode:  # frozen units keep their BatchNorm statistics
            for fm, trained in zip(self.models, self.trained, strict=True):
                train_mode(fm, trained, freeze_bn=True)
        return self


def _probe(blocks: dict[str, list[np.ndarray]], labels: dict[str, np.ndarray], info
           ) -> tuple[dict[str, Any], dict[str, np.ndarray], Any]:
    x = {s: np.concatenate(blocks[s], 1) for s in SPLITS}
    # the blocks are normalised per model already (block_normalize): no second z-scoring
    fit = probe_features({s: x[s] for s in ("train", "val")}, labels, task=info.task,
                         num_classes=info.num_classes, c_grid=C_GRID, standardize=False)
    clf, c = fit["classifier"], fit["C"]
    probs = {s: padded_proba(clf, x[s], info.num_classes) for s in ("val", "test")}
    res = {s: classification_metrics(labels[s], probs[s], info.task, list(info.label_names))
           for s in ("val", "test")}
    res["C"] = c
    return res, probs, clf


def _train(net: FusionNet, splits, cfg: EnsembleConfig, device: torch.device,
           precision: str) -> dict[str, np.ndarray]:
    """Adam + cosine over ``cfg.epochs``, best validation AUC kept; returns val/test probs."""
    info = splits.info
    net.to(device)
    opt = build_optimizer("adam", [p for p in net.parameters() if p.requires_grad], lr=cfg.lr)
    scaler = grad_scaler(device, precision)  # fp16 on CUDA only; a pass-through otherwise
    x_all, y_all = image_tensor(splits.images["train"]), torch.from_numpy(splits.labels["train"])
    batch = min(cfg.batch_size, len(x_all))
    steps = max(1, len(x_all) // batch)
    step = 0
    best, best_state = -1.0, None
    for epoch in range(cfg.epochs):
        seed_epoch(cfg.seed, epoch, stride=1)
        order = torch.randperm(len(x_all))
        net.train()
        for k in range(steps):
            idx = order[k * batch:(k + 1) * batch]
            set_lr(opt, warmup_cosine(step / steps, base=cfg.lr, warmup=0,
                                      phases=[(0, cfg.epochs)]))
            with autocast(device, precision):
                x = x_all[idx].to(device).float() / info.max_value
                loss = nn.functional.cross_entropy(net(x).float(), y_all[idx].to(device))
            optimizer_step(loss, opt, scaler, net, f"epoch {epoch + 1}, step {step}")
            step += 1
        val = classification_metrics(splits.labels["val"], _predict(net, splits, "val", device,
                                                                     precision), info.task)
        score = val_score(val)
        print(f"  epoch {epoch + 1}/{cfg.epochs}  loss {loss.item():.4f}  val AUC {val['auc']:.4f}",
              file=sys.stderr)
        if score > best:
            best, best_state = score, copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    return {s: _predict(net, splits, s, device, precision) for s in ("val", "test")}


def _predict(net: nn.Module, splits, split: str, device: torch.device,
             precision: str) -> np.ndarray:
    with autocast(device, precision):
        return predict_proba(net, splits.images[split], max_value=splits.info.max_value,
                             device=device)


def ensemble(cfg: EnsembleConfig) -> tuple[Path, dict[str, Any]]:
    """Run one fusion with its baselines; writes ``out/metrics.json`` and returns it. The run
    folder is locked (:class:`~ssl_ft.runlock.RunLock`) and the feature cache checked first."""
    check_can_create(cache_dir(cfg.cache_dir))
    with RunLock(cfg.out):
        return _ensemble(cfg)


def _ensemble(cfg: EnsembleConfig) -> tuple[Path, dict[str, Any]]:
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    set_threads(cfg.threads, Dist())
    seed_everything(cfg.seed)
    members = load_members(cfg)
    splits = members[0].splits
    info, labels = splits.info, splits.labels
    whole: dict[int, Any] = {}  # per channel count: the target's own whole train split
    for m in members:
        chans = m.splits.info.n_channels
        if chans not in whole:
            whole[chans] = own_train_split(cfg.label_fraction, cfg.data, data_root=cfg.data_root,
                                           size=cfg.size, channels=chans, limit=cfg.limit,
                                           seed=cfg.seed, download=cfg.download)
        guard_checkpoint(m.checkpoint, m.splits.images, target=info.name,
                         allow=cfg.allow_overlap, own_train=whole[chans],
                         warn=lambda msg: print(f"warning: {msg}", file=sys.stderr))
    if cfg.strategy != "lp" and len({m.splits.info.n_channels for m in members}) > 1:
        raise UserError("joint fine-tuning needs models with the same input channels; use "
                        "strategy lp")
    cache = cache_dir(cfg.cache_dir)
    for m in members:
        member_features(m, cache, device, precision)
    norms = [block_normalize(m.features["train"]) for m in members]
    blocks = {s: [(m.features[s] - sh) * sc for m, (sh, sc) in zip(members, norms, strict=True)]
              for s in SPLITS}
    baselines: dict[str, Any] = {}
    single_probs = []
    fused, _, clf = _probe(blocks, labels, info)
    for i, m in enumerate(members):
        res, probs, one_clf = _probe({s: [blocks[s][i]] for s in SPLITS}, labels, info)
        if cfg.strategy != "lp":
            print(f"fine-tuning {m.name} alone ({cfg.strategy})", file=sys.stderr)
            solo = FusionNet([_copy(m)], [norms[i]], info.num_classes)
            if cfg.strategy == "lp-ft":
                head_from_probe(solo.head, one_clf, info.num_classes)
            probs = _train(solo, splits, cfg, device, precision)
            res = _metrics(probs, labels, info)
        baselines[m.name] = res
        single_probs.append(probs)
    if cfg.strategy != "lp":
        print(f"fine-tuning the fusion ({cfg.strategy})", file=sys.stderr)
        net = FusionNet(members, norms, info.num_classes)
        if cfg.strategy == "lp-ft":
            head_from_probe(net.head, clf, info.num_classes)
        fused = _metrics(_train(net, splits, cfg, device, precision), labels, info)
    late = {s: np.mean([p[s] for p in single_probs], 0) for s in ("val", "test")}
    baselines["late_fusion"] = _metrics(late, labels, info)
    trainable = sum(m.selection.trainable_params for m in members if m.trained)
    head = (sum(m.dim for m in members) + 1) * info.num_classes
    metrics = {
        "val": fused["val"], "test": fused["test"], "C": fused.get("C"),
        "layers": [m.describe()["layers"] for m in members],
        "truncate": [m.depth for m in members], "strategy": cfg.strategy,
        "trainable_params": (trainable if cfg.strategy != "lp" else 0) + head,
        "seed": cfg.seed, "label_fraction": cfg.label_fraction, "data": info.name,
        "n_train": len(labels["train"]), "models": [m.describe() for m in members],
        "baselines": baselines, "recipe": to_dict(cfg),
    }
    out = make_run_folder(cfg.out)
    write_json(out / "metrics.json", metrics)
    _report(metrics)
    return out, metrics


def _copy(m: Member) -> Member:
    return copy.copy(m) if not m.trained else Member(
        m.name, m.checkpoint, copy.deepcopy(m.backbone), m.source, m.depth, m.selection,
        m.splits, m.key, m.features)


def _metrics(probs: dict[str, np.ndarray], labels: dict[str, np.ndarray], info) -> dict:
    return {s: classification_metrics(labels[s], probs[s], info.task, list(info.label_names))
            for s in ("val", "test")}


def _report(metrics: dict[str, Any]) -> None:
    rows = [("fusion", metrics)] + list(metrics["baselines"].items())
    for name, r in rows:
        print(f"{name:>14}: val AUC {r['val']['auc']:.4f} ACC {r['val']['acc']:.4f} | test AUC "
              f"{r['test']['auc']:.4f} ACC {r['test']['acc']:.4f}", file=sys.stderr)
