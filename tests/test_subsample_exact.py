"""Exact counts of :func:`ssl_ft.data.subsample`: largest-remainder allocation, worked by hand.

Each expected count below is worked out in the comment beside it from the rule in the module
docstring (one sample per class, the rest shared in proportion to ``n_c - 1``, the leftover
samples to the largest fractional remainders). Totals, class presence or a ratio within a
tolerance do not pin the rule down: reversing the remainder order keeps all three.
"""

from __future__ import annotations

import numpy as np
import pytest

from ssl_ft.data import load_data, subsample
from ssl_ft.data.subsample import _allocate, split_stratified


def _labels(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def _per_class(labels: np.ndarray, idx: np.ndarray, n_classes: int) -> list[int]:
    return np.bincount(labels[idx], minlength=n_classes).tolist()


@pytest.mark.parametrize(("counts", "kwargs", "want"), [
    # n 1007, total round(10.07) = 10; spare [999, 1, 4], 7 to share: quotas 6.965, 0.007, 0.028
    # -> floors [6, 0, 0], the 1 left goes to the largest remainder (class 0): 1 + [7, 0, 0]
    ([1000, 2, 5], {"fraction": 0.01}, [8, 1, 1]),
    # n 10, total 5; spare [4, 2, 1], 2 to share: quotas 1.143, 0.571, 0.286 -> floors [1, 0, 0],
    # the 1 left to class 1 (0.571): 1 + [1, 1, 0]
    ([5, 3, 2], {"fraction": 0.5}, [2, 2, 1]),
    # n 100, total 30; spare [59, 29, 9], 27 to share: quotas 16.42, 8.07, 2.51 -> floors
    # [16, 8, 2], 1 left to class 2 (0.51): 1 + [16, 8, 3]
    ([60, 30, 10], {"fraction": 0.3}, [17, 9, 4]),
    # limit 10 as the total: spare [999, 1, 4], 7 to share -> the same as 1 % above
    ([1000, 2, 5], {"limit": 10}, [8, 1, 1]),
    # fewer slots than classes: one sample for the most frequent classes, ties in class order
    ([1000, 2, 5], {"limit": 2}, [1, 0, 1]),
    ([3, 3, 1], {"limit": 2}, [1, 1, 0]),
    ([1000, 2, 5], {"limit": 3}, [1, 1, 1]),
    # the total is never below the number of classes: round(0.001 * 1007) = 1 -> 3
    ([1000, 2, 5], {"fraction": 0.001}, [1, 1, 1]),
    # a fraction and a limit: the smaller total wins (round(0.5 * 1007) = 504 > 4)
    ([1000, 2, 5], {"fraction": 0.5, "limit": 4}, [2, 1, 1]),
    # remainders tie (quotas 1.5 and 1.5): the first class in label order gets the sample
    ([4, 4], {"fraction": 0.625}, [3, 2]),
])
def test_counts_per_class_are_the_worked_example(counts, kwargs, want):
    labels = _labels(counts)
    idx = subsample(labels, seed=0, **kwargs)
    assert _per_class(labels, idx, len(counts)) == want
    np.testing.assert_array_equal(_allocate(np.array(counts), sum(want)), want)


def test_allocation_keeps_whole_classes_when_the_total_allows():
    np.testing.assert_array_equal(_allocate(np.array([3, 2]), 5), [3, 2])
    np.testing.assert_array_equal(_allocate(np.array([3, 2]), 9), [3, 2])
    # a class of one sample has nothing spare: [1, 6] -> total 4 gives 1 + [0, 3]
    np.testing.assert_array_equal(_allocate(np.array([1, 6]), 4), [1, 3])


def test_labels_need_not_be_0_to_k():
    labels = np.array([7] * 1000 + [3] * 2 + [9] * 5)
    idx = subsample(labels, fraction=0.01, seed=4)
    kept = labels[idx]
    assert [(kept == c).sum() for c in (7, 3, 9)] == [8, 1, 1]


@pytest.mark.parametrize(("fraction", "want"), [
    # 4708 train images: 1214 normal, 3494 pneumonia.
    # 1 %: total 47; spare [1213, 3493], 45 to share: quotas 11.599, 33.401 -> floors [11, 33],
    # 1 left to class 0 (0.599): 1 + [12, 33]
    (0.01, [13, 34]),
    # 10 %: total 471; 469 to share: quotas 120.885, 348.115 -> [120, 348] + 1 to class 0
    (0.1, [122, 349]),
    # 50 %: total 2354; 2352 to share: quotas 606.24, 1745.76 -> [606, 1745] + 1 to class 1
    (0.5, [607, 1747]),
])
def test_pneumoniamnist_label_fractions_have_the_exact_class_counts(data_root, fraction, want):
    splits = load_data("pneumoniamnist", data_root=data_root, label_fraction=fraction, seed=0)
    assert np.bincount(splits.labels["train"], minlength=2).tolist() == want
    full = load_data("pneumoniamnist", data_root=data_root)
    assert np.bincount(full.labels["train"]).tolist() == [1214, 3494]


def test_each_class_is_a_prefix_of_one_seeded_shuffle():
    labels = _labels([40, 25, 9])
    by_fraction = [subsample(labels, fraction=f, seed=11) for f in (0.05, 0.2, 0.5, 0.9)]
    for small, large in zip(by_fraction, by_fraction[1:], strict=False):
        assert set(small) < set(large)
    # the first sample taken from each class is the same at every fraction
    firsts = [{c: set(idx[labels[idx] == c]) for c in range(3)} for idx in by_fraction]
    for c in range(3):
        assert all(firsts[0][c] <= f[c] for f in firsts)
    assert not np.array_equal(subsample(labels, fraction=0.2, seed=12), by_fraction[1])
    np.testing.assert_array_equal(subsample(labels, fraction=0.2, seed=11), by_fraction[1])


def test_split_stratified_counts_and_rule():
    labels = _labels([10, 7, 2])
    parts = split_stratified(labels, val_fraction=0.2, test_fraction=0.3, seed=5)
    # class 0: val round(2.0) = 2, test round(3.0) = 3; class 1: round(1.4) = 1, round(2.1) = 2;
    # class 2: round(0.4) = 0, round(0.6) = 1 (one stays in train)
    assert _per_class(labels, parts["val"], 3) == [2, 1, 0]
    assert _per_class(labels, parts["test"], 3) == [3, 2, 1]
    assert _per_class(labels, parts["train"], 3) == [5, 4, 1]
    # the documented rule: class c's indices permuted by RandomState(seed + c), val first
    perm = np.flatnonzero(labels == 1)[np.random.RandomState(5 + 1).permutation(7)]
    assert set(perm[:1]) <= set(parts["val"]) and set(perm[1:3]) <= set(parts["test"])
    # a class of two with 40 % + 40 % asked keeps one in train: test gives way first
    tiny = split_stratified(_labels([2]), val_fraction=0.4, test_fraction=0.4, seed=0)
    assert [len(tiny[s]) for s in ("train", "val", "test")] == [1, 1, 0]
    tiny = split_stratified(_labels([2]), val_fraction=0.1, test_fraction=0.45, seed=0)
    assert [len(tiny[s]) for s in ("train", "val", "test")] == [1, 0, 1]


def test_checks_accept_the_range_and_name_bad_values():
    from ssl_ft.data.subsample import check_fraction, check_limit, check_split_fractions
    from ssl_ft.errors import UserError

    assert check_fraction(1) == 1.0 and type(check_fraction(1)) is float
    assert check_fraction(1e-9) == 1e-9
    for bad in (True, "0.5", None, 0, 0.0, -0.1, 1.0000001):
        with pytest.raises(UserError, match="label_fraction") as info:
            check_fraction(bad)
        assert repr(bad) in str(info.value)
    with pytest.raises(UserError, match="^p must be"):
        check_fraction("x", name="p")
    assert check_limit(None) is None and check_limit(np.int64(3)) == 3
    assert type(check_limit(np.int64(3))) is int
    for bad in (True, 0, -1, 2.0, "3"):
        with pytest.raises(UserError, match="limit must be a positive integer") as info:
            check_limit(bad)
        assert repr(bad) in str(info.value)
    assert check_split_fractions(0, 0.5) == (0.0, 0.5)
    assert type(check_split_fractions(0, 0.5)[0]) is float
    assert check_split_fractions(0.3, 0.6999) == (0.3, 0.6999)
    for val, test, word in ((True, 0.1, "val_fraction"), (0.1, "0.2", "test_fraction"),
                            (-0.01, 0.1, "val_fraction"), (0.1, 1.0, "test_fraction"),
                            (1.0, 0.0, "val_fraction"), (0.0, 1.5, "test_fraction")):
        with pytest.raises(UserError, match=rf"^{word} must be in \[0, 1\), got "):
            check_split_fractions(val, test)
    for val, test in ((0.5, 0.5), (0.7, 0.4)):
        with pytest.raises(UserError, match=r"^val_fraction \+ test_fraction must be below 1"):
            check_split_fractions(val, test)
    with pytest.raises(UserError, match="below 1"):
        split_stratified(np.zeros(4, int), val_fraction=0.6, test_fraction=0.4)


def test_split_stratified_gives_way_on_val_too_and_handles_no_labels():
    # n 3, val round(1.5) = 2, test round(0.9) = 1: 3 > 2, and val is the larger share -> val 1
    parts = split_stratified(_labels([3]), val_fraction=0.5, test_fraction=0.3, seed=0)
    assert [len(parts[s]) for s in ("train", "val", "test")] == [1, 1, 1]
    empty = split_stratified(np.zeros(0, np.int64), val_fraction=0.1, test_fraction=0.1)
    assert all(len(v) == 0 and v.dtype == np.int64 for v in empty.values())
    assert set(empty) == {"train", "val", "test"}
