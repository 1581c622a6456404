"""Mutation testing of the core modules: seed one small bug at a time, run the tests that cover
the module, count the bugs the tests catch.

    python tools/mutation.py --list                      # the modules and their tests
    python tools/mutation.py --sample 20                 # 20 random mutants per module (a session)
    python tools/mutation.py --module metrics --module depth     # every mutant of two modules
    python tools/mutation.py                             # the full run (hours: in the background)

A mutant is one AST edit inside one function body: a comparison flipped (``<`` to ``<=``, ``==``
to ``!=``, ``in`` to ``not in``), an arithmetic operator swapped (``+``/``-``, ``*``/``/``,
``//`` to ``/``, ``**`` to ``*``), ``and``/``or`` swapped, a ``not`` or unary minus dropped, a
number off by one, ``True``/``False`` swapped, a call statement or augmented assignment
dropped, a returned value replaced by ``None``. Strings, docstrings, default arguments,
decorators and annotations are left alone; a line ending in ``# pragma: no mutate`` too.

Why not mutmut: mutmut 3 (what pip installs here) first runs the whole configured test
selection under its trampolines to learn which tests reach which function, copies the project
into ``mutants/``, has no sampled mode, and cannot be told which few fast test files cover a
module. This script instead imports the library and its dependencies (torch) once, runs the
module's mapped tests unmutated with one coverage context per test (which test runs which line),
forks one child per mutant, swaps the mutated function's code object into the live function (so
every ``from x import f`` sees it), and runs only the mapped tests that execute the mutated line,
with ``pytest -x`` and a time limit (three times their unmutated time plus 20 s). A line no
mapped test executes is reported as "not covered" without running.

A mutant's id is ``file:function:what#k``, the k-th edit ``what`` inside that function, with no
line number: it survives edits elsewhere in the file. Results go to ``--out`` (default
``.mutation/``): one JSON line per mutant (``results.jsonl``) and ``report.md``. A rerun skips
the mutants already decided for the same source of their function: killed ones always, the
others only while the module's mapped tests are unchanged (so new tests are tried on the
survivors). Mutants listed in ``tools/mutation_equivalent.txt`` (``id  reason``) are equivalent
(no test can tell them apart) and leave the score: ``killed / (mutants - equivalent)``.
"""

from __future__ import annotations

import argparse
import ast
import copy
import gc
import hashlib
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EQUIVALENT = REPO / "tools" / "mutation_equivalent.txt"

# module -> (source files, tests run for each mutant (files or pytest node ids), functions to
# mutate (qualnames) or None for all of them)
MODULES: dict[str, tuple[list[str], list[str], list[str] | None]] = {
    "depth": (["ssl_ft/models/depth.py"],
              ["tests/test_depth_exact.py", *[f"tests/test_depth.py::{t}" for t in (
                  "test_quarters_partition_units", "test_by_stage_quarters_follow_stages",
                  "test_vgg_by_stage_uses_its_five_pooling_stages", "test_default_rules",
                  "test_resnet18_units_and_params", "test_param_rule_is_cumulative_share",
                  "test_table_lists_every_unit", "test_bad_range_strings_name_the_value",
                  "test_bad_truncate_names_the_value", "test_good_ranges",
                  "test_empty_selection_is_an_error")], "tests/test_properties.py"],
              None),
    "subsample": (["ssl_ft/data/subsample.py"],
                  ["tests/test_subsample_exact.py", "tests/test_data.py::test_subsample_edge_cases",
                   "tests/test_properties.py::test_label_fraction_counts_are_exact_largest_remainder",
                   "tests/test_properties.py::test_label_fraction_subsets_are_nested",
                   "tests/test_properties.py::test_limit_is_a_stratified_total"], None),
    "convert": (["ssl_ft/data/convert.py"], ["tests/test_convert.py"], None),
    "metrics": (["ssl_ft/metrics.py"], ["tests/test_metrics.py"], None),
    "checkpoint": (["ssl_ft/checkpoint/core.py", "ssl_ft/checkpoint/_files.py",
                    "ssl_ft/checkpoint/_plain.py", "ssl_ft/checkpoint/match.py"],
                   ["tests/test_checkpoint_exact.py", "tests/test_checkpoint_plain.py",
                    "tests/test_checkpoint.py"], None),
    "strategies": ([f"ssl_ft/finetune/strategies/{n}.py" for n in
                    ("base", "ft", "lp", "lp_ft", "gradual", "sp", "l1_sp", "l2_sp", "auto_rgn",
                     "discriminative")],
                   ["tests/test_finetune_strategies.py", "tests/test_strategy_units.py",
                    "tests/test_strategy_exact.py"], None),
    "corruptions": (["ssl_ft/methods/corruptions.py"],
                    ["tests/test_corruptions_exact.py", "tests/test_corruptions_reference.py",
                     "tests/test_corruptions.py", "tests/test_genesis_rates.py"], None),
    "losses": (["ssl_ft/methods/genesis.py", "ssl_ft/methods/inpainting.py",
                "ssl_ft/methods/autoencoder.py", "ssl_ft/methods/decoder.py"],
               ["tests/test_losses.py", "tests/test_genesis_rates.py"],
               ["genesis_corrupt", "Genesis.corrupt", "Inpainting.corrupt", "Autoencoder.corrupt",
                "RestorativeMethod.reconstruction_loss", "RestorativeMethod.forward"]),
    "fusion": (["ssl_ft/ensemble/members.py"], ["tests/test_fusion_features.py"],
               ["block_normalize", "_per_model", "file_sha256", "_feature_key"]),
    "stats": (["ssl_ft/study/report.py"], ["tests/test_study_stats.py"],
              ["summarize", "paired_differences", "_refuse_duplicates", "tally", "p_text",
               "_equals", "paired_tests"]),
}

