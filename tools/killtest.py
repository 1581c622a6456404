#!/usr/bin/env python
"""Kill-anywhere test: SIGKILL pretrain.py, finetune.py and study.py at random moments and inside
every atomic checkpoint write, resume them, and check each trial ends bitwise equal to an
uninterrupted run.

    python tools/killtest.py --trials 20 --seed 0 --work /tmp/killtest --markdown table.md
    python tools/killtest.py --tools finetune --trials 3

For each tool, one uninterrupted reference run logs its atomic writes (``SSL_FT_WRITE_LOG``).
Trial ``i`` then kills a fresh run either inside its k-th atomic write (``SSL_FT_KILL_AT_WRITE=k``:
after the temp file is complete, before the rename; k takes every write index of the reference
once, in a seeded shuffled order, so each checkpoint write is hit when there are at most
``trials - 4`` of them) or after a delay drawn uniformly over the reference's duration
(every other such trial also kills the first resume). The run is then resumed once more
(``--resume``; the same command for study.py) and must end with status 0, with every tensor of every
``.pt`` file (weights, heads, optimiser states) and every metrics file equal to the reference's,
and with no temporary or lock file left. Wall-clock fields (keys named ``seconds`` or ending
in ``_seconds`` or ``_s``, such as ``images_per_s``, a checkpoint's ``created``, and
``precision_auto``, the timed fp32/bf16 steps behind ``train.precision: auto``) are left out of
the comparison; everything else, the ``precision`` chosen included, must match exactly.
Every run of a tool uses the same folder, so paths inside the files match too.

The runs are tiny (64 PneumoniaMNIST images, 2 epochs, batches of 32) and deterministic
(``train.deterministic=true``; fine-tuning on the CPU with one thread). Each run is a fork of
this process, made after it imported the tools' modules (the child sets the run's environment,
working folder and log, calls the tool's ``main`` as ``python tools/X.py`` would and exits with
its status); the SIGKILL is a real one, of that process. ``--fresh`` runs every command as a new
Python process instead (slower by the imports of each run). Exit status 0 if every trial
finished and matched, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Wall-clock fields, the only ones left out of the comparison: by the library's naming,
#: ``seconds`` and keys ending in ``_seconds`` or ``_s`` (``images_per_s``, ``wall_time_s``,
#: ``probe_seconds``, ...), ``created`` (a checkpoint's write time) and ``precision_auto`` (the
#: timed steps behind ``train.precision: auto``, ssl_ft.pretrain.precision; the precision it
#: chose is the ``precision`` key beside it, compared).
TIMING_SUFFIXES = ("_seconds", "_s")
TIMING_KEYS = ("seconds", "created", "precision_auto")
#: Files that hold nothing but wall-clock records (a study's, ssl_ft.study.profile_report).
TIMING_FILES = ("timing.jsonl", "profile.json")


def is_timing(key: object) -> bool:
    """Whether ``key`` names a wall-clock field (see :data:`TIMING_SUFFIXES`)."""
    return isinstance(key, str) and (key in TIMING_KEYS or key.endswith(TIMING_SUFFIXES))
TINY_PRETRAIN = ["data.limit=64", "train.batch_size=32", "train.epochs=2", "eval.every=1",
                 "eval.limit=64", "train.deterministic=true", "train.save_every=1",
                 "train.threads=1"]


def study_recipe(work: Path) -> Path:
    """A study with a pretraining cell, two fine-tuning cells and a fusion cell."""
    text = f"""name: killtest
out: {work / "study" / "run"}
workers: 1
threads: 1
pretrain:
  simclr:
    recipe: {REPO / "recipes" / "quickstart.yaml"}
    data: pneumoniamnist
    overrides: [{", ".join(o for o in TINY_PRETRAIN if "threads" not in o)}]
finetune:
  base: {{limit: 64, epochs: 2, batch_size: 32, arch: resnet18, strategy: lp-ft}}
  grid: {{data: [pneumoniamnist], checkpoint: [simclr, none], seed: [0]}}
ensemble:
  base: {{limit: 64, arch: resnet18}}
  grid: {{data: [pneumoniamnist], checkpoints: [[simclr, none]], seed: [0]}}
