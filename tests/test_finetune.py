"""tools/finetune.py as a user runs it: exact selection, outputs, inputs, errors, resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml

from ssl_ft.checkpoint import load_checkpoint, save_checkpoint
from ssl_ft.finetune import FinetuneModel, load_finetuned, predict_proba
from ssl_ft.metrics import classification_metrics
from ssl_ft.models import create_backbone
from tests.conftest import grey_meta


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """An ssl_ft checkpoint of a random resnet18 (standard stem, 1 channel)."""
    torch.manual_seed(1)
    bb = create_backbone("resnet18", in_chans=1)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    meta = grey_meta()
    save_checkpoint(path, bb.state_dict(), meta)
    return path


def _args(data_root, out, *extra):
    return ["--data", "pneumoniamnist", "--data-root", str(data_root), "--limit", "160",
            "--batch-size", "32", "--epochs", "1", "--out", str(out), "threads=1", *extra]


def _run(tool, argv):
    from ssl_ft.cli import run

    return run(tool("finetune").main, argv)


def test_layers_25_50_truncate_75_is_exact(data_root, tmp_path, tool, ckpt, capsys):
    out = tmp_path / "run"
    assert _run(tool, _args(data_root, out, "--checkpoint", str(ckpt), "--layers", "25-50",
                            "--truncate", "75", "--seed", "3")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("layers", "truncate", "strategy", "trainable_params", "seed", "label_fraction"):
        assert key in metrics
    assert (metrics["layers"], metrics["truncate"], metrics["strategy"], metrics["seed"]) == (
        "25-50", 75.0, "ft", 3)
    for split in ("val", "test"):
        assert {"auc", "acc", "per_class", "confusion"} <= set(metrics[split])
    # layer2.0 + layer2.1 of resnet18 and a 256 -> 2 head
    assert metrics["trainable_params"] == 230_144 + 295_424 + 256 * 2 + 2
    start = load_checkpoint(ckpt).backbone
    tuned = load_checkpoint(out / "model.pt").backbone
    assert not any(k.startswith("layer4") for k in tuned)  # dropped units are absent
    assert set(tuned) == {k for k in start if not k.startswith("layer4")}
    changed = [k for k in tuned if not torch.equal(tuned[k], start[k])]
    assert changed and all(k.startswith("layer2") for k in changed)  # BN statistics included
    assert any(k.endswith("conv1.weight") for k in changed)
    # the saved model reproduces the reported test metrics
    from ssl_ft.data import load_data

    splits = load_data("pneumoniamnist", data_root=data_root, limit=160, seed=3)
    model = load_finetuned(out / "model.pt")
    probs = predict_proba(model, splits.images["test"], max_value=255)
    assert probs.shape == (len(splits.labels["test"]), 2)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    again = classification_metrics(splits.labels["test"], probs, "binary-class")
    assert again["auc"] == pytest.approx(metrics["test"]["auc"], abs=1e-6)
    assert model.meta["layers"] == "25-50" and model.meta["label_names"] == ["normal", "pneumonia"]


# units trained / frozen / dropped by 25-50 with truncate 75, worked from each architecture:
# resnet50 by stage: stem + layer1.0-2 (stage 1), layer2.0-3 trained, layer3.0-5, layer4 dropped;
# densenet121 by stage: stem + 6 layers + transition1, then 12 + transition2 (trained), 24 +
# transition3, 16 + norm5 (dropped); vgg19 by block: 16 convolutions, 4 a quarter.
# Parameters: resnet50 layer2; vgg19 conv5 (128 -> 256) + conv6-8 (256 -> 256), 3x3 with bias.
DRY_RUN = {"resnet50": ("stage", 4, 10, 3, "layer2.0", 1_219_584),
           "densenet121": ("stage", 13, 33, 17, "denseblock2.denselayer1", 1_051_776),
           "vgg19": ("block", 4, 8, 4, "conv5", 295_168 + 3 * 590_080)}


@pytest.mark.parametrize("arch", ["resnet50", "densenet121", "vgg19"])
def test_dry_run_prints_the_table_without_training(data_root, tmp_path, tool, capsys, arch):
    out = tmp_path / "never"
    assert _run(tool, _args(data_root, out, "--checkpoint", "none", "--arch", arch,
                            "--layers", "25-50", "--truncate", "75", "--dry-run")) == 0
    text = capsys.readouterr().out
    rule, trained, frozen, dropped, first, params = DRY_RUN[arch]
    lines = text.splitlines()
    assert lines[0] == f"{arch}: depth by {rule}; layers 25-50, truncate 75"
    rows = [ln.split() for ln in lines[2:] if ln.split() and ln.split()[0].isdigit()]
    counts = {s: sum(r[-1] == s for r in rows) for s in ("trained", "frozen", "dropped")}
    assert counts == {"trained": trained, "frozen": frozen, "dropped": dropped}
    assert next(r[1] for r in rows if r[-1] == "trained") == first
    statuses, k = [r[-1] for r in rows], [r[-1] for r in rows].index("trained")
    assert statuses == (["frozen"] * k + ["trained"] * trained + ["frozen"] * (frozen - k)
                        + ["dropped"] * dropped)  # frozen, the range, frozen, cut off
    assert f"trainable backbone parameters: {params:,} of" in text
    assert not out.exists()


def test_frozen_prefix_runs_without_autograd():
    torch.manual_seed(0)
    model = FinetuneModel(create_backbone("resnet18", in_chans=1), 2, (0.5,), (0.2,))
    model.grad_from = 3  # stem, layer1.0, layer1.1 frozen
    seen: dict[str, bool] = {}
    for name in ("conv1", "layer1.1", "layer2.0", "layer4.1"):
        model.backbone.get_submodule(name).register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, o.requires_grad))
    model(torch.rand(2, 1, 28, 28)).sum().backward()
    assert seen == {"conv1": False, "layer1.1": False, "layer2.0": True, "layer4.1": True}
    assert model.backbone.conv1.weight.grad is None


def test_freeze_bn_false_lets_frozen_units_update_statistics(data_root, tmp_path, tool, ckpt):
    out = tmp_path / "bn"
    assert _run(tool, _args(data_root, out, "--checkpoint", str(ckpt), "--layers", "75-100",
                            "freeze_bn=false")) == 0
    start, tuned = load_checkpoint(ckpt).backbone, load_checkpoint(out / "model.pt").backbone
    assert not torch.equal(start["bn1.running_mean"], tuned["bn1.running_mean"])
    assert torch.equal(start["conv1.weight"], tuned["conv1.weight"])


@pytest.mark.parametrize(("extra", "needle"), [
    (["--layers", "80-20"], "'80-20'"),
    (["--truncate", "0"], "truncate 0"),
    (["--strategy", "nope"], "'nope'"),
    (["--label-fraction", "2"], "label_fraction"),
    (["--checkpoint", "/no/such.pt"], "/no/such.pt"),
    (["--arch", "resnet50"], "resnet50"),
    (["--channels", "3"], "--channels 1"),
    (["bogus=1"], "bogus"),
    (["strategy_args.lp_epochs=1"], "lp_epochs"),
])
def test_bad_input_exits_2_with_one_line(data_root, tmp_path, tool, capsys, ckpt, extra, needle):
    argv = _args(data_root, tmp_path / "bad", "--checkpoint", str(ckpt), *extra)
    assert _run(tool, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and needle in err, err
    assert not (tmp_path / "bad" / "last.pt").exists()


def test_plain_torchvision_state_dict_needs_arch(data_root, tmp_path, tool, capsys):
    torch.manual_seed(2)
    net = torchvision.models.resnet18(num_classes=7)
    path = tmp_path / "plain.pth"
    torch.save({"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}}, path)
    base = _args(data_root, tmp_path / "p", "--checkpoint", str(path), "--channels", "3",
                 "--layers", "75-100")
    assert _run(tool, base) == 2
    assert "--arch" in capsys.readouterr().err
    assert _run(tool, [*base, "--arch", "resnet18"]) == 0
    tuned = load_checkpoint(tmp_path / "p" / "model.pt").backbone
    assert torch.equal(tuned["layer2.0.conv1.weight"], net.state_dict()["layer2.0.conv1.weight"])


def test_imagenet_weights_and_normalisation(data_root, tmp_path, tool, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.get_model_weights("resnet18").DEFAULT
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / os.path.basename(weights.url))
    out = tmp_path / "in"
    assert _run(tool, _args(data_root, out, "--checkpoint", "imagenet", "--arch", "resnet18",
                            "--layers", "75-100")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["source"]["kind"] == "imagenet"
    assert metrics["source"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    tuned = load_checkpoint(out / "model.pt").backbone
    # one input channel: torchvision's RGB kernel summed over channels
    torch.testing.assert_close(tuned["conv1.weight"], state["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(tuned["layer3.1.conv2.weight"], state["layer3.1.conv2.weight"])


def test_recipe_with_flags_overriding_it(data_root, tmp_path, tool, ckpt):
    recipe = tmp_path / "ft.yaml"
    recipe.write_text(yaml.safe_dump({"checkpoint": str(ckpt), "layers": "0-25",
                                      "strategy": "l2-sp", "strategy_args": {"alpha": 0.5}}))
    out = tmp_path / "r"
    assert _run(tool, [str(recipe), *_args(data_root, out, "--layers", "50-75")]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["layers"] == "50-75" and metrics["strategy"] == "l2-sp"
    assert metrics["recipe"]["strategy_args"] == {"alpha": 0.5}


def test_existing_run_needs_resume_and_finished_run_is_skipped(data_root, tmp_path, tool, ckpt,
                                                             capsys):
    argv = _args(data_root, tmp_path / "x", "--checkpoint", str(ckpt), "--layers", "75-100")
    assert _run(tool, argv) == 0
    capsys.readouterr()
    assert _run(tool, argv) == 2
    assert "--resume" in capsys.readouterr().err
    before = (tmp_path / "x" / "metrics.json").read_text()
    assert _run(tool, [*argv, "--resume"]) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert (tmp_path / "x" / "metrics.json").read_text() == before


@pytest.mark.parametrize("strategy", ["ft", "auto-rgn"])
def test_resume_after_interrupt_matches_uninterrupted(data_root, tmp_path, tool, ckpt,
                                                      monkeypatch, strategy):
    import ssl_ft.finetune.engine as engine

    def argv(out):
        return _args(data_root, out, "--checkpoint", str(ckpt), "--layers", "25-100",
                     "--epochs", "2", "--strategy", strategy, "checkpoint_every_s=0")

    assert _run(tool, argv(tmp_path / "a")) == 0
    real = engine.save_last

    def killed_after_first(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # as if the process died right after epoch 1 was saved

    monkeypatch.setattr(engine, "save_last", killed_after_first)
    assert _run(tool, argv(tmp_path / "b")) == 130
    monkeypatch.setattr(engine, "save_last", real)
    assert load_checkpoint(tmp_path / "b" / "last.pt").meta["epoch"] == 1
    assert _run(tool, [*argv(tmp_path / "b"), "--resume"]) == 0
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    for key in a.backbone:
        assert torch.equal(a.backbone[key], b.backbone[key]), key
    assert torch.equal(a.extra["head"]["weight"], b.extra["head"]["weight"])
    ma = json.loads((tmp_path / "a" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert ma["test"] == mb["test"]


@pytest.mark.parametrize("name", ["simclr_pneumoniamnist_25-50", "lp-ft_example"])
def test_shipped_recipes_validate(data_root, tmp_path, tool, ckpt, capsys, name):
    from pathlib import Path as P

    recipe = P(__file__).resolve().parents[1] / "recipes" / "finetune" / f"{name}.yaml"
    assert _run(tool, [str(recipe), "--checkpoint", str(ckpt), "--data-root", str(data_root),
                       "--limit", "64", "--dry-run"]) == 0
    assert "trainable backbone parameters" in capsys.readouterr().out


def test_timm_backbone_selection_is_exact(data_root, tmp_path, tool):
    torch.manual_seed(5)
    state = create_backbone("timm:resnet10t", in_chans=1).state_dict()
    path = tmp_path / "timm.pth"
    torch.save(state, path)
    out = tmp_path / "t"
    assert _run(tool, _args(data_root, out, "--checkpoint", str(path), "--arch",
                            "timm:resnet10t", "--layers", "50-75", "--truncate", "75")) == 0
    tuned = load_checkpoint(out / "model.pt").backbone
    assert not any(k.startswith("layer4") for k in tuned)
    changed = {k for k in tuned if not torch.equal(tuned[k], state[k])}
    # timm's resnet10t has 5 feature stages (act1, layer1-4) at 20 % each: 50-75 is layer2
    assert not any(k.startswith("layer3") for k in tuned)
    assert changed and all(k.startswith("layer2") for k in changed), sorted(changed)[:3]
    model = load_finetuned(out / "model.pt")
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 2)


def test_sigkill_leaves_a_resumable_run(data_root, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "k"
    cmd = [sys.executable, str(repo / "tools" / "finetune.py"), "--checkpoint", "none",
           "--arch", "resnet18", *_args(data_root, out, "--epochs", "6", "--layers", "75-100",
                                        "checkpoint_every_s=0")]
    proc = subprocess.Popen(cmd, cwd=repo, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    epoch = load_checkpoint(out / "last.pt").meta["epoch"]
    assert 1 <= epoch < 6
    res = subprocess.run([*cmd, "--resume"], cwd=repo, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, 7))
