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

The mutants themselves (AST edits, ids, swapping code into live functions) are in
``tools/mutation_ast.py``.
"""

from __future__ import annotations

import argparse
import ast
import gc
import hashlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/ is not a package
from mutation_ast import (  # noqa: E402
    Mutant,
    _function_digests,
    _outer,
    install,
    mutants,
)

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
                    "tests/test_checkpoint_load_exact.py", "tests/test_checkpoint_files.py",
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

# ---- running ---------------------------------------------------------------------------------

def _module_name(file: str) -> str:
    return file[:-3].replace("/", ".")


def _pytest_args(tests: list[str]) -> list[str]:
    # no:unraisableexception: its clean-up runs gc.collect() five times over torch's heap
    return ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:unraisableexception",
            "-p", "no:pytest_cov", "-p", "no:benchmark", "-p", "no:randomly", "--no-header",
            "-o", "addopts=", "-m", "not slow", *[str(REPO / t) for t in tests]]


def _die_with_parent() -> None:
    """Linux: the kernel kills this child when its parent dies (a stopped run leaves no mutant
    running on; the parent enforces the time limit)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _fork(target, timeout: float) -> tuple[str, float]:
    """Run ``target()`` (returns an exit code) in a forked child; ``(outcome, seconds)``."""
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: quiet, run, leave without cleanup
        _die_with_parent()
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
    """Run ``tests`` (pytest node ids) against ``mutant`` in a forked child, with its own
    ``--basetemp`` that is removed afterwards (the child leaves through ``os._exit``, so pytest
    would keep its locked temp folder, and the checkpoints its tests wrote, for 3 days)."""
    import importlib
    import shutil
    import tempfile

    import pytest

    basetemp = tempfile.mkdtemp(prefix="ssl_ft-mutant-")

    def target() -> int:
        install(mutant, source, importlib.import_module(_module_name(mutant.file)))
        return pytest.main([*_pytest_args(tests), f"--basetemp={basetemp}"], plugins=[_Quiet()])

    try:
        return _fork(target, timeout)
    finally:
        shutil.rmtree(basetemp, ignore_errors=True)


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


def _previous(results_file: Path, tests_digest: str) -> dict[tuple[str, str], dict]:
    """The decided mutants of earlier runs, by (id, function digest): a killed mutant stays
    killed when tests are added; a survivor is run again once the mapped tests change, an error
    (the tool's, not the tests') always."""
    done = {}
    if results_file.is_file():
        for line in results_file.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a line cut short (a full disk, a killed run)
                continue
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
