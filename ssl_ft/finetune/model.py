"""The model that fine-tuning trains and saves: a (truncated) backbone + a linear head.

* :func:`build_backbone` starts from an ssl_ft checkpoint, a plain torchvision/timm state dict,
  ``imagenet`` weights or ``none`` (random init), and checks that the checkpoint fits the data.
* :class:`FinetuneModel` takes images scaled to ``[0, 1]``, normalises them as the backbone was
  pretrained, and runs the frozen prefix (the units before the first trained one) under
  ``torch.no_grad()``: no activations are kept and no gradient work is done there.
* :func:`save_finetuned` / :func:`load_finetuned`: the fine-tuned model as an ssl_ft checkpoint
  (truncated backbone weights + ``extra["head"]``), loaded back without unpickling code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ssl_ft.checkpoint import load_checkpoint, read_state_dict, save_checkpoint
from ssl_ft.data import DataInfo
from ssl_ft.errors import UserError
from ssl_ft.features import per_channel
from ssl_ft.finite import check_tensor
from ssl_ft.models import DepthBackbone, SplittableBackbone, create_backbone

__all__ = ["FinetuneModel", "build_backbone", "finetuned_meta", "load_finetuned", "predict_proba",
           "save_finetuned", "unit_modules"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FinetuneModel(nn.Module):
    """``head(pool(backbone(normalise(x))))`` for ``x`` in ``[0, 1]``, shape ``(N, C, H, W)``.

    ``grad_from`` is the index of the first backbone unit that trains; units before it run
    under ``torch.no_grad()``. Set it to ``len(backbone.units)`` to run the whole backbone
    without autograd (linear probing).
    """

    def __init__(self, backbone: DepthBackbone, num_classes: int, mean: tuple[float, ...],
                 std: tuple[float, ...]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.num_features, num_classes)
        c = backbone.in_chans
        self.register_buffer("mean", per_channel(mean, c), persistent=False)
        self.register_buffer("std", per_channel(std, c), persistent=False)
        self.grad_from = 0
        self.input_unit = 0  # > 0: inputs are activations after that many units (prefix cache)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of images in ``[0, 1]`` (or, with ``input_unit = s > 0``, of the
        activations after the first ``s`` units: :mod:`ssl_ft.finetune.prefix_cache`)."""
        s = self.input_unit
        if s == 0:
            x = (x - self.mean) / self.std
        k, n = max(self.grad_from, s), len(self.backbone.units)
        if k <= 0:
            return self.backbone(x)
        if not isinstance(self.backbone, SplittableBackbone):  # timm: autograd skips frozen
            if k >= n:
                with torch.no_grad():
                    return self.backbone(x)
            return self.backbone(x)
        if k > s:
            with torch.no_grad():
                x = self.backbone.forward_units(x, s, k)
        x = self.backbone.forward_units(x, k)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def unit_modules(backbone: DepthBackbone, index: int) -> list[nn.Module]:
    """The modules of unit ``index`` (for timm backbones: the owners of its parameters)."""
    return backbone.unit_modules(backbone.units[index])


def build_backbone(checkpoint: str, info: DataInfo, *, arch: str | None = None,
                   stem: str | None = None,
                   normalization: str = "checkpoint") -> tuple[nn.Module, dict[str, Any]]:
    """The backbone to fine-tune and a description of where it came from.

    Returns ``(backbone, source)``; ``source`` has ``kind`` (ssl_ft | state_dict | imagenet |
    none), ``path``, ``method``, ``family``, ``mean``, ``std`` (the input normalisation to use).
    """
    meta: dict[str, Any] | None = None
    if checkpoint in ("none", "imagenet"):
        arch = arch or "resnet18"
        stem = stem or "standard"
        kind, weights = checkpoint, checkpoint
    else:
        path = Path(checkpoint)
        if not path.is_file():
            raise UserError(f"checkpoint {checkpoint!r} does not exist (give a file, "
                            "'imagenet' or 'none')")
        _, meta = read_state_dict(path)
        if meta is not None:
            kind = "ssl_ft"
            for key, given in (("arch", arch), ("stem", stem)):
                if given is not None and given != meta[key]:
                    raise UserError(f"checkpoint {checkpoint} was made for {key}="
                                    f"{meta[key]!r}, not {given!r}")
            arch, stem = meta["arch"], meta["stem"]
            if int(meta["in_chans"]) != info.n_channels:
                raise UserError(
                    f"checkpoint {checkpoint} takes {meta['in_chans']}-channel images but "
                    f"{info.name} has {info.n_channels}; pass --channels {meta['in_chans']}")
        else:
            if arch is None:
                raise UserError(f"{checkpoint} is a plain state dict without ssl_ft metadata; "
                                "pass --arch (e.g. resnet50)")
            kind, stem = "state_dict", stem or "standard"
        weights = str(path)
    backbone = create_backbone(arch, in_chans=info.n_channels, stem=stem, weights=weights)
    mean, std = _normalization(normalization, kind, meta, info)
    source = {"kind": kind, "path": None if kind in ("none", "imagenet") else str(checkpoint),
              "method": (meta or {}).get("method"), "family": (meta or {}).get("family"),
              "pretrain_epoch": (meta or {}).get("epoch"), "arch": arch, "stem": stem,
              "mean": list(mean), "std": list(std)}
    return backbone, source


