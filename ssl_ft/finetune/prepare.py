"""What a fine-tuning run needs before its first step: data, the selected and truncated backbone,
the strategy, the leakage check (:func:`prepare`), and the frozen prefix's cached activations
(:func:`use_prefix_cache`, issue 16 item 3)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ssl_ft.config import from_dict
from ssl_ft.data import ArraySplits, load_data
from ssl_ft.data.checks import check_learnable
from ssl_ft.finetune.config import FinetuneConfig
from ssl_ft.finetune.model import FinetuneModel, build_backbone
from ssl_ft.finetune.prefix_cache import cacheable_prefix, prefix_activations, prefix_bytes
from ssl_ft.finetune.strategies import Strategy, get_strategy
from ssl_ft.leakage import guard_checkpoint, own_train_split
from ssl_ft.models import check_input_size
from ssl_ft.models.depth import DepthMap, Selection
from ssl_ft.profile import phase

__all__ = ["Prepared", "prepare", "use_prefix_cache"]


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


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


def prepare(cfg: FinetuneConfig, splits: ArraySplits | None = None) -> Prepared:
    """Load data (or take ``splits``, loaded for the same recipe: the race of ``layers: auto``
    shares them among its runs), build and truncate the backbone, select units, build the
    strategy."""
    strategy_cls = get_strategy(cfg.strategy)
    strategy_cfg = from_dict(strategy_cls.Config, cfg.strategy_args, where="strategy_args",
                             prefix="strategy_args.")
    if splits is None:
        splits = load_data(cfg.data, data_root=cfg.data_root, size=cfg.size,
                           channels=cfg.channels, label_fraction=cfg.label_fraction,
                           limit=cfg.limit, seed=cfg.seed, download=cfg.download)
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
    whole = own_train_split(cfg.label_fraction, cfg.data, data_root=cfg.data_root,
                            size=cfg.size, channels=cfg.channels, limit=cfg.limit,
                            seed=cfg.seed, download=cfg.download)
    leak = guard_checkpoint(cfg.checkpoint, splits.images, target=info.name,
                            allow=cfg.allow_overlap, warn=_warn, own_train=whole)
    return Prepared(cfg, splits, model, selection, strategy, source,
                    leak.as_dict() if leak else None)


def use_prefix_cache(p: Prepared, model: FinetuneModel, device: torch.device,
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
    with phase("prefix_cache"):
        for split in ("train", "val"):
            p.cache[split] = prefix_activations(model, p.splits.images[split], k,
                                                max_value=info.max_value, device=device,
                                                precision=precision)
    model.input_unit = k
    print(f"prefix cache: the {k} frozen units' activations of {n_images} images computed "
          f"once ({time.perf_counter() - t0:.1f} s); training starts at unit {k}", file=sys.stderr)
    return True