_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
        ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot,
        ast.IsNot: ast.Is}
_BIN = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
        ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitAnd: ast.BitOr,
        ast.BitOr: ast.BitAnd}


@dataclass(frozen=True)
class Mutant:
    """One edit. ``id`` is ``file:function:what#k``: the k-th edit ``what`` (counted from 0 in
    source order) inside ``function`` (a qualname). It carries no line number, so it stays the
    same when other functions of the file are edited, or lines are added above it."""

    id: str
    file: str
    function: str
    line: int
    what: str
    index: int  # position in the walk of the file, to find the node again
    stmt_line: int = 0  # first line of the statement around the edit (what coverage records)


def _targets(node: ast.AST):
    """(child node, description) for each mutation of ``node`` itself."""
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _CMP:
                yield i, f"{type(op).__name__}->{_CMP[type(op)].__name__}"
    elif isinstance(node, ast.BinOp | ast.AugAssign) and type(node.op) in _BIN:
        yield None, f"{type(node.op).__name__}->{_BIN[type(node.op)].__name__}"
    elif isinstance(node, ast.BoolOp):
        yield None, "and->or" if isinstance(node.op, ast.And) else "or->and"
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub):
        yield None, f"drop {type(node.op).__name__}"
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
        yield None, (f"{node.value}->{not node.value}" if type(node.value) is bool
                     else f"{node.value!r}->{node.value + 1!r}")
    elif isinstance(node, ast.Return) and node.value is not None and not (
            isinstance(node.value, ast.Constant) and node.value.value is None):
        yield None, "return None"
    if isinstance(node, ast.AugAssign) or (isinstance(node, ast.Expr)
                                           and isinstance(node.value, ast.Call)):
        yield "drop", "drop statement"


def _apply(node: ast.AST, which, what: str) -> ast.AST:
    """The mutated replacement of ``node`` (a statement may become ``pass``)."""
    if which == "drop":
        return ast.Pass()
    if isinstance(node, ast.Compare):
        node.ops[which] = _CMP[type(node.ops[which])]()
    elif isinstance(node, ast.BinOp | ast.AugAssign):
        node.op = _BIN[type(node.op)]()
    elif isinstance(node, ast.BoolOp):
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif isinstance(node, ast.UnaryOp):
        return node.operand
    elif isinstance(node, ast.Constant):
        node.value = (not node.value) if type(node.value) is bool else node.value + 1
    elif isinstance(node, ast.Return):
        node.value = None
    return node


