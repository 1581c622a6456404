"""ssl_ft.metrics on hand-made scores whose AUC, ACC and per-class values are known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ssl_ft.metrics import classification_metrics


def test_binary_auc_is_the_positive_class_rank_statistic():
    labels = np.array([0, 0, 1, 1])
    # positive-class scores 0.1, 0.4 (negatives) and 0.35, 0.8 (positives): of the 4 pairs,
    # (0.35 > 0.1), (0.8 > 0.1), (0.8 > 0.4) are ordered right, (0.35 < 0.4) wrong -> 3/4
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    m = classification_metrics(labels, probs, "binary-class", ["neg", "pos"])
    assert m["auc"] == pytest.approx(0.75)
    assert m["acc"] == pytest.approx(0.75)  # argmax: [0, 0, 0, 1]
    assert m["confusion"] == [[2, 0], [1, 1]]
    assert m["per_class"]["pos"] == {"n": 2, "recall": 0.5, "auc": pytest.approx(0.75)}
    # class "neg" scored by its own column: the same pairs reversed -> also 3/4
    assert m["per_class"]["neg"] == {"n": 2, "recall": 1.0, "auc": pytest.approx(0.75)}


def test_multiclass_auc_is_the_one_vs_rest_mean():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.2, 0.6, 0.2],
                      [0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    m = classification_metrics(labels, probs, "multi-class")
    want = np.mean([roc_auc_score(labels == c, probs[:, c]) for c in range(3)])
    assert m["auc"] == pytest.approx(want)
    # by hand: class 0 (0.7, 0.3 vs 0.2, 0.5, 0.1, 0.3): 4 + 2.5 of 8 pairs (a tie = 1/2);
    # class 1 (0.6, 0.3 vs 0.2, 0.4, 0.1, 0.3): 4 + 2.5; class 2 (0.8, 0.4 vs 0.1, 0.3, 0.2,
    # 0.2): 4 + 4
    assert want == pytest.approx((6.5 / 8 + 6.5 / 8 + 8 / 8) / 3)
    assert m["acc"] == pytest.approx(4 / 6)  # argmax [0, 1, 1, 0, 2, 2]
    assert m["confusion"] == [[1, 1, 0], [1, 1, 0], [0, 0, 2]]
    assert [m["per_class"][str(c)]["recall"] for c in range(3)] == [0.5, 0.5, 1.0]


def test_missing_class_auc_reads_each_present_class_by_its_id():
    # a 3-class task whose split holds no class 0: each present class is ranked perfectly by
    # its own column (1 and 2); the columns 0 and 1 (the positions among present classes)
    # rank them backwards
    labels = np.array([1, 1, 2, 2])
    probs = np.array([[0.0, 0.9, 0.1], [0.1, 0.8, 0.1], [0.3, 0.1, 0.6], [0.4, 0.2, 0.4]])
    m = classification_metrics(labels, probs, "multi-class", ["a", "b", "c"])
    assert m["auc"] == pytest.approx(1.0)
    assert m["per_class"]["a"] == {"n": 0, "recall": None, "auc": None}
    assert m["per_class"]["b"]["auc"] == pytest.approx(1.0)
    assert m["per_class"]["c"]["auc"] == pytest.approx(1.0)
    # the mean is over the present classes only: class 1 at 1.0, class 2 at 3/4 (its scores
    # 0.6 and 0.1 against 0.1 and 0.1: two pairs right, two ties)
    probs[3] = [0.4, 0.2, 0.1]
    m = classification_metrics(labels, probs, "multi-class")
    assert m["auc"] == pytest.approx((1.0 + 0.75) / 2)


def test_a_one_class_split_has_no_auc_but_an_accuracy():
    m = classification_metrics(np.array([1, 1, 1]), np.array([[0.2, 0.8], [0.6, 0.4],
                                                              [0.1, 0.9]]), "binary-class")
    assert math.isnan(m["auc"])
    assert m["acc"] == pytest.approx(2 / 3)
    assert m["per_class"]["1"] == {"n": 3, "recall": pytest.approx(2 / 3), "auc": None}
    assert m["confusion"] == [[0, 0], [1, 2]]


def test_binary_task_with_all_classes_matches_medmnist_evaluator():
    from medmnist.evaluator import getAUC

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    scores = rng.random((50, 2))
    m = classification_metrics(labels, scores, "binary-class")
    assert m["auc"] == pytest.approx(getAUC(labels, scores, "binary-class"))
    assert m["auc"] == pytest.approx(roc_auc_score(labels, scores[:, 1]))


def test_a_class_with_one_sample_still_gets_a_per_class_auc():
    labels = np.array([0, 0, 0, 1])
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.8, 0.2], [0.4, 0.6]])
    m = classification_metrics(labels, probs, "binary-class", ["neg", "pos"])
    # the one positive (0.6) is above 0.1 and 0.2, below 0.7: 2 of 3 pairs
    assert m["per_class"]["pos"]["auc"] == pytest.approx(2 / 3)
    assert m["per_class"]["neg"]["auc"] == pytest.approx(2 / 3)
    assert m["auc"] == pytest.approx(2 / 3)