"""
    path = work / "study.yaml"
    path.write_text(text)
    return path


def commands(tool: str, work: Path) -> tuple[list[str], list[str], Path]:
    """(first command, resume command, run folder) of a tool's tiny run."""
    py = [sys.executable, str(REPO / "tools" / f"{tool}.py")]
    out = work / tool / "run"
    if tool == "pretrain":
        cmd = [*py, str(REPO / "recipes" / "quickstart.yaml"), f"out={out}", *TINY_PRETRAIN]
        return cmd, [*cmd, "--resume"], out
    if tool == "finetune":
        cmd = [*py, "--checkpoint", "none", "--arch", "resnet18", "--limit", "64", "--epochs",
               "2", "--batch-size", "32", "--strategy", "lp-ft", "--out", str(out), "threads=1"]
        return cmd, [*cmd, "--resume"], out
    cmd = [*py, str(study_recipe(work))]
    return cmd, cmd, work / "study" / "run"


def _tensors(tree, prefix: str = "") -> dict[str, object]:
    """Every leaf of a checkpoint's nested state by key path: a tensor as dtype, shape and the
    SHA-256 of its bytes; a JSON string (pretraining's history rows) decoded without timing
    fields; any other value as it is."""
    import torch

    if isinstance(tree, torch.Tensor):
        t = tree.detach().cpu().contiguous()
        data = t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
        return {prefix.rstrip("."): f"{t.dtype} {tuple(t.shape)} "
                                    f"{hashlib.sha256(data).hexdigest()}"}
    if isinstance(tree, dict | list | tuple):
        items = tree.items() if isinstance(tree, dict) else enumerate(tree)
        out: dict[str, object] = {}
        for key, value in items:
            if not is_timing(key):
                out.update(_tensors(value, f"{prefix}{key}."))
        return out
    if isinstance(tree, str) and tree.startswith("{"):
        try:
            return {prefix.rstrip("."): _drop_timing(json.loads(tree))}
        except ValueError:
            pass
    return {prefix.rstrip("."): tree}


def _drop_timing(obj):
    if isinstance(obj, dict):
        return {k: _drop_timing(v) for k, v in obj.items() if not is_timing(k)}
    if isinstance(obj, list):
        return [_drop_timing(v) for v in obj]
    return obj


def fingerprint(out: Path) -> dict[str, object]:
    """What must be bitwise equal: every tensor and metadata value of every .pt file, every
    JSON, JSON-lines and CSV file (without wall-clock fields), the recipes and the study's
    report."""
    import torch

    fp: dict[str, object] = {}
    for path in sorted(out.rglob("*")):
        rel = str(path.relative_to(out))
        if path.name in TIMING_FILES:
            continue
        if path.suffix == ".pt":
            obj = torch.load(path, map_location="cpu", weights_only=True)
            fp[rel] = _tensors({k: obj[k] for k in ("backbone", "extra", "meta")})
        elif path.suffix == ".json":
            fp[rel] = _drop_timing(json.loads(path.read_text()))
        elif path.suffix == ".jsonl":
            fp[rel] = [_drop_timing(json.loads(line)) for line in path.read_text().splitlines()]
        elif path.suffix == ".csv":
            import pandas as pd

            df = pd.read_csv(path)
            fp[rel] = df.drop(columns=[c for c in df.columns if is_timing(c)]).to_csv(index=False)
        elif path.name in ("recipe.yaml", "results.md"):
            fp[rel] = path.read_text()
    return fp


def leftovers(*folders: Path) -> list[str]:
    """Temporary files of atomic writes and lock files still there after a finished run."""
    return [str(p) for f in folders if f.exists() for p in f.rglob(".*")
            if ".tmp" in p.name or p.name == ".lock"]


def difference(a: dict, b: dict) -> str | None:
    """The first file (and tensor) whose fingerprint differs, or None."""
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
                inner = [k for k in sorted(set(a[key]) | set(b[key]))
                         if a[key].get(k) != b[key].get(k)]
                return f"{key}: {inner[0] if inner else '?'}"
            return key if key in a and key in b else f"{key} (only in one run)"
    return None