def _walk(tree: ast.Module, lines: list[str]):
    """(function qualname, node, parent, field, index-in-field, statement line) for every node
    inside a function body, skipping docstrings, f-strings, decorators, arguments and annotations."""

    def visit(node, qual, parent, field, pos, stmt=None):
        if isinstance(node, ast.JoinedStr | ast.arg | ast.arguments):
            return
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(
                node.value.value, str):
            return  # a docstring or a bare string
        if isinstance(node, ast.AnnAssign):
            node_fields = [("value", node.value)]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{qual}.{node.name}" if qual else node.name
            for i, child in enumerate(node.body):
                visit(child, name, node, "body", i)
            return
        else:
            node_fields = list(ast.iter_fields(node))
        if isinstance(node, ast.stmt):
            stmt = node
        if qual and getattr(node, "lineno", None) and not lines[node.lineno - 1].rstrip(
                ).endswith("# pragma: no mutate"):
            yield_list.append((qual, node, parent, field, pos, stmt.lineno))
        for fname, value in node_fields:
            if fname in ("annotation", "returns", "decorator_list"):
                continue
            if isinstance(value, list):
                for i, child in enumerate(value):
                    # zip(..., strict=True) -> False only shows with a bug elsewhere
                    if isinstance(child, ast.keyword) and child.arg == "strict":
                        continue
                    if isinstance(child, ast.AST):
                        visit(child, qual, node, fname, i, stmt)
            elif isinstance(value, ast.AST):
                visit(value, qual, node, fname, None, stmt)

    yield_list: list = []
    for i, stmt in enumerate(tree.body):
        visit(stmt, "", tree, "body", i)
    return yield_list


def mutants(source: str, file: str, functions: list[str] | None = None) -> list[Mutant]:
    """Every mutant of ``source`` inside the functions (qualnames) given, or all functions."""
    tree = ast.parse(source)
    lines = source.splitlines()
    out, index, seen = [], 0, {}
    for qual, node, *_, stmt_line in _walk(tree, lines):
        for _which, what in _targets(node):
            top = qual.split(".<locals>")[0]
            if _in_function(tree, qual) and (functions is None or _selected(top, functions)):
                k = seen.get((qual, what), 0)
                seen[(qual, what)] = k + 1
                out.append(Mutant(f"{file}:{qual}:{what}#{k}", file, qual, node.lineno, what,
                                  index, stmt_line))
            index += 1
    return out


def _selected(qual: str, functions: list[str]) -> bool:
    return any(qual == f or qual.startswith(f + ".") for f in functions)


def _in_function(tree: ast.Module, qual: str) -> bool:
    """False for class-level code (``qual`` names only classes)."""
    node: ast.AST = tree
    for part in qual.split("."):
        found = next((n for n in getattr(node, "body", []) if isinstance(
            n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and n.name == part), None)
        if found is None:
            return True  # nested deeper than we track: inside a function
        node = found
    return isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)


def mutated_tree(source: str, mutant: Mutant) -> ast.Module:
    """The module's AST with ``mutant`` applied."""
    tree = ast.parse(source)
    index = 0
    for _qual, node, parent, field, pos, _line in _walk(tree, source.splitlines()):
        for which, what in _targets(node):
            if index == mutant.index:
                assert what == mutant.what, (what, mutant)
                new = _apply(copy.deepcopy(node) if which != "drop" else node, which, what)
                slot = getattr(parent, field)
                if pos is None:
                    setattr(parent, field, new)
                else:
                    slot[pos] = new
                return ast.fix_missing_locations(tree)
            index += 1
    raise LookupError(f"mutant {mutant.id} not found in {mutant.file}")


def _code_for(code, qualname: str):
    for const in code.co_consts:
        if hasattr(const, "co_qualname"):
            if const.co_qualname == qualname:
                return const
            found = _code_for(const, qualname)
            if found is not None:
                return found
    return None


def _live_function(module, qual: str):
    obj = module
    for part in qual.split("."):
        obj = obj.__dict__[part] if isinstance(obj, type) else getattr(obj, part)
    if isinstance(obj, property):
        obj = obj.fget
    obj = getattr(obj, "__func__", obj)
    while hasattr(obj, "__wrapped__"):
        obj = obj.__wrapped__
    return obj


