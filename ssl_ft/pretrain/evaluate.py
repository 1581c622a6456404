"""Online evaluation of frozen features: weighted kNN or a logistic-regression probe.

The kNN classifier is the temperature-weighted vote of Wu, Xiong, Yu & Lin, "Unsupervised
Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018 (k = 20, T = 0.07 by
default), the monitor most SSL codebases (e.g. lightly's benchmarks) use during pretraining.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ssl_ft.finite import check_tensor
from ssl_ft.metrics import classification_metrics
from ssl_ft.runtime import autocast

__all__ = ["extract_features", "extract_unit_features", "knn_probs", "linear_probe_probs",
           "padded_proba", "probe"]


def _normalized_batches(images: np.ndarray, *, max_value: int, mean: Sequence[float],
                        std: Sequence[float], device: torch.device,
                        batch_size: int) -> Iterator[torch.Tensor]:
    """``(x / max_value - mean) / std`` of ``(N, C, H, W)`` integer images, batch by batch."""
    c = images.shape[1]
    m = torch.tensor(list(mean), device=device).view(1, c, 1, 1)
    s = torch.tensor(list(std), device=device).view(1, c, 1, 1)
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


def knn_probs(
    bank: torch.Tensor, bank_labels: torch.Tensor, query: torch.Tensor, num_classes: int,
    k: int = 20, temperature: float = 0.07,
) -> np.ndarray:
    """Class scores (rows sum to 1) of a cosine-similarity kNN with exp(sim / T) weights."""
    bank = nn.functional.normalize(bank, dim=1)
    query = nn.functional.normalize(query, dim=1)
    k = min(k, len(bank))
    out = []
    for i in range(0, len(query), 1024):
        sim = query[i : i + 1024] @ bank.T
        w, idx = sim.topk(k, dim=1)
        w = (w / temperature).exp()
        onehot = nn.functional.one_hot(bank_labels[idx], num_classes).float()
        scores = (onehot * w.unsqueeze(-1)).sum(1)
        out.append(scores / scores.sum(1, keepdim=True))
    return torch.cat(out).numpy()


def linear_probe_probs(train: torch.Tensor, train_labels: torch.Tensor, query: torch.Tensor,
                       num_classes: int, max_iter: int = 1000) -> np.ndarray:
    """Class probabilities of a standardised logistic-regression probe (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    clf.fit(train.numpy(), train_labels.numpy())
    return padded_proba(clf, query.numpy(), num_classes)


def padded_proba(clf, x: np.ndarray, num_classes: int) -> np.ndarray:
    """``clf.predict_proba(x)`` widened to ``num_classes`` columns (classes absent from the
    classifier's training labels get probability 0)."""
    probs = np.zeros((len(x), num_classes))
    probs[:, clf.classes_] = clf.predict_proba(x)
    return probs


def probe(
    method: str, train: torch.Tensor, train_labels: np.ndarray, query: torch.Tensor,
    query_labels: np.ndarray, *, task: str, num_classes: int, k: int = 20,
    temperature: float = 0.07,
) -> dict[str, float]:
    """AUC and ACC of a ``knn`` or ``linear`` probe on frozen features."""
    tl = torch.as_tensor(train_labels, dtype=torch.long)
    if method == "knn":
        probs = knn_probs(train, tl, query, num_classes, k, temperature)
    else:
        probs = linear_probe_probs(train, tl, query, num_classes)
    m = classification_metrics(query_labels, probs, task)
    return {"auc": m["auc"], "acc": m["acc"]}
