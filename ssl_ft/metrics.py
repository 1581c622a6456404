"""Classification metrics with MedMNIST conventions (Yang et al., Scientific Data 2023).

AUC is the positive-class AUC for binary tasks and the one-vs-rest mean over classes otherwise;
ACC is argmax accuracy. Both come from ``medmnist.evaluator`` so numbers compare with the
published MedMNIST v2 tables.
"""

from __future__ import annotations

import numpy as np
from medmnist.evaluator import getAUC

__all__ = ["classification_metrics"]


def classification_metrics(
    labels: np.ndarray, probs: np.ndarray, task: str, label_names: list[str] | None = None
) -> dict:
    """``{"auc", "acc", "per_class": {name: {"auc", "recall", "n"}}, "confusion": [[...]]}``.

    ``probs`` is ``(N, num_classes)``; rows need not sum to one (scores are fine for AUC).
    A class absent from ``labels`` gets ``auc`` = None.
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n_classes = probs.shape[1]
    names = label_names or [str(i) for i in range(n_classes)]
    pred = probs.argmax(1)
    present = np.unique(labels)
    if len(present) < 2:
        auc = float("nan")
    elif task == "binary-class" or len(present) == n_classes:
        auc = float(getAUC(labels, probs, task))
    else:  # a class missing from a small split: mean AUC over the present classes
        auc = float(np.mean([_binary_auc(labels == c, probs[:, c]) for c in present]))
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = {}
    for c, name in enumerate(names):
        mask = labels == c
        per_class[name] = {
            "n": int(mask.sum()),
            "recall": float((pred[mask] == c).mean()) if mask.any() else None,
            "auc": _binary_auc(mask, probs[:, c]) if 0 < mask.sum() < len(labels) else None,
        }
    return {
        "auc": auc,
        "acc": float((pred == labels).mean()),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive.astype(int), score))
