"""Frozen features and the linear probe on them: one code path for every linear head.

* :func:`extract_features` / :func:`extract_unit_features`: pooled features of a frozen backbone
  (at its truncation depth, or after several units in one pass), computed once per split.
* :func:`fit_probe` / :func:`probe_features`: the standard SSL evaluation protocol (Chen et al.,
  SimCLR, ICML 2020; Kolesnikov, Zhai & Beyer, CVPR 2019): features z-scored with the train
  statistics, an L-BFGS logistic regression fitted to convergence on the train split for each
  inverse regularisation ``C`` of a grid, the ``C`` with the best validation AUC kept.
* :func:`head_from_probe` writes a fitted probe (and its standardisation, folded into the weights
  and bias) into an ``nn.Linear`` head, so the model stays an ordinary backbone + linear head.
* :func:`fit_linear_head`: all of it for a model's head: the ``lp`` strategy, the LP phase of
  ``lp-ft`` (Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform
  Out-of-Distribution", ICLR 2022), the head the Auto-RGN/SNR evidence measures gradients with.

Users: ``tools/probe.py`` (:mod:`ssl_ft.probe`), the depth probe, the fusion head
(:mod:`ssl_ft.ensemble`), fine-tuning and the pretraining monitor (:mod:`ssl_ft.pretrain.evaluate`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ssl_ft.finite import check_tensor
from ssl_ft.metrics import classification_metrics
from ssl_ft.runtime import autocast, blas_threads

__all__ = ["C_GRID", "extract_features", "extract_unit_features", "fit_linear_head", "fit_probe",
           "per_channel",
           "head_from_probe", "padded_proba", "probe_features"]

#: the inverse regularisation strengths tried by the probe (one fit each, best validation AUC)
C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0)


def per_channel(values: Sequence[float], c: int) -> torch.Tensor:
    """``(1, c, 1, 1)`` normalisation values; another number of values is averaged to ``c``."""
    v = [float(x) for x in values]
    if len(v) != c:
        v = [sum(v) / len(v)] * c
    return torch.tensor(v).view(1, c, 1, 1)


def _normalized_batches(images: np.ndarray, *, max_value: int, mean: Sequence[float],
                        std: Sequence[float], device: torch.device,
                        batch_size: int) -> Iterator[torch.Tensor]:
    """``(x / max_value - mean) / std`` of ``(N, C, H, W)`` integer images, batch by batch.
    A ``mean``/``std`` of another length than ``C`` (ImageNet's three values on grey images) is
    averaged to ``C`` values, as :class:`ssl_ft.finetune.model.FinetuneModel` does."""
    c = images.shape[1]
    m = per_channel(mean, c).to(device)
    s = per_channel(std, c).to(device)
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).to(device)
        yield (x.float() / max_value - m) / s


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    images: np.ndarray,
    *,
    max_value: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 512,
) -> torch.Tensor:
    """Pooled backbone features of ``(N, C, H, W)`` integer images, float32 on the CPU."""
    was_training = backbone.training
    backbone.eval()
    out = []
    for x in _normalized_batches(images, max_value=max_value, mean=mean, std=std, device=device,
                                 batch_size=batch_size):
        with autocast(device, precision):
            out.append(backbone(x).float().cpu())
    backbone.train(was_training)
    features = torch.cat(out) if out else torch.empty(0)
    check_tensor(features, "features")  # before a probe or a cache sees them
    return features


@torch.no_grad()
def extract_unit_features(
    backbone: nn.Module,
    images: np.ndarray,
    units: Sequence[int],
    *,
    max_value: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    precision: str = "fp32",
    batch_size: int = 512,
) -> dict[int, torch.Tensor]:
    """Globally average-pooled feature maps after each of the backbone ``units`` (0-based
    indices), all from **one** pass per batch (``backbone.forward_intermediates``, timm's
    features API); ``{unit: (N, channels)}``, float32 on the CPU. The pooled output of unit
    ``i`` is what :func:`extract_features` gives for the backbone truncated after unit ``i``
    (timm backbones: before timm's final norm/pooling of the whole network)."""
    units = sorted(set(units))
    was_training = backbone.training
    backbone.eval()
    out: dict[int, list[torch.Tensor]] = {u: [] for u in units}
    for x in _normalized_batches(images, max_value=max_value, mean=mean, std=std, device=device,
                                 batch_size=batch_size):
        with autocast(device, precision):
            maps = backbone.forward_intermediates(x, units)
        for u, fmap in zip(units, maps, strict=True):
            out[u].append(torch.flatten(nn.functional.adaptive_avg_pool2d(fmap.float(), 1),
                                        1).cpu())
    backbone.train(was_training)
    return {u: torch.cat(v) if v else torch.empty(0) for u, v in out.items()}


def padded_proba(clf, x: np.ndarray, num_classes: int) -> np.ndarray:
    """``clf.predict_proba(x)`` widened to ``num_classes`` columns (classes absent from the
    classifier's training labels get probability 0)."""
    probs = np.zeros((len(x), num_classes))
    probs[:, clf.classes_] = clf.predict_proba(x)
    return probs


def fit_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
              task: str, num_classes: int,
              c_grid: Sequence[float] = C_GRID) -> tuple[Any, float, dict]:
    """Logistic regression (scikit-learn, L-BFGS, up to 2000 iterations) on ``x_train`` for
    each ``C`` in ``c_grid``; returns the classifier with the best validation AUC, its ``C``
    and its validation metrics (ties: the smaller ``C``, the first in the grid)."""
    from sklearn.linear_model import LogisticRegression

    best = None
    for c in c_grid:
        with blas_threads(1):  # 5.6x faster than two BLAS threads here (runtime.blas_threads)
            clf = LogisticRegression(C=c, max_iter=2000).fit(x_train, y_train)
        val = classification_metrics(y_val, padded_proba(clf, x_val, num_classes), task)
        if best is None or val["auc"] > best[2]["auc"]:
            best = (clf, float(c), val)
    return best


def probe_features(feats: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], *,
                   task: str, num_classes: int, label_names: Sequence[str] | None = None,
                   c_grid: Sequence[float] = C_GRID, standardize: bool = True) -> dict[str, Any]:
    """The probe on given features: z-score with the train statistics (``standardize``; off
    for features normalised already, e.g. the fusion's blocks), :func:`fit_probe`, and the
    metrics of the chosen classifier on ``val`` and, when ``feats`` has it, ``test``.

    Returns ``{"C", "val", "test" (None without a test split), "converged", "classifier",
    "scaler" (None without standardisation)}``; ``converged`` is False when the chosen fit
    stopped at its iteration limit."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(feats["train"]) if standardize else None
    x = {k: scaler.transform(v) if scaler else v for k, v in feats.items()}
    clf, c, val = fit_probe(x["train"], labels["train"], x["val"], labels["val"], task=task,
                            num_classes=num_classes, c_grid=c_grid)
    test = None
    if "test" in x:
        test = classification_metrics(labels["test"], padded_proba(clf, x["test"], num_classes),
                                      task, list(label_names) if label_names else None)
    return {"C": c, "val": val, "test": test, "classifier": clf, "scaler": scaler,
            "converged": bool(np.max(clf.n_iter_) < clf.max_iter)}


def head_from_probe(head: nn.Linear, clf, num_classes: int, scaler=None) -> None:
    """Copy a scikit-learn logistic regression into a softmax head (binary: logits +-z/2).
    With the ``scaler`` (a fitted ``StandardScaler``) the classifier was fitted on z-scored
    features and the head takes the raw ones: the standardisation is folded into it
    (``w' = w / s``, ``b' = b - w' . m``)."""
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


def fit_linear_head(backbone: nn.Module, head: nn.Linear, splits: Any, *,
                    mean: Sequence[float], std: Sequence[float], device: torch.device,
                    precision: str = "fp32", c_grid: Sequence[float] = C_GRID) -> dict[str, Any]:
    """Fit ``head`` as the converged logistic probe of the frozen ``backbone``'s pooled
    features (train split; ``C`` chosen on the val split; ``splits`` is an
    :class:`~ssl_ft.data.ArraySplits`, its test split never read). The backbone runs in eval
    mode without autograd, so neither its weights nor its BatchNorm statistics change.

    Returns what was done: ``method``, ``C``, the grid, ``n_features``, ``n_train``,
    ``converged``, the probe's ``val`` AUC/ACC, and the seconds of feature extraction
    (``extract_seconds``), of the fits (``fit_seconds``) and in all (``seconds``)."""
    info = splits.info
    t0 = time.perf_counter()
    feats = {s: extract_features(backbone, splits.images[s], max_value=info.max_value,
                                 mean=mean, std=std, device=device, precision=precision).numpy()
             for s in ("train", "val")}
    t1 = time.perf_counter()
    res = probe_features(feats, {s: splits.labels[s] for s in ("train", "val")}, task=info.task,
                         num_classes=info.num_classes, c_grid=c_grid)
    head_from_probe(head, res["classifier"], info.num_classes, res["scaler"])
    t2 = time.perf_counter()
    return {"method": "L-BFGS logistic regression (scikit-learn, max_iter 2000) on z-scored "
                      "frozen features, C by val AUC", "C": res["C"],
            "c_grid": [float(c) for c in c_grid],
            "n_features": int(feats["train"].shape[1]), "n_train": int(len(feats["train"])),
            "converged": res["converged"],
            "val": {"auc": res["val"]["auc"], "acc": res["val"]["acc"]},
            "extract_seconds": t1 - t0, "fit_seconds": t2 - t1, "seconds": t2 - t0}