#: Modules a forked run would otherwise import itself (seconds of CPU each time).
PRELOAD = ("torch", "torchvision", "sklearn.linear_model", "sklearn.neighbors", "pandas",
           "ssl_ft.pretrain", "ssl_ft.finetune", "ssl_ft.ensemble", "ssl_ft.study",
           "ssl_ft.runlock", "torch.utils.tensorboard")
_tools: dict[str, object] = {}


def preload() -> None:
    """Import what the tools import, once, in this process: each forked run starts from it."""
    import importlib
    import importlib.util

    for name in PRELOAD:
        importlib.import_module(name)
    for tool in ("pretrain", "finetune", "study"):
        spec = importlib.util.spec_from_file_location(f"{tool}_tool", REPO / "tools" / f"{tool}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _tools[str(REPO / "tools" / f"{tool}.py")] = module


def _forked(cmd: list[str], env: dict, log: Path) -> int:
    """Fork; the child runs the tool's ``main`` on ``cmd[2:]`` as ``python cmd[1] ...`` would
    (same environment, working folder, stdout/stderr to ``log``, exit status) and never
    returns. Returns the child's pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.chdir(REPO)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = cmd[1:]
        from ssl_ft.checkpoint import _files
        from ssl_ft.cli import run as run_main

        _files._writes = 0  # SSL_FT_KILL_AT_WRITE counts this run's writes, not the parent's

        code = run_main(_tools[cmd[1]].main, cmd[2:])
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # a bug: its traceback goes to the log
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _status(pid: int, kill_after: float | None) -> int:
    """Wait for ``pid`` (SIGKILL it after ``kill_after`` seconds); its return code as
    subprocess reports one (``-9`` when killed)."""
    deadline = None if kill_after is None else time.monotonic() + kill_after
    while True:
        done, status = os.waitpid(pid, 0 if deadline is None else os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        time.sleep(0.01)


def run(cmd: list[str], env: dict, log: Path, kill_after: float | None = None) -> int:
    """Run ``cmd`` to its end (or SIGKILL it after ``kill_after`` seconds); its return code.
    After :func:`preload` the run is a fork of this process, else a new process."""
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
    if _tools:
        return _status(_forked(cmd, env, log), kill_after)
    with open(log, "a") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=fh, cwd=REPO)
        if kill_after is None:
            return proc.wait()
        try:
            return proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            return proc.wait()


def reference(tool: str, work: Path, env: dict) -> tuple[dict, list[str], float]:
    """Fingerprint, logged write targets and duration of an uninterrupted run."""
    first, _, out = commands(tool, work)
    shutil.rmtree(work / tool, ignore_errors=True)
    (work / tool).mkdir(parents=True)
    writes = work / tool / "writes.txt"
    t0 = time.perf_counter()
    code = run(first, {**env, "SSL_FT_WRITE_LOG": str(writes),
                       "SSL_FT_CACHE": str(work / tool / "cache")}, work / tool / "reference.log")
    seconds = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"the reference {tool} run failed ({code}); see {work / tool}")
    targets = [str(Path(p).relative_to(out)) if p.startswith(str(out)) else p
               for p in writes.read_text().splitlines()]
    return fingerprint(out), targets, seconds


def trial(tool: str, work: Path, env: dict, plan: dict, ref: dict) -> dict:
    """One kill (or two) and resume; the outcome as a table row."""
    first, resume, out = commands(tool, work)
    shutil.rmtree(out, ignore_errors=True)
    cache = work / tool / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**env, "SSL_FT_CACHE": str(cache)}
    log = work / tool / f"trial{plan['i']:02d}.log"
    log.unlink(missing_ok=True)
    kill_env = {**env, "SSL_FT_KILL_AT_WRITE": str(plan["write"])} if plan.get("write") else env
    codes = [run(first, kill_env, log, plan.get("delay"))]
    if plan.get("second") is not None:  # kill the resume too
        codes.append(run(resume, env, log, plan["second"]))
    codes.append(run(resume, env, log))  # one resume, to the end: it must exit 0
    killed = [c == -signal.SIGKILL for c in codes]
    diff = difference(ref, fingerprint(out)) if codes[-1] == 0 else "did not finish"
    return {**plan, "codes": codes, "killed": sum(killed), "finished": codes[-1] == 0,
            "equal": diff is None, "diff": diff, "leftovers": leftovers(out, cache)}


def plans(n: int, writes: list[str], seconds: float, rng: random.Random) -> list[dict]:
    """Trials: the first ones kill inside each logged write once (in a shuffled order; all of
    them if at most ``n - 4``), the rest at random times (every other one also kills the first
    resume)."""
    order = list(range(1, len(writes) + 1))
    rng.shuffle(order)
    in_write = min(len(order), max(n - 4, (n + 1) // 2))
    out = []
    for i in range(n):
        if i < in_write:
            k = order[i]
            out.append({"i": i, "write": k, "target": writes[k - 1]})
        else:
            second = rng.uniform(0.3, 1.0) * seconds if i % 2 else None
            out.append({"i": i, "delay": round(rng.uniform(0.05, 1.0) * seconds, 2),
                        "second": None if second is None else round(second, 2)})
    return out


def markdown(summary: dict[str, dict]) -> str:
    lines = ["| tool | trials | killed inside a write (of distinct writes) | killed at a random "
             "moment (+ again in the resume) | kill came after the end | finished (exit 0) | "
             "bitwise equal | temp/lock files left |", "|---|---|---|---|---|---|---|---|"]
    for tool, s in summary.items():
        lines.append(f"| {tool} | {s['trials']} | {s['in_write']} (of {s['writes']}) | "
                     f"{s['timed']} (+{s['double']}) | {s['missed']} | {s['finished']} | "
                     f"{s['equal']} | {s['leftovers']} |")
    return "\n".join(lines) + "\n"


def summarize(rows: list[dict], writes: list[str]) -> dict:
    timed = [r for r in rows if "delay" in r]
    return {"trials": len(rows), "writes": len(writes),
            "in_write": sum(1 for r in rows if "write" in r and r["killed"]),
            "timed": sum(1 for r in timed if r["killed"]),
            "double": sum(1 for r in timed if r["killed"] >= 2),
            "missed": sum(1 for r in rows if not r["killed"]),
            "finished": sum(r["finished"] for r in rows), "equal": sum(r["equal"] for r in rows),
            "leftovers": sum(len(r["leftovers"]) for r in rows)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="killtest.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tools", nargs="+", default=["pretrain", "finetune", "study"],
                   choices=["pretrain", "finetune", "study"])
    p.add_argument("--trials", type=int, default=20, help="trials per tool (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="runs/killtest", help="scratch folder (default runs/killtest)")
    p.add_argument("--json", help="write every trial's outcome here")
    p.add_argument("--markdown", help="write the summary table here")
    p.add_argument("--fresh", action="store_true",
                   help="run each tool as a new Python process (default: a fork of this "
                        "process after it imported the tools' modules, which saves their "
                        "import time on every run)")
    args = p.parse_args(argv)
    if not args.fresh:
        preload()
    work = Path(args.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rng = random.Random(args.seed)
    summary, details = {}, {}
    for tool in args.tools:
        ref, writes, seconds = reference(tool, work, env)
        print(f"{tool}: reference {seconds:.0f} s, {len(writes)} atomic writes", file=sys.stderr)
        rows = []
        for plan in plans(args.trials, writes, seconds, rng):
            row = trial(tool, work, env, plan, ref)
            rows.append(row)
            what = f"write {row['write']} ({row['target']})" if "write" in row else \
                f"t={row['delay']} s" + (f", resume at {row['second']} s" if row["second"] else "")
            print(f"  trial {row['i']:2d} {what}: codes {row['codes']}, "
                  f"{'equal' if row['equal'] else 'DIFFERENT: ' + str(row['diff'])}"
                  f"{', LEFT ' + ', '.join(row['leftovers']) if row['leftovers'] else ''}",
                  file=sys.stderr)
        summary[tool] = summarize(rows, writes)
        details[tool] = {"reference_seconds": seconds, "writes": writes, "trials": rows}
    table = markdown(summary)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "details": details}, indent=1))
    ok = all(s["finished"] == s["equal"] == s["trials"] and not s["leftovers"]
             for s in summary.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
