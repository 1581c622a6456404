"""The bad-input matrix (issue 17): every tool refuses bad input with exit status 2, exactly one
line on stderr that names the bad value, no traceback, and nothing left that looks like a
result. Each case fails before any training; most run the tool's ``main()`` in this process
(through :func:`ssl_ft.cli.run`, as the scripts do), a few as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_ft.cli import run

REPO = Path(__file__).resolve().parents[1]
QUICK = str(REPO / "recipes" / "quickstart.yaml")
TINY_STUDY = str(REPO / "recipes" / "study" / "tiny.yaml")
RESULTS = {"metrics.json", "checkpoint.pt", "last.pt", "best.pt", "model.pt", "results.csv",
           "results.md", "metrics.jsonl", "probe.json"}
PT = ["train.threads=1", "train.epochs=1", "data.limit=64", "train.batch_size=32"]
GARBAGE = "garbage.pt: not a PyTorch or safetensors file"
FT = ["--limit", "64", "--epochs", "1", "--batch-size", "32", "threads=1"]


PAYLOAD_RAN = "payload_ran"  # a file the pickled payload would create if it were unpickled
UNPICKLE = "torch.load(weights_only=True) refuses to unpickle"


class _Payload:
    """Unpickled, this object would call ``open(path, "w")``: a file appears if code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
def inputs(data_root, tmp_path_factory) -> dict[str, str]:
    """Bad (and a few good) files the cases refer to as ``{name}``."""
    d = tmp_path_factory.mktemp("inputs")
    with np.load(data_root / "pneumoniamnist.npz") as npz:
        base = {k: npz[k][:120] for k in npz.files}

    def npz(name, **labels):
        arrays = dict(base)
        for split, fn in labels.items():
            arrays[f"{split}_labels"] = fn(arrays[f"{split}_labels"].copy())
        np.savez(d / f"{name}.npz", **arrays)

    one = {s: np.zeros_like for s in ("train", "val", "test")}
    npz("oneclass", **one)
    npz("gaps", **{s: (lambda v: np.where(v == 1, 5, v)) for s in ("train", "val", "test")})
    npz("testonly", test=lambda v: np.where(v == 1, 2, v))  # a class 2 that train lacks
    (d / "manifest.json").write_text('{"datasets": {"testonly": {"files": ["testonly.npz"], '
                                     '"labels": ["a", "b", "c"]}}}')
    (d / "file").write_text("a regular file\n")
    (d / "empty.yaml").write_text("# nothing but a comment\n")
    (d / "empty_grid.yaml").write_text(f"name: e\nout: {d / 'e'}\nfinetune:\n  base: {{epochs: 1}}\n")
    (d / "garbage.pt").write_bytes(b"not a checkpoint at all")
    from ssl_ft.checkpoint import save_checkpoint
    from ssl_ft.models import create_backbone

    torch.manual_seed(0)
    backbone = create_backbone("resnet18", in_chans=1)
    meta = {"method": "simclr", "family": "contrastive", "arch": "resnet18", "in_chans": 1,
            "image_size": 28, "stem": "standard",
            "normalization": {"mean": [0.5], "std": [0.25], "max_value": 255}, "recipe": {},
            "data": "pneumoniamnist", "data_fingerprint": "0" * 64, "epoch": 1}
    save_checkpoint(d / "good.pt", backbone.state_dict(), meta)
    state = backbone.state_dict()
    state["layer2.0.bn1.running_var"] = torch.full_like(state["layer2.0.bn1.running_var"],
                                                        float("inf"))
    save_checkpoint(d / "inf.pt", state, meta)
    state["layer1.0.conv1.weight"] = state["layer1.0.conv1.weight"].clone()
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    save_checkpoint(d / "nan.pt", state, meta)
    torch.save({"backbone": _Payload(d / PAYLOAD_RAN)}, d / "payload.pt")
    names = {p.stem: str(p) for p in d.iterdir() if p.suffix != ".json"}
    return {**names, "tmp": str(d), "root": str(data_root), "file_dir": str(d / "file" / "x")}


