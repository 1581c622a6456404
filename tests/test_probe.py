"""tools/probe.py and the metrics it reports."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ssl_ft.cli import run
from ssl_ft.metrics import classification_metrics


def test_probe_tool_random_init(data_root, tmp_path, capsys, tool):
    out = tmp_path / "probe.json"
    code = run(tool("probe").main, ["--checkpoint", "none", "--arch", "resnet18", "--data",
                              "breastmnist", "--data-root", str(data_root), "--seed", "0",
                              "--seed", "1", "--out", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    assert [r["seed"] for r in results] == [0, 1]
    for r in results:
        assert 0.5 < r["test"]["auc"] <= 1 and 0 < r["test"]["acc"] <= 1
        assert sum(c["n"] for c in r["test"]["per_class"].values()) == 156  # BreastMNIST test
    assert "over 2 seed(s)" in capsys.readouterr().out
    # different random inits give different features, hence different probes
    assert results[0]["test"]["auc"] != results[1]["test"]["auc"]


def test_probe_tool_resizes_and_converts_like_finetuning(data_root, tmp_path, tool):
    # HAM10000 is stored as 64 px RGB; the Davila study fine-tunes it at 28 px in grey
    out = tmp_path / "probe.json"
    code = run(tool("probe").main, ["--checkpoint", "none", "--arch", "resnet18", "--data",
                                    "ham10000_dermoscopy_unique_lesion_64", "--data-root",
                                    str(data_root), "--size", "28", "--channels", "1",
                                    "--limit", "120", "--out", str(out)])
    assert code == 0
    (r,) = json.loads(out.read_text())
    assert (r["image_size"], r["channels"]) == (28, 1)
    assert sum(c["n"] for c in r["test"]["per_class"].values()) == 120
    assert len(r["test"]["per_class"]) == 7


def test_probe_tool_needs_arch_without_checkpoint(data_root, capsys, tool):
    code = run(tool("probe").main, ["--checkpoint", "none", "--data", "breastmnist",
                              "--data-root", str(data_root)])
    assert code == 2 and "needs an arch" in capsys.readouterr().err


def test_metrics_follow_medmnist_conventions():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])
    m = classification_metrics(labels, probs, "binary-class", ["neg", "pos"])
    assert m["auc"] == pytest.approx(1.0)  # positive-class scores rank perfectly
    assert m["acc"] == pytest.approx(0.75)  # argmax: one negative called positive
    assert m["confusion"] == [[1, 1], [0, 2]]
    assert m["per_class"]["neg"]["recall"] == pytest.approx(0.5)
    three = np.array([0, 1, 2, 2])
    p3 = np.eye(3)[[0, 1, 2, 1]] * 0.8 + 0.1
    m3 = classification_metrics(three, p3, "multi-class")
    assert m3["acc"] == pytest.approx(0.75)
    # one-vs-rest mean of class AUCs 1, 2.5/3 (a tie counts half) and 3/4
    assert m3["auc"] == pytest.approx((1 + 2.5 / 3 + 0.75) / 3)


def test_probe_takes_plain_state_dicts_and_safetensors_as_its_help_says(data_root, tmp_path,
                                                                         tool, capsys):
    import torch
    import torchvision

    from ssl_ft.checkpoint import export_safetensors

    torch.manual_seed(3)
    plain = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), plain)
    st = export_safetensors(plain, tmp_path / "resnet18.safetensors")
    results = []
    for ckpt in (plain, st):
        out = tmp_path / f"{ckpt.suffix[1:]}.json"
        code = run(tool("probe").main, ["--checkpoint", str(ckpt), "--arch", "resnet18",
                                        "--data", "breastmnist", "--data-root", str(data_root),
                                        "--channels", "3", "--limit", "100", "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        (r,) = json.loads(out.read_text())
        assert r["checkpoint"] == str(ckpt) and (r["arch"], r["channels"]) == ("resnet18", 3)
        results.append(r)
    assert results[0]["test"] == results[1]["test"]  # the same weights, two file formats
    assert 0 < results[0]["test"]["auc"] <= 1
    code = run(tool("probe").main, ["--checkpoint", str(plain), "--data", "breastmnist",
                                    "--data-root", str(data_root)])
    err = capsys.readouterr().err
    assert code == 2 and "plain state dict" in err and "--arch" in err
