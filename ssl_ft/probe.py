"""Linear probe on frozen features: how good is a pretrained backbone without fine-tuning?

The standard SSL evaluation protocol (e.g. Chen et al., SimCLR, ICML 2020; Kolesnikov, Zhai &
Beyer, CVPR 2019): features of the frozen backbone, a logistic-regression classifier on the train
split, its inverse regularisation ``C`` chosen on the validation AUC, test AUC and ACC reported
with MedMNIST conventions. The probe itself is :func:`ssl_ft.features.probe_features`, the
same code that fits the head of the ``lp`` and ``lp-ft`` fine-tuning strategies and of the fusion.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ssl_ft.checkpoint import read_state_dict
from ssl_ft.data import load_data
from ssl_ft.data.checks import check_learnable
from ssl_ft.errors import UserError
from ssl_ft.features import (  # noqa: F401  (fit_probe, head_from_probe: re-exported)
    C_GRID,
    extract_features,
    fit_probe,
    head_from_probe,
    probe_features,
)
from ssl_ft.finetune.model import build_backbone
from ssl_ft.leakage import guard_checkpoint, own_train_split
from ssl_ft.models import DepthMap, check_input_size

__all__ = ["C_GRID", "ProbeResult", "fit_probe", "head_from_probe", "linear_probe",
           "probe_features"]


@dataclass
class ProbeResult:
    checkpoint: str
    arch: str
    data: str
    truncate: float
    C: float
    val: dict
    test: dict
    seed: int
    image_size: int = 0
    channels: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def linear_probe(
    checkpoint: str | os.PathLike | None,
    data: str,
    *,
    arch: str | None = None,
    stem: str | None = None,
    data_root: str | None = None,
    truncate: float = 100,
    seed: int = 0,
    label_fraction: float = 1.0,
    limit: int | None = None,
    size: int | None = None,
    channels: int | None = None,
    c_grid: Sequence[float] = C_GRID,
    device: str = "cpu",
    allow_overlap: bool = False,
) -> ProbeResult:
    """Probe a checkpoint (or, with ``checkpoint=None``, a randomly initialised ``arch``
    seeded by ``seed``) on ``data``. The checkpoint is an ssl_ft checkpoint or any file
    :func:`~ssl_ft.checkpoint.read_state_dict` reads (plain torchvision/timm state dicts,
    wrapped ones, safetensors), which then needs ``arch``. ``truncate`` probes the pooled
    output at that depth; ``size`` and ``channels`` resize / convert the images as in
    fine-tuning (default: the data's size, the checkpoint's channels, else the data's)."""
    meta = (read_state_dict(_existing(checkpoint))[1] or {}) if checkpoint else {}
    if not meta and arch is None:
        what = f"{checkpoint} is a plain state dict without ssl_ft metadata" if checkpoint \
            else "a probe without a checkpoint"
        raise UserError(f"{what}; it needs an arch (--arch, e.g. resnet18)")
    if meta and arch is not None and arch != meta["arch"]:
        raise UserError(f"checkpoint {checkpoint} holds a {meta['arch']}, not a {arch}")
    splits = load_data(data, data_root=data_root, label_fraction=label_fraction, limit=limit,
                       seed=seed, size=size,
                       channels=channels or meta.get("in_chans"))
    check_learnable(splits)
    info = splits.info
    torch.manual_seed(seed)
    backbone, source = build_backbone(str(checkpoint) if checkpoint else "none", info,
                                      arch=None if meta else arch, stem=stem)
    arch = source["arch"]
    check_input_size(backbone, info.image_size)
    DepthMap.from_backbone(backbone).select("0-100", truncate).apply(backbone)
    # after the cheaper checks, so that a bad flag is the probe's one line of output
    whole = own_train_split(label_fraction, data, data_root=data_root, limit=limit, seed=seed,
                            size=size, channels=channels or meta.get("in_chans"))
    guard_checkpoint(str(checkpoint) if checkpoint else None, splits.images, target=info.name,
                     allow=allow_overlap, own_train=whole,
                     warn=lambda msg: print(f"warning: {msg}", file=sys.stderr))
    norm = {"mean": source["mean"], "std": source["std"]}
    dev = torch.device(device)
    backbone.to(dev)
    feats = {
        split: extract_features(backbone, splits.images[split], max_value=info.max_value,
                                mean=norm["mean"], std=norm["std"], device=dev).numpy()
        for split in ("train", "val", "test")
    }
    res = probe_features(feats, splits.labels, task=info.task, num_classes=info.num_classes,
                         label_names=list(info.label_names), c_grid=c_grid)
    val = res["val"]
    return ProbeResult(str(checkpoint) if checkpoint else "none", arch, info.name, float(truncate),
                       res["C"], {"auc": val["auc"], "acc": val["acc"]}, res["test"], seed,
                       int(info.image_size), int(info.n_channels))


def _existing(checkpoint: str | os.PathLike) -> str | os.PathLike:
    if not Path(checkpoint).is_file():
        raise UserError(f"checkpoint {str(checkpoint)!r} does not exist (give a file, or 'none' "
                        "with --arch for a random init)")
    return checkpoint
