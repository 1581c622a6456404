"""tools/mutation.py: which mutants it makes, that they reach the live functions, its scores
and its command line."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

SOURCE = textwrap.dedent('''
    """Module docstring: 1 < 2 is text."""
    import functools

    LIMIT = 3  # module level: not function code


    def f(a, b=1, *, c: int = 2) -> int:
        """Docstring with numbers 1 + 2."""
        if a < b and not c:
            return a + 1
        total = 0
        total += a * b
        print("label", 5)
        return total


    def skipped(x):
        return x - 1  # pragma: no mutate


    def outer(x):
        def inner(y):
            return y * 2
        return inner(x) + sum(next(zip([x], [x], strict=True)))


    class Base:
        def __init__(self):
            self.size = 4


    class K(Base):
        name = "k"

        def __init__(self):
            super().__init__()
            self.extra = 1

        def method(self, x):
            return x > self.size

        @property
        def double(self):
            return self.size * 2

        @staticmethod
        def stat(x):
            return x == 1


    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args):
            return fn(*args)
        return wrapper


    @deco
    def decorated(x):
        return x is None
''')


@pytest.fixture(scope="module")
def mut():
    import importlib.util

    spec = importlib.util.spec_from_file_location("mutation_tool", REPO / "tools" / "mutation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutation_tool"] = module  # its dataclass resolves annotations through it
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("mutation_tool", None)


def test_mutants_cover_the_operators_and_skip_non_code(mut):
    found = mut.mutants(SOURCE, "m.py")
    by_function: dict[str, list[str]] = {}
    for m in found:
        by_function.setdefault(m.function, []).append(m.what)
    assert sorted(by_function["f"]) == sorted([
        "and->or", "Lt->LtE", "drop Not",  # if a < b and not c
        "return None", "Add->Sub", "1->2",  # return a + 1
        "0->1",  # total = 0
        "Add->Sub", "drop statement", "Mult->Div",  # total += a * b
        "drop statement", "5->6",  # print("label", 5): the string stays
        "return None"])
    assert "skipped" not in by_function  # the pragma
    # nested functions belong to their own qualname; strict=True is not flipped
    assert sorted(by_function["outer.inner"]) == ["2->3", "Mult->Div", "return None"]
    assert sorted(by_function["outer"]) == ["Add->Sub", "return None"]
    assert sorted(by_function["K.method"]) == ["Gt->GtE", "return None"]
    assert sorted(by_function["K.double"]) == ["2->3", "Mult->Div", "return None"]
    assert sorted(by_function["K.stat"]) == ["1->2", "Eq->NotEq", "return None"]
    assert sorted(by_function["decorated"]) == ["Is->IsNot", "return None"]
    assert "K" not in by_function  # class attributes are not function code
    ids = [m.id for m in found]
    assert len(ids) == len(set(ids)) and ids[0].startswith("m.py:f:")
    assert [m.id for m in mut.mutants(SOURCE, "m.py", ["K"])] == [
        m.id for m in found if m.function.startswith("K.")]
    assert mut.mutants(SOURCE, "m.py") == found  # stable


def test_ids_carry_no_line_numbers_and_survive_edits_elsewhere(mut):
    found = mut.mutants(SOURCE, "m.py")
    f_ids = [m.id for m in found if m.function == "f"]
    # the k-th edit of a kind inside the function, in source order (outer node first)
    assert f_ids == [
        "m.py:f:and->or#0", "m.py:f:Lt->LtE#0", "m.py:f:drop Not#0", "m.py:f:return None#0",
        "m.py:f:Add->Sub#0", "m.py:f:1->2#0", "m.py:f:0->1#0", "m.py:f:Add->Sub#1",
        "m.py:f:drop statement#0", "m.py:f:Mult->Div#0", "m.py:f:drop statement#1",
        "m.py:f:5->6#0", "m.py:f:return None#1"]
    assert [m.line for m in found if m.function == "f"][:4] == [10, 10, 10, 11]
    # lines added above and another function edited: the ids of f and K do not move
    edited = SOURCE.replace("LIMIT = 3", "LIMIT = 3\n\n\nOTHER = 4").replace(
        "return x - 1  # pragma: no mutate", "return x - 1 + 2 * x")
    again = mut.mutants(edited, "m.py")
    keep = [m.id for m in found if m.function != "skipped"]
    assert [m.id for m in again if m.function != "skipped"] == keep
    assert [m.line for m in again if m.function == "f"][:4] == [13, 13, 13, 14]
    # the digest that keeps a result is the function's own source
    d0, d1 = mut._function_digests(SOURCE), mut._function_digests(edited)
    assert d0["f"] == d1["f"] and d0["K.method"] == d1["K.method"]
    assert d0["skipped"] != d1["skipped"]
    assert set(d0) == {"f", "skipped", "outer", "Base.__init__", "K.__init__", "K.method",
                       "K.double", "K.stat", "deco", "decorated"}


def test_each_mutant_runs_only_the_tests_that_execute_its_line(mut):
    m = _one(mut, "f", "Mult->Div")  # total += a * b, line 13
    by_line = {"mutpkg/m.py": {"13": ["t.py::b", "t.py::a"], "12": ["t.py::c"]}}
    assert mut._tests_for(m, by_line, {"t.py::a": 0.5, "t.py::b": 2.0}) == ["t.py::a", "t.py::b"]
    assert mut._tests_for(m, by_line, {"t.py::a": 3.0, "t.py::b": 2.0}) == ["t.py::b", "t.py::a"]
    assert mut._tests_for(_one(mut, "f", "0->1"), by_line, {}) == ["t.py::c"]  # total = 0
    assert mut._tests_for(_one(mut, "K.method", "Gt->GtE"), by_line, {}) == []
    # an edit on a continuation line is found through its statement's first line
    multi = "def g(a):\n    return max(a,\n               3)\n"
    m3 = next(m for m in mut.mutants(multi, "g.py") if m.what == "3->4")
    assert (m3.line, m3.stmt_line) == (3, 2)
    assert mut._tests_for(m3, {"g.py": {"2": ["t.py::g"]}}, {}) == ["t.py::g"]


def test_baseline_maps_lines_to_the_tests_that_run_them(tmp_path, monkeypatch, mut):
    module = _module(tmp_path, monkeypatch, mut)
    assert module.f(1, 2, c=1) == 2
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_m.py").write_text(textwrap.dedent('''
        from mutpkg import m

        def test_f():
            assert m.f(1, 2, c=1) == 2

        def test_stat():
            assert m.K.stat(1)
    '''))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    monkeypatch.chdir(tmp_path)
    seconds = mut._baseline(["mutpkg/m.py"], ["tests/test_m.py"], tmp_path / "cov.json")
    import gc
    gc.unfreeze()
    assert list(seconds) == ["tests/test_m.py::test_f", "tests/test_m.py::test_stat"]
    by_line = json.loads((tmp_path / "cov.json").read_text())["mutpkg/m.py"]
    assert by_line["13"] == ["tests/test_m.py::test_f"]  # total += a * b
    assert by_line["49"] == ["tests/test_m.py::test_stat"]  # return x == 1
    assert "11" not in by_line  # return a + 1: not run


def _module(tmp_path, monkeypatch, mut):
    (tmp_path / "mutpkg").mkdir()
    (tmp_path / "mutpkg" / "__init__.py").write_text("")
    (tmp_path / "mutpkg" / "m.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(mut, "REPO", tmp_path)
    for name in ("mutpkg.m", "mutpkg"):  # a package cached by an earlier test points to its
        sys.modules.pop(name, None)       # tmp_path, deleted once that test passed
    importlib.invalidate_caches()
    return importlib.import_module("mutpkg.m")


def _one(mut, function, what):
    return next(m for m in mut.mutants(SOURCE, "mutpkg/m.py")
                if m.function == function and m.what == what)


@pytest.mark.parametrize(("function", "what", "call", "before", "after"), [
    ("f", "Lt->LtE", lambda m: m.f(1, 1, c=0), 1, 2),
    ("f", "Mult->Div", lambda m: m.f(4, 2, c=1), 8, 2.0),
    ("f", "drop statement", lambda m: m.f(4, 2, c=1), 8, 0),  # total += a * b dropped
    ("outer.inner", "Mult->Div", lambda m: m.outer(4), 16, 10.0),
    ("K.method", "Gt->GtE", lambda m: m.K().method(4), False, True),
    ("K.double", "Mult->Div", lambda m: m.K().double, 8, 2.0),
    ("K.stat", "Eq->NotEq", lambda m: m.K.stat(1), True, False),
    ("decorated", "Is->IsNot", lambda m: m.decorated(None), True, False),
    ("K.__init__", "drop statement", lambda m: hasattr(m.K(), "size"), True, False),
])
def test_install_swaps_the_live_function(tmp_path, monkeypatch, mut, function, what, call,
                                         before, after):
    module = _module(tmp_path, monkeypatch, mut)
    keep = module.f
    assert call(module) == before
    mut.install(_one(mut, function, what), SOURCE, module)
    assert call(module) == after
    assert module.f is keep  # the same function object: every importer sees the mutant


def test_score_and_equivalent_list(tmp_path, mut):
    records = [{"id": "a", "outcome": "killed"}, {"id": "b", "outcome": "timeout"},
               {"id": "c", "outcome": "survived"}, {"id": "d", "outcome": "not covered"},
               {"id": "e", "outcome": "survived"}]
    eq_file = tmp_path / "eq.txt"
    eq_file.write_text("# comment\n\ne  equivalent: numpy takes any negative size\n")
    eq = mut.load_equivalent(eq_file)
    assert eq == {"e": "equivalent: numpy takes any negative size"}
    assert mut.score(records, eq) == {"mutants": 5, "killed": 2, "survived": 2,
                                      "equivalent": 1, "score": 50.0}
    assert mut.score([], {})["score"] is None
    text = mut.report({"x": records}, eq, tmp_path, "python tools/mutation.py")
    assert "| x | 5 | 2 | 2 | 1 | 50.0 % |" in text and "`c` (survived)" in text
    assert "`e`" not in text and (tmp_path / "report.md").read_text() == text


def test_every_mapped_file_and_test_exists(mut):
    for name, (files, tests, functions) in mut.MODULES.items():
        for f in files:
            assert (REPO / f).is_file(), (name, f)
        for t in tests:
            assert (REPO / t.split("::")[0]).is_file(), (name, t)
        n = sum(len(mut.mutants((REPO / f).read_text(), f, functions)) for f in files)
        assert n > 0, name
    equivalent = mut.load_equivalent()
    known = {m.id for files, _, fn in mut.MODULES.values() for f in files
             for m in mut.mutants((REPO / f).read_text(), f, fn)}
    assert set(equivalent) <= known, sorted(set(equivalent) - known)[:3]  # none gone stale
    assert all(reason for reason in equivalent.values())


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, str(REPO / "tools" / "mutation.py"), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_cli_lists_modules_and_rejects_bad_arguments():
    res = _cli("--list", "--module", "metrics")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("metrics: ") and "tests/test_metrics.py" in res.stdout
    bad = _cli("--module", "nosuch")
    assert bad.returncode == 2 and "invalid choice: 'nosuch'" in bad.stderr
    zero = _cli("--sample", "0")
    assert zero.returncode == 2 and "--sample must be >= 1, got 0" in zero.stderr
    shard = _cli("--shard", "2/2")
    assert shard.returncode == 2 and "--shard must be K/N with 0 <= K < N, got '2/2'" in \
        shard.stderr


@pytest.mark.slow
def test_cli_runs_a_sample_and_writes_the_report(tmp_path):
    res = _cli("--module", "metrics", "--sample", "4", "--out", str(tmp_path), timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4
    records = [json.loads(line) for line in lines]
    assert all(r["outcome"] in ("killed", "survived", "timeout", "not covered")
               for r in records)
    assert "| metrics | 4 |" in (tmp_path / "report.md").read_text()
    again = _cli("--module", "metrics", "--sample", "4", "--out", str(tmp_path), timeout=600)
    assert again.returncode == 0
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 4  # nothing re-run
