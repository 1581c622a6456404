"""The statistics of study reports (ssl_ft.study.report) on inputs whose results are known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ssl_ft.study.report import (
    _equals,
    p_text,
    paired_differences,
    paired_tests,
    summarize,
    tally,
)


def _rows(values: dict[tuple[str, str], list[float]], seeds=None, kind="finetune"):
    rows = []
    for (strategy, data), aucs in values.items():
        for i, auc in enumerate(aucs):
            rows.append({"kind": kind, "data": data, "arch": "resnet18", "label_fraction": 1.0,
                         "model": "simclr", "selection": "0-100", "strategy": strategy,
                         "seed": (seeds or range(len(aucs)))[i], "test_auc": auc,
                         "test_acc": auc - 0.1, "val_auc": auc + 0.01, "val_acc": 0.5})
    return pd.DataFrame(rows)


def _concat(frames):
    return pd.concat(frames, ignore_index=True)  # as collect() builds them: one label a row


def test_summarize_mean_std_ci_per_group():
    df = _rows({("ft", "a"): [0.80, 0.90], ("ft", "b"): [0.70], ("lp", "a"): [0.6, 0.7, 0.8]})
    s = summarize(df).set_index(["strategy", "data"])
    assert list(s.index) == [("ft", "a"), ("ft", "b"), ("lp", "a")]  # order of appearance
    # two seeds: mean 0.85, sd sqrt(0.005) = 0.0707, CI t(0.975, 1) * sd / sqrt(2)
    row = s.loc[("ft", "a")]
    assert row["n"] == 2 and row["test_auc_mean"] == pytest.approx(0.85)
    assert row["test_auc_std"] == pytest.approx(math.sqrt(0.005))
    assert row["test_auc_ci95"] == pytest.approx(12.7062047 * math.sqrt(0.005) / math.sqrt(2))
    assert row["test_acc_mean"] == pytest.approx(0.75) and row["val_auc_mean"] == \
        pytest.approx(0.86)
    one = s.loc[("ft", "b")]  # one seed: no spread, no interval
    assert one["n"] == 1 and one["test_auc_std"] == 0.0 and math.isnan(one["test_auc_ci95"])
    three = s.loc[("lp", "a")]
    assert three["test_auc_std"] == pytest.approx(0.1)
    assert three["test_auc_ci95"] == pytest.approx(4.30265273 * 0.1 / math.sqrt(3))
    by_data = summarize(df, by=["data"]).set_index("data")
    assert by_data.loc["a", "n"] == 5 and by_data.loc["b", "n"] == 1


def test_paired_differences_pair_by_seed_and_test():
    df = _rows({("ft", "a"): [0.80, 0.82, 0.85, 0.90],
                ("lp-ft", "a"): [0.83, 0.83, 0.89, 0.97],
                ("ft", "b"): [0.5, 0.6], ("lp", "b"): [0.4, 0.45]})
    # seed 3 of lp-ft has no ft partner in data b; the pairs below are per data set
    t = paired_tests(df).set_index(["data", "strategy"])
    assert set(t.index) == {("a", "lp-ft"), ("b", "lp")}
    a = t.loc[("a", "lp-ft")]
    diffs = [0.03, 0.01, 0.04, 0.07]
    assert a["n"] == 4 and a["test_auc_diff"] == pytest.approx(np.mean(diffs))
    assert a["p"] == pytest.approx(stats.ttest_rel([0.83, 0.83, 0.89, 0.97],
                                                   [0.80, 0.82, 0.85, 0.90]).pvalue)
    assert a["per_seed"] == diffs
    b = t.loc[("b", "lp")]
    assert b["test_auc_diff"] == pytest.approx(-0.125) and b["per_seed"] == [-0.1, -0.15]


def test_only_shared_seeds_are_paired():
    df = _concat([_rows({("ft", "a"): [0.8, 0.9, 0.7]}, seeds=[0, 1, 2]),
                    _rows({("lp", "a"): [0.85, 0.8, 0.6]}, seeds=[1, 2, 5])])
    (row,) = paired_tests(df).to_dict("records")
    # seeds 1 and 2: 0.85 - 0.9, 0.8 - 0.7
    assert row["n"] == 2 and row["per_seed"] == [-0.05, 0.1]
    assert row["test_auc_diff"] == pytest.approx(0.025)
    none = _concat([_rows({("ft", "a"): [0.8]}, seeds=[0]),
                      _rows({("lp", "a"): [0.85]}, seeds=[1])])
    assert paired_tests(none).empty  # no shared seed: no row
    single = _concat([_rows({("ft", "a"): [0.8]}), _rows({("lp", "a"): [0.9]})])
    (row,) = paired_tests(single).to_dict("records")
    assert row["n"] == 1 and math.isnan(row["p"])  # one pair: no test


def test_constant_differences_have_no_p_value():
    df = _rows({("ft", "a"): [0.1, 0.2, 0.5], ("lp", "a"): [0.2, 0.3, 0.6]})
    (row,) = paired_tests(df).to_dict("records")
    assert math.isnan(row["p"]) and row["test_auc_diff"] == pytest.approx(0.1)
    spread = _rows({("ft", "a"): [0.1, 0.2, 0.5], ("lp", "a"): [0.2, 0.3, 0.61]})
    (row,) = paired_tests(spread).to_dict("records")
    assert not math.isnan(row["p"])


def test_reference_values_match_as_numbers_or_text():
    col = pd.Series(["100", "100.0", "50", "ft", "x100"])
    assert _equals(col, 100).tolist() == [True, True, False, False, False]
    assert _equals(col, "100.0").tolist() == [True, True, False, False, False]
    assert _equals(col, "ft").tolist() == [False, False, False, True, False]
    rows = [{"kind": "finetune", "data": "a", "seed": s, "truncate": t, "test_auc": v}
            for s in range(2) for t, v in ((100.0, 0.8 + s / 10), (75.0, 0.85 + s / 5))]
    d = paired_differences(pd.DataFrame(rows), ["data", "truncate"], {"truncate": "100"})
    (row,) = d.to_dict("records")
    assert row["truncate"] == 75.0 and row["per_seed"] == [0.05, 0.15]


def test_paired_tests_ignore_fusion_rows():
    df = _concat([_rows({("ft", "a"): [0.8, 0.9], ("lp", "a"): [0.7, 0.85]}),
                    _rows({("ft", "a"): [0.1, 0.2], ("lp", "a"): [0.9, 0.9]}, kind="ensemble")])
    (row,) = paired_tests(df).to_dict("records")
    assert row["per_seed"] == [-0.1, -0.05]
    other = paired_tests(df, reference="lp").to_dict("records")
    assert [r["strategy"] for r in other] == ["ft"] and other[0]["per_seed"] == [0.1, 0.05]


def test_tally_counts_cases_above_and_below():
    tests = pd.DataFrame([
        {"strategy": "lp-ft", "test_auc_diff": 0.02, "p": 0.01},
        {"strategy": "lp-ft", "test_auc_diff": 0.01, "p": 0.30},
        {"strategy": "lp-ft", "test_auc_diff": -0.03, "p": 0.04},
        {"strategy": "lp", "test_auc_diff": -0.10, "p": float("nan")},
        {"strategy": "lp", "test_auc_diff": 0.0, "p": 0.5},
    ])
    t = tally(tests).set_index("strategy")
    assert list(t.index) == ["lp-ft", "lp"]
    assert t.loc["lp-ft"].to_dict() == {"cases": 3, "above": 2, "below": 1, "above_sig": 1,
                                        "below_sig": 1, "mean_diff": pytest.approx(0.0)}
    assert t.loc["lp"].to_dict() == {"cases": 2, "above": 0, "below": 1, "above_sig": 0,
                                     "below_sig": 0, "mean_diff": pytest.approx(-0.05)}
    strict = tally(tests, alpha=0.02).set_index("strategy")
    assert strict.loc["lp-ft", "above_sig"] == 1 and strict.loc["lp-ft", "below_sig"] == 0


def test_p_text():
    assert p_text(float("nan")) == ""
    assert p_text(0.035123) == "0.0351" and p_text(1.0) == "1" and p_text(1.2345e-7) == "1.23e-07"


def test_groups_keep_missing_keys_and_their_order():
    df = _rows({("zz", "a"): [0.8, 0.9], ("aa", "a"): [0.7, 0.9]})
    df.loc[df["strategy"] == "zz", "model"] = None  # e.g. a run without a model name
    s = summarize(df)
    assert s["strategy"].tolist() == ["zz", "aa"] and s["n"].tolist() == [2, 2]
    assert s["model"].isna().tolist() == [True, False]
    # paired rows keep the order in which the groups first appear
    three = _rows({("b", "y"): [0.5, 0.6], ("ft", "y"): [0.4, 0.45], ("a", "y"): [0.3, 0.4],
                   ("b", "x"): [0.5, 0.6], ("ft", "x"): [0.4, 0.45]})
    t = paired_tests(three)
    assert list(zip(t["data"], t["strategy"], strict=True)) == [("y", "b"), ("y", "a"),
                                                                 ("x", "b")]


def test_two_seeds_are_tested_and_differences_are_rounded_to_4_places():
    df = _rows({("ft", "a"): [0.80, 0.90], ("lp", "a"): [0.823456, 0.912345]})
    (row,) = paired_tests(df).to_dict("records")
    assert row["n"] == 2
    assert row["p"] == pytest.approx(stats.ttest_rel([0.823456, 0.912345], [0.80, 0.90]).pvalue)
    assert row["per_seed"] == [0.0235, 0.0123]


def test_tally_boundaries():
    tests = pd.DataFrame([
        {"strategy": "s", "test_auc_diff": 0.0, "p": 0.01},   # no difference: neither side
        {"strategy": "s", "test_auc_diff": 0.02, "p": 0.05},  # p == alpha: not below it
        {"strategy": "s", "test_auc_diff": -0.02, "p": 0.05},
    ])
    row = tally(tests).iloc[0].to_dict()
    assert (row["above"], row["below"], row["above_sig"], row["below_sig"]) == (1, 1, 0, 0)


def test_a_repeated_index_pairs_by_keys_and_seed_not_by_label():
    # pd.concat without ignore_index repeats the labels 0, 1: each group's rows used to select
    # the other group's rows by label too (IndexError: indices are out-of-bounds)
    ft = _rows({("ft", "a"): [0.80, 0.90]})
    lp = _rows({("lp", "a"): [0.85, 0.70]})
    df = pd.concat([ft, lp])
    assert df.index.tolist() == [0, 1, 0, 1]
    (row,) = paired_tests(df).to_dict("records")
    assert row["strategy"] == "lp" and row["n"] == 2 and row["per_seed"] == [0.05, -0.2]
    assert row["test_auc_diff"] == pytest.approx(-0.075)
    assert row["p"] == pytest.approx(stats.ttest_rel([0.85, 0.70], [0.80, 0.90]).pvalue)
    assert paired_tests(df).equals(paired_tests(_concat([ft, lp])))
    # rows in another order and a shuffled, repeated index: the same pairs
    mixed = pd.concat([lp.iloc[::-1], ft]).set_axis([5, 5, 5, 5])
    assert paired_tests(mixed).to_dict("records")[0]["per_seed"] == [0.05, -0.2]
    # indexed by seed, the column kept too (df.set_index("seed", drop=False)): the same pairs
    by_seed = _concat([ft, lp]).set_index("seed", drop=False)
    assert paired_tests(by_seed).to_dict("records")[0]["per_seed"] == [0.05, -0.2]


def test_two_runs_with_the_same_keys_and_seed_are_refused_in_one_line():
    from ssl_ft.errors import UserError

    df = _rows({("ft", "a"): [0.80, 0.90, 0.7], ("lp", "a"): [0.85, 0.70]}, seeds=[0, 1, 1])
    with pytest.raises(UserError) as err:
        paired_tests(df)
    assert str(err.value) == (
        "2 runs share their keys and seed (first: data=a, arch=resnet18, label_fraction=1.0, "
        "model=simclr, selection=0-100, strategy=ft, seed=1); they cannot be paired: group by "
        "the key that tells them apart")
    # grouping by fewer keys than the runs differ in: two strategies per (data, seed)
    both = _rows({("ft", "a"): [0.8, 0.9], ("lp", "a"): [0.85, 0.7], ("ft", "b"): [0.6, 0.5]})
    with pytest.raises(UserError, match=r"^4 runs share their keys and seed \(first: data=a, "
                                        r"seed=0\)"):
        paired_differences(both, ["data"], {"data": "b"})
    assert len(paired_differences(both, ["data", "strategy"], {"data": "b"})) == 1
