"""Linear probe on frozen features: how good is a pretrained backbone without fine-tuning?

The standard SSL evaluation protocol (e.g. Chen et al., SimCLR, ICML 2020; Kolesnikov, Zhai &
Beyer, CVPR 2019): features of the frozen backbone, a logistic-regression classifier on the train
split, its inverse regularisation ``C`` chosen on the validation AUC, test AUC and ACC reported
with MedMNIST conventions.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_ft.checkpoint import read_state_dict
from ssl_ft.data import load_data
from ssl_ft.data.checks import check_learnable
from ssl_ft.errors import UserError
from ssl_ft.finetune.model import build_backbone
from ssl_ft.leakage import guard_checkpoint
from ssl_ft.metrics import classification_metrics
from ssl_ft.models import DepthMap, check_input_size
from ssl_ft.pretrain.evaluate import extract_features, padded_proba

__all__ = ["C_GRID", "ProbeResult", "fit_probe", "head_from_probe", "linear_probe",
           "probe_features"]

C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)


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
    guard_checkpoint(str(checkpoint) if checkpoint else None, splits.images, target=info.name,
                     allow=allow_overlap,
                     warn=lambda msg: print(f"warning: {msg}", file=sys.stderr))
    torch.manual_seed(seed)
    backbone, source = build_backbone(str(checkpoint) if checkpoint else "none", info,
                                      arch=None if meta else arch, stem=stem)
    arch = source["arch"]
    check_input_size(backbone, info.image_size)
    DepthMap.from_backbone(backbone).select("0-100", truncate).apply(backbone)
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


def probe_features(feats: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], *,
                   task: str, num_classes: int, label_names: Sequence[str] | None = None,
                   c_grid: Sequence[float] = C_GRID) -> dict[str, Any]:
    """The probe on given features: z-score with the train statistics, :func:`fit_probe`, and
    the metrics of the chosen classifier on ``val`` and, when ``feats`` has it, ``test``.

    Returns ``{"C", "val", "test" (None without a test split), "converged"}``; ``converged`` is
    False when the chosen fit stopped at its iteration limit."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(feats["train"])
    x = {k: scaler.transform(v) for k, v in feats.items()}
    clf, c, val = fit_probe(x["train"], labels["train"], x["val"], labels["val"], task=task,
                            num_classes=num_classes, c_grid=c_grid)
    test = None
    if "test" in x:
        test = classification_metrics(labels["test"], padded_proba(clf, x["test"], num_classes),
                                      task, list(label_names) if label_names else None)
    return {"C": c, "val": val, "test": test, "classifier": clf, "scaler": scaler,
            "converged": bool(np.max(clf.n_iter_) < clf.max_iter)}


def head_from_probe(head: torch.nn.Linear, clf, num_classes: int, scaler=None) -> None:
    """Copy a scikit-learn logistic regression into a softmax head (binary: logits +-z/2).
    With the ``scaler`` (a fitted ``StandardScaler``) the classifier was fitted on z-scored
    features and the head takes the raw ones: the standardisation is folded into it."""
    coef, bias = clf.coef_, clf.intercept_
    if scaler is not None:
        coef = coef / scaler.scale_
        bias = bias - coef @ scaler.mean_
    w = np.zeros((num_classes, coef.shape[1]))
    b = np.full(num_classes, -10.0)
    if len(clf.classes_) == 2 and coef.shape[0] == 1:
        w[clf.classes_[0]], w[clf.classes_[1]] = -coef[0] / 2, coef[0] / 2
        b[clf.classes_[0]], b[clf.classes_[1]] = -bias[0] / 2, bias[0] / 2
    else:
        w[clf.classes_], b[clf.classes_] = coef, bias
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(w))
        head.bias.copy_(torch.as_tensor(b))


def _existing(checkpoint: str | os.PathLike) -> str | os.PathLike:
    if not Path(checkpoint).is_file():
        raise UserError(f"checkpoint {str(checkpoint)!r} does not exist (give a file, or 'none' "
                        "with --arch for a random init)")
    return checkpoint


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
              task: str, num_classes: int,
              c_grid: Sequence[float] = C_GRID) -> tuple[Any, float, dict]:
    """Logistic regression on ``x_train`` for each ``C`` in ``c_grid``; returns the classifier
    with the best validation AUC, its ``C`` and its validation metrics."""
    from sklearn.linear_model import LogisticRegression

    best = None
    for c in c_grid:
        clf = LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train)
        val = classification_metrics(y_val, padded_proba(clf, x_val, num_classes), task)
        if best is None or val["auc"] > best[2]["auc"]:
            best = (clf, float(c), val)
    return best