def install(mutant: Mutant, source: str, module) -> None:
    """Swap the mutated code of the outermost function around ``mutant`` into ``module``."""
    top = _outer(mutant.function, ast.parse(source))
    code = compile(mutated_tree(source, mutant), str(REPO / mutant.file), "exec")
    new = _code_for(code, top)
    if new is None:
        raise LookupError(f"no code object {top} in {mutant.file}")
    live = _live_function(module, top)
    if len(new.co_freevars) == len(live.__code__.co_freevars):
        live.__code__ = new
        return
    # a method whose mutant drops its only super() call loses the __class__ cell: put a new
    # function with the cells it still needs into the class instead
    import types

    cells = dict(zip(live.__code__.co_freevars, live.__closure__ or (), strict=True))
    fn = types.FunctionType(new, live.__globals__, live.__name__, live.__defaults__,
                            tuple(cells[v] for v in new.co_freevars) or None)
    fn.__kwdefaults__, fn.__qualname__ = live.__kwdefaults__, live.__qualname__
    owner = module
    for part in top.split(".")[:-1]:
        owner = getattr(owner, part)
    setattr(owner, top.split(".")[-1], fn)


def _outer(qual: str, tree: ast.Module) -> str:
    """The outermost enclosing function reachable as a module attribute (nested functions are
    swapped with the function that defines them)."""
    parts, node, out = qual.split("."), tree, []
    for part in parts:
        found = next((n for n in getattr(node, "body", []) if isinstance(
            n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and n.name == part), None)
        if found is None:
            break
        out.append(part)
        if isinstance(found, ast.FunctionDef | ast.AsyncFunctionDef):
            break
        node = found
    return ".".join(out)


# ---- running ---------------------------------------------------------------------------------

def _module_name(file: str) -> str:
    return file[:-3].replace("/", ".")


def _pytest_args(tests: list[str]) -> list[str]:
    # no:unraisableexception: its clean-up runs gc.collect() five times over torch's heap
    return ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:unraisableexception",
            "-p", "no:pytest_cov", "-p", "no:benchmark", "-p", "no:randomly", "--no-header",
            "-o", "addopts=", "-m", "not slow", *[str(REPO / t) for t in tests]]


def _fork(target, timeout: float) -> tuple[str, float]:
    """Run ``target()`` (returns an exit code) in a forked child; ``(outcome, seconds)``."""
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: quiet, run, leave without cleanup
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            code = int(target())
        except BaseException:  # noqa: BLE001  (a mutant may break anything)
            code = 3
        os._exit(code)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - t0 > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - t0
        time.sleep(0.02)
    code = os.waitstatus_to_exitcode(status)
    outcome = {0: "survived", 1: "killed"}.get(code, "error" if code != 5 else "no tests")
    return outcome, time.monotonic() - t0


def _baseline(files: list[str], tests: list[str], cov_out: Path) -> dict[str, float]:
    """Run the tests unmutated, in this process (so that every import is warm for the forked
    children), recording which test runs which lines of ``files`` (coverage contexts, one per
    test) into ``cov_out`` as ``{file: {line: [test node ids]}}``; returns each test's time."""
    import coverage
    import pytest

    cov = coverage.Coverage(data_file=None, include=[str(REPO / f) for f in files])
    timer = _PerTest(cov)
    cov.start()
    code = pytest.main([*_pytest_args(tests), "--no-summary"], plugins=[_Quiet(), timer])
    cov.stop()
    data = cov.get_data()
    by_line = {}
    for f in files:
        contexts = data.contexts_by_lineno(str(REPO / f)) if data.lines(str(REPO / f)) else {}
        by_line[f] = {str(line): sorted(c for c in ctx if c) for line, ctx in contexts.items()}
    cov_out.write_text(json.dumps(by_line))
    if code != 0:
        raise SystemExit(f"the tests {' '.join(tests)} do not pass unmutated (pytest exit "
                         f"{code}); run them with pytest first")
    gc.collect()
    gc.freeze()  # the children share this heap; their garbage collections skip it
    return timer.seconds


class _PerTest:
    """A pytest plugin that names the coverage context after the running test and times it."""

    def __init__(self, cov):
        self.cov, self.seconds = cov, {}

    def pytest_runtest_protocol(self, item, nextitem):  # noqa: ARG002 (pytest's signature)
        self.cov.switch_context(item.nodeid)
        self._t0 = time.monotonic()

    def pytest_runtest_logfinish(self, nodeid, location):  # noqa: ARG002
        self.seconds[nodeid] = self.seconds.get(nodeid, 0.0) + time.monotonic() - self._t0
        self.cov.switch_context("")


class _Quiet:
    """A pytest plugin that silences the terminal reporter of the in-process baseline."""

    def pytest_configure(self, config):
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            config.pluginmanager.unregister(reporter)