# (tool, argv, what the error line must contain); {name} is a file of `inputs`, {out} the
# case's own output folder
CASES: list[tuple[str, list[str], str]] = [
    # ------------------------------------------------------------------ pretrain
    ("pretrain", [QUICK, "data.size=1", "out={out}", *PT], "image size 1 px"),
    ("pretrain", [QUICK, "data.name={oneclass}", "out={out}", *PT], "one class only"),
    ("pretrain", [QUICK, "data.name={gaps}", "out={out}", *PT], "classes 1, 2, 3, 4"),
    ("pretrain", [QUICK, "data.name={testonly}", "out={out}", *PT], "test holds class 2"),
    ("pretrain", ["{empty}", "out={out}"], "is empty"),
    ("pretrain", [QUICK, "train.lr=.nan", "out={out}"], "train.lr = nan"),
    ("pretrain", [QUICK, "train.lr=-1e-3", "out={out}"], "yaml: train.lr must be > 0"),
    ("pretrain", [QUICK, "train.epochs=0", "out={out}"], "train.epochs must be >= 1"),
    ("pretrain", [QUICK, "train.lr=1e6x", "out={out}"], "train.lr = '1e6x'"),
    ("pretrain", [QUICK, "model.weights={garbage}", "out={out}", *PT], GARBAGE),
    ("pretrain", [QUICK, "model.weights={nan}", "out={out}", *PT], "layer1.0.conv1.weight"),
    ("pretrain", [QUICK, "model.weights={payload}", "out={out}", *PT], UNPICKLE),
    ("pretrain", [QUICK, "out={file_dir}", *PT], "file/x: Not a directory"),
    ("pretrain", [QUICK, "data.limit=0", "out={out}"], "limit must be a positive integer"),
    ("pretrain", [QUICK, "out={out}", "--epochs=3"], "unrecognized arguments: --epochs=3"),
    ("pretrain", [QUICK, "train.batch_size=500", "out={out}", "train.threads=1",
                  "data.limit=64"], "train.batch_size 500"),
    # ------------------------------------------------------------------ finetune
    ("finetune", ["--checkpoint", "{good}", "--data", "{oneclass}", "--out", "{out}", *FT],
     "one class only"),
    ("finetune", ["--checkpoint", "{good}", "--data", "{gaps}", "--out", "{out}", *FT],
     "classes 1, 2, 3, 4 have no training images"),
    ("finetune", ["--checkpoint", "{good}", "--data", "{testonly}", "--out", "{out}", *FT],
     "test holds class 2"),
    ("finetune", ["--checkpoint", "{good}", "--size", "1", "--out", "{out}", *FT],
     "image size 1 px"),
    ("finetune", ["--checkpoint", "{nan}", "--out", "{out}", *FT], "layer1.0.conv1.weight"),
    ("finetune", ["--checkpoint", "{inf}", "--out", "{out}", *FT],
     "layer2.0.bn1.running_var"),
    ("finetune", ["--checkpoint", "{garbage}", "--out", "{out}", *FT], GARBAGE),
    ("finetune", ["--checkpoint", "{payload}", "--out", "{out}", *FT], UNPICKLE),
    ("finetune", ["--checkpoint", "{good}", "--label-fraction", "1.5", "--out", "{out}", *FT],
     "label_fraction must be in (0, 1], got 1.5"),
    ("finetune", ["{empty}", "--checkpoint", "{good}", "--out", "{out}"], "is empty"),
    ("finetune", ["--checkpoint", "{good}", "--lr", "nan", "--out", "{out}", *FT],
     "lr = nan"),
    ("finetune", ["--checkpoint", "{good}", "--layers", "50-25", "--out", "{out}", *FT],
     "50-25"),
    ("finetune", ["--checkpoint", "{good}", "--out", "{file_dir}", *FT],
     "file/x: Not a directory"),
    ("finetune", ["--checkpoint", "{good}", "--epochs", "1.5", "--out", "{out}"],
     "argument --epochs: invalid int value: '1.5'"),
    ("finetune", ["--checkpoint", "{good}", "--strategy", "lp-fft", "--out", "{out}", *FT],
     "lp-fft"),
    # ------------------------------------------------------------------ ensemble
    ("ensemble", ["--checkpoint", "{good}", "--checkpoint", "none", "--arch", "resnet18",
                  "--data", "{oneclass}", "--out", "{out}", "--cache-dir", "{tmp}/cache",
                  "--limit", "64", "threads=1"], "one class only"),
    ("ensemble", ["--checkpoint", "{good}", "--checkpoint", "{nan}", "--out", "{out}",
                  "--cache-dir", "{tmp}/cache", "--limit", "64", "threads=1"],
     "layer1.0.conv1.weight"),
    ("ensemble", ["--checkpoint", "{good}", "--checkpoint", "none", "--arch", "resnet18",
                  "--out", "{file_dir}", "--cache-dir", "{tmp}/cache", "--limit", "64",
                  "threads=1"], "file/x: Not a directory"),
    ("ensemble", ["--checkpoint", "{good}", "--checkpoint", "none", "--arch", "resnet18",
                  "--out", "{out}", "--cache-dir", "{file_dir}", "--limit", "64",
                  "threads=1"], "file is a file, not a folder"),
    ("ensemble", ["--checkpoint", "{good}", "--checkpoint", "{good}", "--depth", "deep",
                  "--out", "{out}"], "'deep'"),
    ("ensemble", ["--checkpoint", "{good}", "--out", "{out}", "--cache-dir", "{tmp}/cache"],
     "at least two checkpoints, got 1"),
    ("ensemble", ["--checkpoint", "{good}", "--checkpoint", "{good}", "--depth", "50",
                  "--depth", "75", "--depth", "100", "--out", "{out}", "--cache-dir",
                  "{tmp}/cache", "--limit", "64"], "3 --depth values for 2 checkpoints"),
    ("ensemble", ["{empty}", "--out", "{out}"], "is empty"),
    ("ensemble", ["--checkpoint", "{good}", "--checkpoint", "{payload}", "--arch", "resnet18",
                  "--out", "{out}", "--cache-dir", "{tmp}/cache", "--limit", "64"], UNPICKLE),
    ("ensemble", ["--checkpoint", "{good}", "--checkpoint", "none", "--arch", "resnet18",
                  "--data", "{gaps}", "--out", "{out}", "--cache-dir", "{tmp}/cache",
                  "--limit", "64", "threads=1"], "classes 1, 2, 3, 4"),
    # ------------------------------------------------------------------ probe
    ("probe", ["--checkpoint", "{good}", "--data", "{oneclass}", "--out", "{out}/probe.json"],
     "one class only"),
    ("probe", ["--checkpoint", "{good}", "--data", "pneumoniamnist", "--limit", "64",
               "--out", "{file_dir}/probe.json"], "file is a file, not a folder"),
    ("probe", ["--checkpoint", "{good}", "--data", "pneumoniamnist", "--seed", "abc"],
     "argument --seed: invalid int value: 'abc'"),
    ("probe", ["--checkpoint", "{good}", "--data", "pneumoniamnist", "--limit", "64",
               "--out", "{tmp}"], "it is a folder"),
    ("probe", ["--checkpoint", "{nan}", "--data", "pneumoniamnist", "--out",
               "{out}/probe.json"], "layer1.0.conv1.weight"),
    ("probe", ["--checkpoint", "{garbage}", "--data", "pneumoniamnist"], GARBAGE),
    ("probe", ["--checkpoint", "{payload}", "--arch", "resnet18", "--data", "pneumoniamnist"],
     UNPICKLE),
    ("probe", ["--checkpoint", "{tmp}/missing.pt", "--data", "pneumoniamnist"], "missing.pt"),
    ("probe", ["--checkpoint", "{good}", "--data", "{gaps}", "--out", "{out}/probe.json"],
     "classes 1, 2, 3, 4"),
    ("probe", ["--checkpoint", "{good}", "--size", "1", "--data", "pneumoniamnist",
               "--limit", "64", "--out", "{out}/probe.json"], "image size 1 px"),
    # ------------------------------------------------------------------ study
    ("study", [TINY_STUDY, "out={file_dir}"], "file/x: Not a directory"),
    ("study", [TINY_STUDY, "out={out}", "--executor", "cloud"],
     "argument --executor: invalid choice: 'cloud'"),
    ("study", ["{empty}"], "is empty"),
    ("study", ["{empty_grid}", "out={out}"], "finetune.grid is empty"),
    ("study", [TINY_STUDY, "out={out}", "workers=0"], "workers must be >= 1"),
    ("study", [TINY_STUDY, "out={out}", "finetune.grid.seed=[]"], "'seed' must be a non-empty"),
    ("study", [TINY_STUDY, "out={out}", "finetune.base.lr=.inf"], "lr = inf"),
    # ------------------------------------------------------------------ depthmap, summarize
    ("depthmap", ["--checkpoint", "{nan}"], "layer1.0.conv1.weight"),
    ("depthmap", ["--checkpoint", "{garbage}"], GARBAGE),
    ("depthmap", ["--checkpoint", "{payload}"], UNPICKLE),
    ("depthmap", ["--arch", "resnet18", "--layers", "0-200"], "0-200"),
    ("depthmap", ["--arch", "resnet19"], "argument --arch: invalid choice: 'resnet19'"),
    ("summarize", ["{tmp}/nothing_here"], "nothing_here"),
    ("summarize", ["{tmp}"], "no metrics.json"),
]


