"""What a pretraining run reads: the pool of train images and the labelled online-eval data.

* one source (``data.name: pneumoniamnist``): its train split, and the same dataset's train/val
  splits for the online kNN score, exactly as :func:`ssl_ft.data.load_data` gives them;
* a list of sources (``data.name: [pneumoniamnist, chest_xray_kermany_64, /scans/unlabelled]``):
  the pool of :func:`ssl_ft.data.pool.load_pool`, and ``eval.data`` (default: the first source
  that has labels) at the pool's size and channels for the online score.

``data.exclude`` drops every pool image that matches a val/test image of the named datasets.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Sampler

from ssl_ft.data import ArraySplits, DataInfo, load_data
from ssl_ft.data.pool import Pool, epoch_indices, load_pool
from ssl_ft.errors import UserError
from ssl_ft.leakage import image_codes
from ssl_ft.pretrain.config import PretrainConfig

__all__ = ["PretrainData", "WeightedEpochSampler", "load_pretrain_data"]


@dataclass
class PretrainData:
    """``images``: what is pretrained on; ``info``: their size, channels and normalisation;
    ``eval``: labelled splits for the online score (``None``: no labelled source);
    ``pool``: the sources with their records and perceptual codes."""

    images: np.ndarray
    info: DataInfo
    eval: ArraySplits | None
    pool: Pool


def load_pretrain_data(cfg: PretrainConfig) -> PretrainData:
    """Load the data a pretraining recipe names (see the module docstring)."""
    d = cfg.data
    if isinstance(d.name, str) and not d.exclude:
        splits = load_data(d.name, data_root=d.root, size=d.size, channels=d.channels,
                           limit=d.limit, seed=cfg.seed, download=d.download)
        train = splits.images["train"]
        info = splits.info
        record = {"name": info.name, "kind": info.kind, "source": info.source,
                  "fingerprint": info.fingerprint, "split": "train", "weight": 1.0,
                  "images": int(len(train))}
        pool = Pool(train, np.zeros(len(train), dtype=np.int64), [record], image_codes(train),
                    info, np.ones(len(train)))
        evaluation = splits if cfg.eval.data is None else _eval_splits(cfg, cfg.eval.data, info)
        return PretrainData(train, info, evaluation, pool)
    names = [s if isinstance(s, str) else s.name for s in
             (d.name if isinstance(d.name, list) else [d.name])]
    sources = [s if isinstance(s, str) else {"name": s.name, "weight": s.weight}
               for s in (d.name if isinstance(d.name, list) else [d.name])]
    pool = load_pool(sources, data_root=d.root, size=d.size, channels=d.channels, limit=d.limit,
                     seed=cfg.seed, download=d.download, exclude=d.exclude)
    target = cfg.eval.data or next((names[k] for k, rec in enumerate(pool.sources)
                                    if rec["kind"] != "unlabelled folder"), None)
    evaluation = _eval_splits(cfg, target, pool.info) if target and cfg.eval.every else None
    if evaluation is None and cfg.eval.every:
        print("no labelled source to evaluate on (set eval.data): online evaluation is off",
              file=sys.stderr)
    return PretrainData(pool.images, pool.info, evaluation, pool)


def _eval_splits(cfg: PretrainConfig, name: str, info: DataInfo) -> ArraySplits:
    splits = load_data(name, data_root=cfg.data.root, size=info.image_size,
                       channels=info.n_channels, limit=cfg.data.limit, seed=cfg.seed,
                       download=cfg.data.download)
    if splits.info.max_value != info.max_value:
        raise UserError(f"eval.data {name!r} is {splits.info.max_value + 1}-level data but the "
                        f"pool is {info.max_value + 1}-level; evaluate on data of the same depth")
    return splits


class WeightedEpochSampler(Sampler[int]):
    """Per-epoch draws with per-image weights (:func:`ssl_ft.data.pool.epoch_indices`),
    sharded across ``world`` ranks like ``DistributedSampler``."""

    def __init__(self, weights: np.ndarray, seed: int, rank: int = 0, world: int = 1) -> None:
        self.weights, self.seed, self.rank, self.world = weights, seed, rank, world
        self.epoch = 0
        self.num_samples = len(weights) // world

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        idx = epoch_indices(self.weights, self.seed, self.epoch)
        idx = idx[: self.num_samples * self.world][self.rank::self.world]
        return iter(torch.from_numpy(idx).tolist())

    def __len__(self) -> int:
        return self.num_samples