def _run_mutant(mutant: Mutant, source: str, tests: list[str], timeout: float) -> tuple[str, float]:
    """Run ``tests`` (pytest node ids) against ``mutant`` in a forked child."""
    import importlib

    import pytest

    def target() -> int:
        install(mutant, source, importlib.import_module(_module_name(mutant.file)))
        return pytest.main(_pytest_args(tests), plugins=[_Quiet()])

    return _fork(target, timeout)


def load_equivalent(path: Path = EQUIVALENT) -> dict[str, str]:
    """``{mutant id: reason}`` from ``path`` (``id  reason`` per line, ``#`` comments)."""
    out = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, reason = line.partition("  ")
                out[key.strip()] = reason.strip()
    return out


def _function_digests(source: str) -> dict[str, str]:
    """``{qualname: digest}`` of the source of each function reachable as a module attribute
    (top-level functions and methods): a mutant's result is kept while its function is
    unchanged, whatever else in the file is edited."""
    tree, out = ast.parse(source), {}

    def visit(body, prefix):
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                text = ast.get_source_segment(source, node, padded=True) or ""
                decorators = "".join(ast.unparse(d) for d in node.decorator_list)
                out[prefix + node.name] = hashlib.sha256(
                    (decorators + text).encode()).hexdigest()[:16]

    visit(tree.body, "")
    return out


def _previous(results_file: Path, tests_digest: str) -> dict[tuple[str, str], dict]:
    """The decided mutants of earlier runs, by (id, function digest): a killed mutant stays
    killed when tests are added; a survivor is run again once the mapped tests change, an error
    (the tool's, not the tests') always."""
    done = {}
    if results_file.is_file():
        for line in results_file.read_text().splitlines():
            r = json.loads(line)
            if r["outcome"] in ("killed", "timeout") or (
                    r.get("tests") == tests_digest and r["outcome"] != "error"):
                done[(r["id"], r["digest"])] = r
    return done


def _tests_for(m: Mutant, by_line: dict[str, dict[str, list[str]]],
               seconds: dict[str, float]) -> list[str]:
    """The node ids of the tests that run the mutated line (or its statement's first line),
    fastest first (with ``pytest -x`` the first failure ends the run)."""
    lines = by_line.get(m.file, {})
    found = {t for ln in {m.line, m.stmt_line} for t in lines.get(str(ln), [])}
    return sorted(found, key=lambda t: (seconds.get(t, float("inf")), t))


def run_module(name: str, out: Path, sample: int | None, seed: int, log=print,
               shard: tuple[int, int] = (0, 1)) -> list[dict]:
    """Mutate one module of :data:`MODULES`; returns (and appends to results.jsonl) a record
    per mutant: id, outcome (killed, timeout, survived, not covered, error), seconds. Each
    mutant runs only the mapped tests that execute its line (stopping at the first failure),
    with a time limit of three times their unmutated time plus 20 s."""
    files, tests, functions = MODULES[name]
    for mod in {_module_name(f) for f in files}:
        __import__(mod)
    for t in tests:
        if not (REPO / t.split("::")[0]).is_file():
            raise SystemExit(f"module {name}: test file {t} does not exist")
    sources = {f: (REPO / f).read_text() for f in files}
    fdigests = {f: _function_digests(s) for f, s in sources.items()}
    todo = [m for f in files for m in mutants(sources[f], f, functions)]
    if sample is not None and sample < len(todo):
        todo = sorted(random.Random(f"{seed}:{name}").sample(todo, sample), key=lambda m: m.index)
    todo = todo[shard[0]::shard[1]]  # --shard K/N: every N-th mutant from the K-th
    tests_digest = hashlib.sha256(b"".join(
        (REPO / t.split("::")[0]).read_bytes() for t in tests)).hexdigest()[:16]
    results_file = out / "results.jsonl"
    done = _previous(results_file, tests_digest)

    trees = {f: ast.parse(s) for f, s in sources.items()}
    keys = {m.id: (m.id, fdigests[m.file][_outer(m.function, trees[m.file])]) for m in todo}
    records = [done[keys[m.id]] for m in todo if keys[m.id] in done]
    todo = [m for m in todo if keys[m.id] not in done]
    if not todo:
        return records
    cov_file = out / f"coverage-{name}.json"
    seconds_of = _baseline(files, tests, cov_file)
    by_line = json.loads(cov_file.read_text())
    log(f"{name}: {len(todo)} mutants to run; the tests take {sum(seconds_of.values()):.1f} s "
        "unmutated")
    with results_file.open("a") as fh:
        for i, m in enumerate(todo, 1):
            selected = _tests_for(m, by_line, seconds_of)
            if not selected:
                outcome, seconds = "not covered", 0.0
            else:
                limit = 3 * sum(seconds_of.get(t, 0.0) for t in selected) + 20
                outcome, seconds = _run_mutant(m, sources[m.file], selected, limit)
            rec = {"module": name, "id": m.id, "digest": keys[m.id][1], "tests": tests_digest,
                   "line": m.line, "what": m.what, "outcome": outcome,
                   "seconds": round(seconds, 2), "ran": len(selected),
                   "code": sources[m.file].splitlines()[m.line - 1].strip()}
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            records.append(rec)
            if outcome not in ("killed", "timeout"):
                log(f"  [{i}/{len(todo)}] {outcome}: {m.id}  | {rec['code']}")
    return records


