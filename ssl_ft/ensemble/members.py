"""The models of a fusion, each cut at its own depth, and their cached frozen features.

Khan & Fang (arXiv 2307.10915) fuse a contrastive and a restorative model through their
*intermediate* features: each model is truncated where it transfers best (by default the
contrastive one at the end of its 2nd quarter, 50 %, the restorative one at the end of its 3rd,
75 %), its pooled features are normalised per model, and the blocks are concatenated.

Frozen features are computed once per (checkpoint contents, depth, data, split indices,
normalisation) and kept as ``.npz`` files in the cache folder; a changed checkpoint file has
another SHA-256 and so another key.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ssl_ft.checkpoint import read_state_dict
from ssl_ft.checkpoint._files import atomic_write, stale_temp_files
from ssl_ft.data import ArraySplits, load_data
from ssl_ft.data.checks import check_learnable
from ssl_ft.errors import UserError
from ssl_ft.features import extract_features
from ssl_ft.finetune.model import build_backbone
from ssl_ft.models import check_input_size
from ssl_ft.models.depth import DepthMap, Selection
from ssl_ft.runtime import cache_dir

__all__ = ["DEFAULT_DEPTH", "Member", "block_normalize", "cache_dir", "file_sha256", "peek_meta",
           "load_members", "member_features"]

DEFAULT_DEPTH = {"contrastive": 50.0, "restorative": 75.0}
SPLITS = ("train", "val", "test")


@dataclass
class Member:
    """One model of the fusion: its truncated backbone and where it came from."""

    name: str
    checkpoint: str
    backbone: nn.Module
    source: dict[str, Any]
    depth: float
    selection: Selection
    splits: ArraySplits
    key: str = ""
    features: dict[str, np.ndarray] = field(default_factory=dict)
    depth_auto: dict[str, Any] | None = None  # the evidence of --depth auto

    @property
    def dim(self) -> int:
        return int(self.backbone.num_features)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "checkpoint": self.checkpoint, "method": self.source["method"],
                "family": self.source["family"], "arch": self.source["arch"],
                "depth": self.depth, "layers": self.selection.layers_str if self.trained else None,
                "dim": self.dim,
                "trainable_params": self.selection.trainable_params if self.trained else 0,
                **({"depth_auto": self.depth_auto} if self.depth_auto else {})}

    @property
    def trained(self) -> bool:
        return any(s == "trained" for s in self.selection.status)


_HASHES: dict[tuple, str] = {}


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes (memoised by path, size and modification time)."""
    st = os.stat(path)
    memo = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if memo not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[memo] = h.hexdigest()
    return _HASHES[memo]


def peek_meta(checkpoint: str) -> dict[str, Any]:
    """An ssl_ft checkpoint's metadata (``{}`` for none/imagenet/plain state dicts)."""
    if checkpoint in ("none", "imagenet"):
        return {}
    if not Path(checkpoint).is_file():
        raise UserError(f"checkpoint {checkpoint!r} does not exist (give a file, 'imagenet' "
                        "or 'none')")
    return read_state_dict(checkpoint)[1] or {}


def _per_model(values: list, n: int, what: str, default: list) -> list:
    if not values:
        return default
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise UserError(f"{len(values)} {what} values for {n} checkpoints; give one for all or "
                        "one per checkpoint")
    return list(values)