def _normalization(how: str, kind: str, meta: dict | None,
                   info: DataInfo) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if how == "imagenet" or (how == "checkpoint" and kind == "imagenet"):
        return IMAGENET_MEAN, IMAGENET_STD
    norm = (meta or {}).get("normalization")
    if how == "checkpoint" and norm:
        return tuple(norm["mean"]), tuple(norm["std"])
    return tuple(info.mean), tuple(info.std)


def save_finetuned(path: str | os.PathLike, model: FinetuneModel, meta: dict[str, Any]) -> Path:
    """Write the fine-tuned model (truncated backbone, head, normalisation) atomically."""
    return save_checkpoint(path, model.backbone.state_dict(), finetuned_meta(model, meta),
                           extra={"head": model.head.state_dict()})


def finetuned_meta(model: FinetuneModel, meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with what :func:`load_finetuned` rebuilds ``model`` from (units, normalisation)."""
    return {**meta, "num_units": len(model.backbone.units),
            "normalization": {**meta["normalization"], "mean": model.mean.flatten().tolist(),
                              "std": model.std.flatten().tolist()}}


def load_finetuned(path: str | os.PathLike, map_location: Any = "cpu") -> FinetuneModel:
    """A fine-tuned model in eval mode, ready for :func:`predict_proba`. The metadata is in
    ``model.meta`` (classes, data, layers, strategy, ...)."""
    ckpt = load_checkpoint(path, map_location=map_location)
    meta = ckpt.meta
    if "num_units" not in meta or "head" not in ckpt.extra:
        raise UserError(f"{path} is not a fine-tuned model (no head); it may be a pretraining "
                        "checkpoint: fine-tune it with tools/finetune.py")
    backbone = create_backbone(meta["arch"], in_chans=int(meta["in_chans"]), stem=meta["stem"])
    backbone.truncate(int(meta["num_units"]))
    backbone.load_state_dict(ckpt.backbone)
    norm = meta["normalization"]
    model = FinetuneModel(backbone, len(meta["label_names"]), tuple(norm["mean"]),
                          tuple(norm["std"]))
    model.head.load_state_dict(ckpt.extra["head"])
    model.meta = meta
    return model.eval()


@torch.no_grad()
def predict_proba(model: nn.Module, images: np.ndarray | torch.Tensor, *, max_value: int,
                  batch_size: int = 256, device: torch.device | str = "cpu") -> np.ndarray:
    """Class probabilities ``(N, num_classes)`` for raw images ``(N, C, H, W)`` (``uint8`` /
    ``uint16`` arrays, scaled by ``max_value``) from any model that takes images in ``[0, 1]``
    and has a linear ``head`` (:class:`FinetuneModel`, the fusion's ``FusionNet``). The model
    is put in eval mode."""
    model.eval()
    model.to(device)
    out = []
    for i in range(0, len(images), batch_size):
        chunk = images[i:i + batch_size]
        x = torch.as_tensor(np.asarray(chunk, dtype=np.float32)).to(device) / max_value
        out.append(torch.softmax(model(x).float(), 1).cpu())
    if not out:
        return np.zeros((0, model.head.out_features), dtype=np.float32)
    probs = torch.cat(out)
    check_tensor(probs, "predicted probabilities")
    return probs.numpy()
