"""Online evaluation of frozen features: weighted kNN or a logistic-regression probe.

The kNN classifier is the temperature-weighted vote of Wu, Xiong, Yu & Lin, "Unsupervised
Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018 (k = 20, T = 0.07 by
default), the monitor most SSL codebases (e.g. lightly's benchmarks) use during pretraining.
The features come from :func:`ssl_ft.features.extract_features`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ssl_ft.features import padded_proba
from ssl_ft.metrics import classification_metrics
from ssl_ft.runtime import blas_threads

__all__ = ["knn_probs", "linear_probe_probs", "probe"]


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
    with blas_threads(1):  # many small matrix products: one BLAS thread is fastest
        clf.fit(train.numpy(), train_labels.numpy())
    return padded_proba(clf, query.numpy(), num_classes)


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