def _case_id(case) -> str:
    tool, argv, needle = case
    return f"{tool}-{needle[:30]}"


def _argv(argv: list[str], inputs: dict[str, str], out: Path) -> list[str]:
    return [a.format(out=out, **inputs) for a in argv]


def _results_left(*folders: Path) -> list[Path]:
    return [p for f in folders if f.exists() for p in f.rglob("*") if p.name in RESULTS]


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case, inputs, tmp_path, tool, capsys, monkeypatch):
    name, argv, needle = case
    monkeypatch.chdir(tmp_path)  # a tool's default out= lands here, never in the repository
    monkeypatch.setenv("SSL_FT_DATA", inputs["root"])
    monkeypatch.setenv("SSL_FT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    code = run(tool(name).main, _argv(argv, inputs, out))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], err
    assert "Traceback" not in err
    assert _results_left(tmp_path, Path(inputs["tmp"])) == []
    assert not out.exists() or not any(out.iterdir())
    assert not (Path(inputs["tmp"]) / PAYLOAD_RAN).exists()  # no pickled code ever ran
    if os.environ.get("SSL_FT_BAD_INPUT_TABLE"):  # docs/reliability.md's table, from this run
        with open(os.environ["SSL_FT_BAD_INPUT_TABLE"], "a") as fh:
            fh.write(f"| {name} | `{_shown(argv)}` | {code} | "
                     f"{_shown_line(lines[0], tmp_path, inputs['tmp'])} |\n")


def _shown_line(line: str, *folders) -> str:
    """The error line with the test's temporary folders and the repository shown as ``…``."""
    for folder in (*folders, REPO):
        line = line.replace(str(folder), "…")
    return line.replace("|", "\\|")


def _shown(argv: list[str]) -> str:
    """The case's own arguments (without the recipe path and the tiny-run settings)."""
    text = " ".join(argv).replace(" ".join(FT), "").replace(QUICK, "quickstart.yaml")
    text = text.replace("{out}/", "OUT/")
    for common in (*PT, "threads=1", "--out {out}", "out={out}", "--limit 64"):
        text = text.replace(common, "")
    text = " ".join(text.replace(TINY_STUDY, "tiny.yaml").split())
    return text.replace("|", "\\|") or "(defaults)"


# the first case of five tools, and one bad flag, as ``python tools/X.py`` (what the script
# adds to main(): imports, the exit status, nothing else on stderr)
SUBPROCESS = [next(c for c in CASES if c[0] == name)
              for name in ("pretrain", "finetune", "ensemble", "probe", "study")]
SUBPROCESS.append(next(c for c in CASES if "--seed" in c[1]))


@pytest.mark.parametrize("case", SUBPROCESS, ids=[_case_id(c) for c in SUBPROCESS])
def test_bad_input_as_a_subprocess(case, inputs, tmp_path):
    name, argv, needle = case
    env = {**os.environ, "SSL_FT_DATA": inputs["root"], "SSL_FT_CACHE": str(tmp_path / "c"),
           "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, str(REPO / "tools" / f"{name}.py"),
                          *_argv(argv, inputs, tmp_path / "out")], capture_output=True,
                         text=True, cwd=tmp_path, env=env)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.stderr
    assert _results_left(tmp_path) == []


def test_the_matrix_covers_every_tool_with_40_cases_or_more():
    tools = {c[0] for c in CASES}
    assert tools == {"pretrain", "finetune", "ensemble", "probe", "study", "depthmap",
                     "summarize"}
    assert len(CASES) >= 40