def load_members(cfg) -> list[Member]:
    """Build every model of ``cfg`` (an :class:`~ssl_ft.ensemble.EnsembleConfig`) on its data."""
    n = len(cfg.checkpoints)
    if n < 2:
        raise UserError(f"fusion needs at least two checkpoints, got {n}")
    metas = [peek_meta(c) for c in cfg.checkpoints]
    sizes = {int(m["image_size"]) for m in metas if "image_size" in m}
    if len(sizes) > 1 and cfg.size is None:
        shown = ", ".join(f"{c} ({m['image_size']} px)" for c, m in zip(cfg.checkpoints, metas,
                                                                       strict=True) if m)
        raise UserError(f"the checkpoints were pretrained at different image sizes ({shown}); "
                        "pass --size to use one size for all")
    families = [m.get("family") for m in metas]
    depths = _per_model(cfg.depths, n, "--depth",
                        [DEFAULT_DEPTH.get(f, 100.0) for f in families])
    layers = _per_model(cfg.layers, n, "--layers",
                        ["0-100" if cfg.strategy != "lp" else None] * n)
    data: dict[int | None, ArraySplits] = {}
    members, names = [], []
    for ck, meta, depth, lay in zip(cfg.checkpoints, metas, depths, layers, strict=True):
        chans = int(meta["in_chans"]) if "in_chans" in meta else None
        if chans not in data:
            data[chans] = load_data(cfg.data, data_root=cfg.data_root, size=cfg.size,
                                    channels=chans, label_fraction=cfg.label_fraction,
                                    limit=cfg.limit, seed=cfg.seed, download=cfg.download)
            check_learnable(data[chans])
        splits = data[chans]
        torch.manual_seed(cfg.seed)  # random-init members are reproducible
        # --arch is for the models without metadata; ssl_ft checkpoints say their own
        backbone, source = build_backbone(ck, splits.info, arch=None if meta else cfg.arch)
        dm = DepthMap.from_backbone(backbone)
        auto = None
        if depth == "auto":  # the depth whose linear probe is best on val (train/val only)
            from ssl_ft.auto_evidence import choose_depth

            depth, auto = choose_depth(backbone, splits, dm, source, seed=cfg.seed)
        selection = dm.select(lay or "0-100", depth, allow_empty=True)
        if lay is None:  # frozen
            selection = Selection(dm, selection.layers, selection.truncate,
                                  tuple("dropped" if s == "dropped" else "frozen"
                                        for s in selection.status))
        selection.apply(backbone)
        check_input_size(backbone, splits.info.image_size)
        name = source["method"] or source["kind"]
        names.append(name)
        if names.count(name) > 1:
            name = f"{name}{names.count(name)}"
        key = _feature_key(ck, source, depth, splits, cfg.seed)
        members.append(Member(name, ck, backbone, source, float(depth), selection, splits, key,
                              depth_auto=auto))
    labels = [m.splits.labels for m in members]
    if any(not np.array_equal(lab[s], labels[0][s]) for lab in labels for s in SPLITS):
        raise UserError("the models see different labels; this is a bug in the data loading")
    return members


def _feature_key(checkpoint: str, source: dict, depth: float, splits: ArraySplits,
                 seed: int) -> str:
    info = splits.info
    ident = {"weights": file_sha256(checkpoint) if source["path"] else source["kind"],
             "seed": seed if source["kind"] == "none" else None, "arch": source["arch"],
             "stem": source["stem"], "depth": depth, "mean": source["mean"], "std": source["std"],
             "data": info.fingerprint, "size": info.image_size, "channels": info.n_channels,
             "indices": {s: hashlib.sha256(splits.indices[s].tobytes()).hexdigest()
                         for s in SPLITS}}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def member_features(member: Member, cache: Path, device: torch.device,
                    precision: str) -> dict[str, np.ndarray]:
    """Pooled frozen features of every split, from the cache when they are there."""
    path = cache / f"{member.key}.npz"
    if path.is_file():
        with np.load(path) as npz:
            member.features = {s: npz[s] for s in SPLITS}
        print(f"{member.name}: features from the cache {path}", file=sys.stderr)
        return member.features
    info = member.splits.info
    member.backbone.to(device)
    member.features = {
        s: extract_features(member.backbone, member.splits.images[s], max_value=info.max_value,
                            mean=member.source["mean"], std=member.source["std"], device=device,
                            precision=precision).numpy()
        for s in SPLITS}
    cache.mkdir(parents=True, exist_ok=True)
    for stale in stale_temp_files(cache):  # left by a process killed while it wrote there
        stale.unlink(missing_ok=True)
    atomic_write(path, lambda file: np.savez(file, **member.features))
    print(f"{member.name}: features computed ({member.dim} at {member.depth:g} %), cached in "
          f"{path}", file=sys.stderr)
    return member.features


def block_normalize(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-model normalisation: z-score each feature with train statistics, then divide the
    block by sqrt(dim) so that every model's block has the same total variance (1) however wide
    it is. Returns ``(shift, scale)`` with ``x_norm = (x - shift) * scale``."""
    mean = train.mean(0)
    std = train.std(0)
    std[std < 1e-8] = 1.0
    return mean, 1.0 / (std * np.sqrt(train.shape[1]))