def score(records: list[dict], equivalent: dict[str, str]) -> dict[str, int | float | None]:
    """Counts and the mutation score ``killed / (mutants - equivalent)`` (timeouts count as
    killed: the tests noticed the change)."""
    eq = sum(r["id"] in equivalent for r in records)
    rest = [r for r in records if r["id"] not in equivalent]
    killed = sum(r["outcome"] in ("killed", "timeout") for r in rest)
    return {"mutants": len(records), "killed": killed,
            "survived": len(rest) - killed, "equivalent": eq,
            "score": round(100 * killed / len(rest), 1) if rest else None}


def report(by_module: dict[str, list[dict]], equivalent: dict[str, str], out: Path,
           command: str) -> str:
    """A Markdown table of the scores, then every surviving mutant."""
    lines = [f"Mutation testing, {time.strftime('%Y-%m-%d')}: `{command}`", "",
             "| module | mutants | killed | survived | equivalent | score |",
             "|---|---|---|---|---|---|"]
    total: list[dict] = []
    for name, records in by_module.items():
        s = score(records, equivalent)
        total += records
        lines.append(f"| {name} | {s['mutants']} | {s['killed']} | {s['survived']} | "
                     f"{s['equivalent']} | {s['score']} % |")
    s = score(total, equivalent)
    lines.append(f"| **all** | {s['mutants']} | {s['killed']} | {s['survived']} | "
                 f"{s['equivalent']} | {s['score']} % |")
    survivors = [r for r in total if r["outcome"] not in ("killed", "timeout")
                 and r["id"] not in equivalent]
    if survivors:
        lines += ["", "Survivors:", ""] + [
            f"* `{r['id']}` ({r['outcome']})" + (f": `{r['code']}`" if r.get("code") else "")
            for r in survivors]
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", action="append", choices=sorted(MODULES),
                        help="a module to mutate (repeatable; default: all)")
    parser.add_argument("--sample", type=int, default=None,
                        help="run N random mutants per module (seeded by --seed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / ".mutation"),
                        help="results folder (default .mutation/; reruns skip finished mutants)")
    parser.add_argument("--shard", default="0/1", metavar="K/N",
                        help="run only every N-th mutant from the K-th (0-based), e.g. two "
                             "processes with 0/2 and 1/2 share a module; results merge")
    parser.add_argument("--list", action="store_true",
                        help="print each module's files, tests and mutant count, run nothing")
    args = parser.parse_args(argv)
    if args.sample is not None and args.sample < 1:
        parser.error(f"--sample must be >= 1, got {args.sample}")
    try:
        k, n = (int(v) for v in args.shard.split("/"))
        if not 0 <= k < n:
            raise ValueError
    except ValueError:
        parser.error(f"--shard must be K/N with 0 <= K < N, got {args.shard!r}")
    names = args.module or list(MODULES)
    if args.list:
        for name in names:
            files, tests, functions = MODULES[name]
            n = sum(len(mutants((REPO / f).read_text(), f, functions)) for f in files)
            print(f"{name}: {n} mutants in {', '.join(files)}; tests {', '.join(tests)}")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(1)  # forking after a multi-threaded OpenMP region can hang a child
    equivalent = load_equivalent()
    by_module = {name: run_module(name, out, args.sample, args.seed, shard=(k, n))
                 for name in names}
    command = "python tools/mutation.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(report(by_module, equivalent, out, command.strip()))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
