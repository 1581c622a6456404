"""Study cells as submitit jobs (``ssl_ft.study.submit``): the tiny study through submitit's local
executor writes the same results.csv as the local runner; the pool reports a job that died and
keeps to its limit; the SLURM executor writes the recipe's resources into its sbatch script;
bad executor input is one line."""

from __future__ import annotations

import os
import pickle
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ssl_ft.study.submit import SlurmConfig, SubmititPool, executor_parameters, make_pool

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "study" / "tiny.yaml"


def _tiny_with_pretraining(tmp_path: Path) -> Path:
    """recipes/study/tiny.yaml, shrunk to three cells: a SimCLR pretraining the study runs itself,
    a fine-tuning of it and a fusion of it with a random resnet18 (both need the pretraining)."""
    d = yaml.safe_load(TINY.read_text())
    d["threads"] = 1
    d["pretrain"] = {"simclr": {"recipe": str(REPO / "recipes" / "quickstart.yaml"),
                                "overrides": ["train.epochs=1", "data.limit=64",
                                              "train.batch_size=32", "eval.every=0"]}}
    ft = d["finetune"]
    ft["base"].update(limit=96, epochs=1)
    ft["grid"].update({"checkpoint": ["simclr"], "layers,truncate": [["0-75", 75]],
                       "strategy": ["ft"], "label_fraction": [1.0], "seed": [0]})
    d["ensemble"]["base"]["limit"] = 96
    d["ensemble"]["grid"].update(checkpoints=[["random", "simclr"]], seed=[0])
    path = tmp_path / "tiny3.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def test_submitit_local_study_writes_the_results_of_the_local_runner(data_root, tmp_path, tool,
                                                                     capsys, monkeypatch):
    monkeypatch.setenv("SSL_FT_DATA", str(data_root))
    recipe, mod = _tiny_with_pretraining(tmp_path), tool("study")
    local, sub = tmp_path / "local", tmp_path / "sub"
    assert mod.run(mod.main, [str(recipe), f"out={local}"]) == 0
    assert mod.run(mod.main, [str(recipe), f"out={sub}", "--executor", "submitit-local"]) == 0
    assert "3 to run with 1 worker(s) x 1 thread(s) (submitit-local)" in capsys.readouterr().err
    jobs = {}  # cell kind -> (submitted, result) files of its job
    for sub_pkl in (sub / "submitit").glob("*/*_submitted.pkl"):
        with open(sub_pkl, "rb") as fh:
            kind = pickle.load(fh).args[0]
        jobs[kind] = (sub_pkl, sub_pkl.parent / f"{sub_pkl.parent.name}_0_result.pkl")
    assert sorted(jobs) == ["ensemble", "finetune", "pretrain"]  # one job a cell
    assert all(result.is_file() for _, result in jobs.values())
    # the pretraining had finished before the two jobs that need it were submitted
    done = jobs["pretrain"][1].stat().st_mtime
    assert all(jobs[k][0].stat().st_mtime >= done for k in ("finetune", "ensemble"))
    a, b = pd.read_csv(local / "results.csv"), pd.read_csv(sub / "results.csv")
    assert len(a) == 1 + 4  # the fine-tuning; the fusion, each model alone, late fusion
    assert a["test_auc"].between(0, 1).all() and a["test_auc"].nunique() > 1
    # the same rows with the same metric values (bitwise: same seeds, 1 thread each); a cell
    # id holds a digest of its checkpoint path, which lies under each study's own out folder;
    # images/s is a timing
    drop = ["cell", "peak_images_per_s", "wall_time_s", "cpu_time_s", "chooser_s"]  # timings
    pd.testing.assert_frame_equal(a.drop(columns=drop), b.drop(columns=drop), check_exact=True)
    # a study run again submits nothing: every cell is done
    assert mod.run(mod.main, [str(recipe), f"out={sub}", "--executor", "submitit-local"]) == 0
    assert "0 to run" in capsys.readouterr().err
    assert len(list((sub / "submitit").glob("*/*_submitted.pkl"))) == 3


def _cell_ok(kind, config, folder, threads):
    return f"{kind} {folder} {threads}"


def _cell_killed(kind, config, folder, threads):
    os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would


