"""Property-based tests (hypothesis): the depth map and label fractions for any input.

* any layer-range or truncate string parses to a valid range or fails with a one-line
  :class:`UserError` that names it;
* for any set of cut points, the ranges between them partition the units (quarters are one
  case), for every architecture family and depth rule;
* truncation never keeps a unit deeper than P nor drops one at or above it;
* label fractions: exact largest-remainder counts (checked against exact fractions), at least
  one sample per class when the total allows, nested subsets for growing fractions.

``max_examples`` is modest and every test has a deadline, so the file runs in seconds.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssl_ft.data import subsample
from ssl_ft.errors import UserError
from ssl_ft.models import RULES, DepthMap, create_backbone, parse_layers, parse_percent

FAST = settings(max_examples=150, deadline=2000)
ARCHS = ["resnet18", "resnet50", "densenet121", "vgg11"]


@functools.cache
def _depth_map(arch: str, rule: str) -> DepthMap:
    return DepthMap.from_backbone(create_backbone(arch, in_chans=1), rule)


@pytest.fixture(scope="module", autouse=True)
def _built():
    """Build the backbones before hypothesis times any example."""
    for arch in ARCHS:
        for rule in RULES:
            _depth_map(arch, rule)


# --- range and percentage strings -------------------------------------------------------------

_PIECES = st.sampled_from(["0", "1", "25", "50", "75", "100", "100.0", "101", "7.5", "-", " ",
                           ".", "%", "e", "a", "--", "1e2", "0.0001", "+", "\n", "\t", "99.99"])
RANGE_TEXT = st.one_of(st.text(max_size=12), st.lists(_PIECES, max_size=5).map("".join),
                       st.tuples(st.decimals(-10, 200, places=2, allow_nan=False),
                                 st.decimals(-10, 200, places=2, allow_nan=False)).map(
                           lambda ab: f"{ab[0]}-{ab[1]}"))


@FAST
@given(RANGE_TEXT)
def test_any_range_string_parses_or_fails_in_one_line(text):
    try:
        a, b = parse_layers(text)
    except UserError as exc:
        message = str(exc)
        assert "\n" not in message and message
        assert " ".join(repr(text).split()) in message  # (UserError collapses whitespace)
        return
    assert isinstance(a, Fraction) and isinstance(b, Fraction)
    assert 0 <= a < b <= 100
    left, right = text.strip().split("-")
    assert (Fraction(left.strip()), Fraction(right.strip())) == (a, b)


@FAST
@given(st.one_of(st.text(max_size=8), st.floats(allow_nan=True, allow_infinity=True),
                 st.integers(-1000, 1000), st.decimals(-5, 205, places=3, allow_nan=False)))
def test_any_truncate_value_parses_or_fails_in_one_line(value):
    try:
        p = parse_percent(value)
    except UserError as exc:
        assert "\n" not in str(exc) and "truncate" in str(exc)
        return
    assert 0 < p <= 100
    assert float(p) == pytest.approx(float(str(value).strip()))


# --- the depth map ----------------------------------------------------------------------------

CUTS = st.lists(st.integers(1, 9999), max_size=6, unique=True).map(
    lambda xs: [Fraction(0)] + sorted(Fraction(x, 100) for x in xs) + [Fraction(100)])


@FAST
@given(arch=st.sampled_from(ARCHS), rule=st.sampled_from(RULES), cuts=CUTS)
def test_ranges_between_cut_points_partition_the_units(arch, rule, cuts):
    dm = _depth_map(arch, rule)
    seen: list[int] = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        sel = dm.select(f"{_dec(a)}-{_dec(b)}", allow_empty=True)
        assert all(a < u.depth <= b for u in sel.trained)
        seen += [u.index for u in sel.trained]
    assert sorted(seen) == list(range(len(dm.units)))  # each unit in exactly one range


def _dec(x: Fraction) -> str:
    """A percentage with at most two decimals as plain text (exact for these fractions)."""
    return f"{x.numerator * 100 // x.denominator / 100:.2f}".rstrip("0").rstrip(".")


@FAST
@given(arch=st.sampled_from(ARCHS), rule=st.sampled_from(RULES),
       p=st.integers(1, 10000).map(lambda x: Fraction(x, 100)))
def test_truncation_never_keeps_a_unit_deeper_than_p(arch, rule, p):
    dm = _depth_map(arch, rule)
    try:
        sel = dm.select("0-100", _dec(p))
    except UserError as exc:
        assert dm.units[0].depth > p and "drops every unit" in str(exc)
        return
    assert all(u.depth <= p for u in sel.kept)
    assert all(u.depth > p for u in sel.dropped)
    assert [u.index for u in sel.kept] == list(range(len(sel.kept)))  # a prefix is kept
    assert sel.trained == sel.kept  # 0-100 trains everything kept


@FAST
@given(arch=st.sampled_from(ARCHS), rule=st.sampled_from(RULES))
def test_depths_increase_to_100(arch, rule):
    depths = [u.depth for u in _depth_map(arch, rule).units]
    assert depths == sorted(depths) and depths[0] > 0 and depths[-1] == 100


# --- label fractions --------------------------------------------------------------------------

COUNTS = st.lists(st.integers(1, 300), min_size=1, max_size=6)


def _exact_quotas(counts: list[int], total: int) -> list[Fraction]:
    spare = [c - 1 for c in counts]
    rest = total - len(counts)
    s = sum(spare)
    return [Fraction(rest * x, s) if s else Fraction(0) for x in spare]


@settings(max_examples=200, deadline=2000)
@given(counts=COUNTS, fraction=st.floats(0.001, 1.0), seed=st.integers(0, 2**16))
def test_label_fraction_counts_are_exact_largest_remainder(counts, fraction, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    rng = np.random.default_rng(seed)
    rng.shuffle(labels)  # the classes need not be sorted
    n = len(labels)
    idx = subsample(labels, fraction=fraction, seed=seed)
    got = np.bincount(labels[idx], minlength=len(counts)).tolist()
    total = n if fraction >= 1 else max(round(fraction * n), len(counts))
    assert sum(got) == min(total, n) and len(set(idx.tolist())) == len(idx)
    assert all(0 <= g <= c for g, c in zip(got, counts, strict=True))
    if total >= n:
        assert got == counts
        return
    assert all(g >= 1 for g in got)  # every class keeps a sample (total >= classes)
    quotas = _exact_quotas(counts, total)
    extra = [g - 1 - math.floor(q) for g, q in zip(got, quotas, strict=True)]
    assert set(extra) <= {0, 1}  # the floor of the quota, or one more
    rem = [q - math.floor(q) for q in quotas]
    # whoever got the extra sample has a remainder at least as large as whoever did not (ties
    # are free to go either way)
    given_extra = [r for r, e in zip(rem, extra, strict=True) if e]
    left_out = [r for r, e in zip(rem, extra, strict=True) if not e]
    assert not given_extra or not left_out or min(given_extra) >= max(left_out) - Fraction(
        1, 10**9)


@settings(max_examples=100, deadline=2000)
@given(counts=COUNTS, fractions=st.lists(st.floats(0.001, 1.0), min_size=2, max_size=4),
       seed=st.integers(0, 2**16))
def test_label_fraction_subsets_are_nested(counts, fractions, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    subsets = [set(subsample(labels, fraction=f, seed=seed).tolist()) for f in sorted(fractions)]
    for small, large in zip(subsets, subsets[1:], strict=False):
        assert small <= large


@settings(max_examples=100, deadline=2000)
@given(counts=COUNTS, limit=st.integers(1, 400), seed=st.integers(0, 2**16))
def test_limit_is_a_stratified_total(counts, limit, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    got = np.bincount(labels[subsample(labels, limit=limit, seed=seed)],
                      minlength=len(counts))
    n = len(labels)
    assert got.sum() == min(limit, n)
    if limit >= n:
        assert got.tolist() == counts
    elif limit < len(counts):  # one each for the `limit` largest classes
        assert set(got.tolist()) <= {0, 1}
        order = sorted(range(len(counts)), key=lambda c: -counts[c])
        assert all(got[c] == 1 for c in order[:limit])
    else:  # proportional: within one sample of the exact quota, at least one each
        quotas = _exact_quotas(counts, limit)
        assert all(g >= 1 and abs(g - 1 - q) < 1 for g, q in zip(got, quotas, strict=True))


def test_fraction_outside_0_1_is_a_user_error():
    with pytest.raises(UserError, match="label_fraction"):
        subsample(np.zeros(4, int), fraction=1.5)
