"""Seeded, stratified subsets (label fractions, size limits) and seeded stratified splits.

:func:`subsample` draws the labelled subset of a label-efficiency experiment: each class is
shuffled once with a generator seeded by ``seed`` and the subset takes a prefix of every class's
shuffled order. The number taken per class is proportional to the class's size (largest
remainder), and every class present keeps at least one sample. Because the shuffled order does not
depend on ``fraction``, the subsets of one seed are nested: the 1 % subset lies inside the 10 %
subset.

:func:`split_stratified` carves validation and test sets out of one labelled pool with the rule
the shared data in ``../shared/data`` was made with: for class ``c`` (label value), the pool's
indices of that class (in their given order, e.g. sorted by path) are permuted with
``np.random.RandomState(seed + c)``; the first ``round(val_fraction * n_c)`` go to val, the next
``round(test_fraction * n_c)`` to test and the rest to train (at least one stays in train).
"""

from __future__ import annotations

import numbers

import numpy as np

from ssl_ft.errors import UserError

__all__ = [
    "check_fraction",
    "check_limit",
    "check_split_fractions",
    "split_stratified",
    "subsample",
]


def check_fraction(fraction: float, name: str = "label_fraction") -> float:
    """Return ``fraction`` as a float if it lies in (0, 1]; otherwise raise :class:`UserError`."""
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
        raise UserError(f"{name} must be a number in (0, 1], got {fraction!r}")
    value = float(fraction)
    if not 0.0 < value <= 1.0:
        raise UserError(f"{name} must be in (0, 1] (e.g. 0.1 for 10 %), got {fraction!r}")
    return value


def check_limit(limit: int | None) -> int | None:
    """Return ``limit`` if it is ``None`` or an int >= 1; otherwise raise :class:`UserError`."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1:
        raise UserError(
            f"limit must be a positive integer (samples per split) or None, got {limit!r}"
        )
    return int(limit)


def check_split_fractions(val_fraction: float, test_fraction: float) -> tuple[float, float]:
    """Validate the shares carved out for val and test: each in [0, 1), together below 1."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
            raise UserError(f"{name} must be in [0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise UserError(
            f"val_fraction + test_fraction must be below 1, got {val_fraction} + {test_fraction}"
        )
    return float(val_fraction), float(test_fraction)


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes of sizes ``counts``: proportional, >= 1 each where possible."""
    counts = counts.astype(np.int64)
    if total >= counts.sum():
        return counts.copy()
    n_classes = len(counts)
    if total < n_classes:  # cannot keep every class: one sample for the most frequent ones
        alloc = np.zeros(n_classes, dtype=np.int64)
        alloc[np.argsort(-counts, kind="stable")[:total]] = 1
        return alloc
    spare = counts - 1
    rest = total - n_classes
    quotas = rest * spare / spare.sum()
    base = np.minimum(np.floor(quotas).astype(np.int64), spare)
    remaining = rest - int(base.sum())
    for c in np.argsort(-(quotas - base), kind="stable"):
        if remaining == 0:
            break
        if base[c] < spare[c]:
            base[c] += 1
            remaining -= 1
    return 1 + base


def subsample(
    labels: np.ndarray, *, fraction: float = 1.0, limit: int | None = None, seed: int = 0
) -> np.ndarray:
    """Sorted indices of a seeded, stratified subset of ``labels``.

    Args:
        labels: ``(N,)`` integer class labels.
        fraction: share of the samples to keep, in (0, 1]. The kept total is
            ``max(round(fraction * N), number of classes)``.
        limit: optional cap (>= 1) on the total; the cap is shared out in proportion to the class
            sizes, still one sample per class where ``limit`` allows it.
        seed: seeds the per-class shuffles; the same seed gives the same indices.

    Returns:
        Sorted ``int64`` indices into ``labels``. Without a fraction below 1 or a limit below
        ``N`` this is simply ``arange(N)``.

    Example:
        >>> idx = subsample(np.array([0, 0, 0, 0, 1, 1]), fraction=0.5, seed=0)
        >>> len(idx)
        3
    """
    fraction = check_fraction(fraction)
    limit = check_limit(limit)
    labels = np.asarray(labels).reshape(-1)
    n = len(labels)
    classes, counts = np.unique(labels, return_counts=True)
    total = n if fraction >= 1.0 else max(int(round(fraction * n)), len(classes))
    if limit is not None:
        total = min(total, limit)
    if total >= n:
        return np.arange(n, dtype=np.int64)
    alloc = _allocate(counts, total)
    rng = np.random.default_rng(seed)
    kept = []
    for cls, k in zip(classes, alloc, strict=True):
        members = np.flatnonzero(labels == cls)
        order = rng.permutation(len(members))  # drawn for every class so prefixes stay nested
        kept.append(members[order[:k]])
    return np.sort(np.concatenate(kept)).astype(np.int64)


def split_stratified(
    labels: np.ndarray, *, val_fraction: float, test_fraction: float, seed: int = 0
) -> dict[str, np.ndarray]:
    """Seeded stratified split of one pool into ``{"train", "val", "test"}`` index arrays.

    See the module docstring for the exact rule. Each returned array is sorted, the three are
    disjoint and together cover ``range(len(labels))``. A class with ``n_c`` samples keeps at
    least one in train; a class too small for a share of val or test simply has none there.
    """
    check_split_fractions(val_fraction, test_fraction)
    labels = np.asarray(labels).reshape(-1)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        n_c = len(members)
        perm = members[np.random.RandomState(seed + int(cls)).permutation(n_c)]
        n_val, n_test = int(round(val_fraction * n_c)), int(round(test_fraction * n_c))
        while n_val + n_test > n_c - 1:  # keep at least one training sample per class
            if n_test >= n_val:
                n_test -= 1
            else:
                n_val -= 1
        parts["val"].append(perm[:n_val])
        parts["test"].append(perm[n_val : n_val + n_test])
        parts["train"].append(perm[n_val + n_test :])
    return {
        split: np.sort(np.concatenate(chunks)).astype(np.int64)
        if chunks
        else np.zeros(0, dtype=np.int64)
        for split, chunks in parts.items()
    }