def test_pool_reports_a_job_that_died_and_keeps_to_its_limit(tmp_path):
    import cloudpickle
    import submitit

    import ssl_ft.study.submit as submit

    # the jobs unpickle these functions and CellTask without importing tests/ or ssl_ft (whose
    # torch import takes most of a job's start-up)
    for module in (sys.modules[__name__], submit):
        cloudpickle.register_pickle_by_value(module)
    ex = submitit.AutoExecutor(folder=str(tmp_path / "%j"), cluster="local")
    ex.update_parameters(timeout_min=5)
    pool = SubmititPool(ex, limit=1, poll_s=0.1)
    try:
        ok = pool.submit(_cell_ok, "finetune", {}, "cells/a", 2)
        dies = pool.submit(_cell_killed, "finetune", {}, "cells/b", 2)
        assert ok.result(timeout=120) == "finetune cells/a 2"
        with pytest.raises(RuntimeError, match=r"^job \d+ failed \(\w+Error: .*\); see .*log\.err$"):
            dies.result(timeout=120)
    finally:
        pool.shutdown()
        for module in (sys.modules[__name__], submit):
            cloudpickle.unregister_pickle_by_value(module)
    first, second = sorted(tmp_path.glob("*/*_submitted.pkl"), key=lambda p: p.stat().st_mtime)
    # limit 1: the second job was submitted only once the first had finished
    assert second.stat().st_mtime >= next(first.parent.glob("*_result.pkl")).stat().st_mtime


def _fake_slurm(tmp_path: Path, monkeypatch) -> Path:
    """sbatch that keeps the script it is given and answers with a job id, scancel that notes
    its arguments, sacct and srun that do nothing."""
    bin_dir, log = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir()
    log.mkdir()
    scripts = {"sbatch": f'cp "$1" {log}/job.sh\necho "Submitted batch job 4242"\n',
               "scancel": f'echo "$@" >> {log}/scancel\n', "sacct": "exit 0\n", "srun": "exit 1\n"}
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_slurm_jobs_ask_for_the_recipe_resources_and_are_cancelled(tmp_path, monkeypatch):
    from ssl_ft.study.runner import run_cell

    log = _fake_slurm(tmp_path, monkeypatch)
    cfg = SlurmConfig(partition="gpu", timeout_min=240, cpus_per_task=8, mem_gb=32,
                      gpus_per_node=2, account="radiology", setup=["module load cuda"])
    pool = make_pool("slurm", cfg, tmp_path / "jobs", "tiny", workers=1, poll_s=0.1)
    fut = pool.submit(run_cell, "finetune", {"data": "pneumoniamnist"}, str(tmp_path / "c"), 8)
    deadline = time.monotonic() + 30
    while not (log / "job.sh").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    pool.shutdown(cancel_futures=True)  # what Ctrl-C in the study does
    script = (log / "job.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=240", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --mem=32GB", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --ntasks-per-node=2",  # one task per GPU: a DDP cell
                 "#SBATCH --account=radiology", "#SBATCH --signal=USR2@120",
                 "#SBATCH --job-name=tiny", "module load cuda", "submitit.core._submit"):
        assert line in script, line
    assert (log / "scancel").read_text().split() == ["4242"]
    with pytest.raises(RuntimeError, match="job 4242 cancelled"):
        fut.result(timeout=1)


def test_executor_parameters_are_what_submitit_accepts(tmp_path, monkeypatch):
    import submitit

    _fake_slurm(tmp_path, monkeypatch)  # submitit's SLURM executor looks for srun
    params = executor_parameters(SlurmConfig(qos="high", constraint="a100",
                                             additional={"exclusive": True}), "s")
    assert params["tasks_per_node"] == 1 and "mem_gb" not in params  # no GPU: one task
    for cluster in ("slurm", "local"):  # update_parameters refuses unknown keys
        submitit.AutoExecutor(folder="/tmp/unused-%j", cluster=cluster).update_parameters(**params)


@pytest.mark.parametrize(("argv", "needle"), [
    (["executor=cloud"], "executor must be one of local, submitit-local, slurm, got 'cloud'"),
    (["--executor", "slurm"], "executor slurm: sbatch is not on the PATH"),
    (["executor=submitit-local", "slurm.nodes=2"], "LocalExecutor can use only one node"),
    (["slurm.timeout_min=0"], "slurm.timeout_min must be >= 1, got 0"),
    (["slurm.cpus=4"], "cpus"),
])
def test_bad_executor_input_is_one_line(data_root, tmp_path, tool, capsys, monkeypatch, argv,
                                        needle):
    monkeypatch.setenv("SSL_FT_DATA", str(data_root))
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # no sbatch here
    mod = tool("study")
    out = tmp_path / "s"
    assert mod.run(mod.main, [str(TINY), f"out={out}", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (out / "cells").exists()  # nothing ran
