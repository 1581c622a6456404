"""The depth probe: one backbone pass for every depth, the same probe as tools/probe.py, the CLI."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from ssl_ft.checkpoint import save_checkpoint
from ssl_ft.cli import run
from ssl_ft.data import load_data
from ssl_ft.depth_probe import FeatureCache, probe_depths, probe_units
from ssl_ft.features import extract_features
from ssl_ft.models import DepthMap, create_backbone
from ssl_ft.probe import linear_probe
from tests.conftest import grey_meta


def _count_unit_calls(backbone) -> list[int]:
    """A forward hook on the first module of every unit; returns the live call counts."""
    calls = [0] * len(backbone.units)
    for i, unit in enumerate(backbone.units):
        path = unit.modules[0]
        module = (backbone.get_submodule(path) if hasattr(backbone, "forward_units")
                  else backbone.model.get_submodule(path.rpartition(".")[0]))

        def hook(*_, i=i):
            calls[i] += 1
        module.register_forward_hook(hook)
    return calls


@pytest.mark.parametrize("arch", ["resnet18", "densenet121", "vgg11_bn"])
def test_one_backbone_pass_gives_every_depth(data_root, arch):
    splits = load_data("breastmnist", data_root=data_root, limit=96, seed=0)
    torch.manual_seed(0)
    bb = create_backbone(arch, in_chans=1, stem="lowres" if arch != "resnet18" else "standard")
    dm = DepthMap.from_backbone(bb)
    units = [u.index for u in dm.units]
    reference = copy.deepcopy(bb)
    calls = _count_unit_calls(bb)
    info = splits.info
    kw = dict(max_value=info.max_value, mean=info.mean, std=info.std, device=torch.device("cpu"))
    cache = FeatureCache(bb, units, **kw)
    feats = cache.get(splits, ["train", "val"])
    # one batch per split (<= 512 images): every unit ran exactly twice, once per split
    assert calls == [2] * len(units)
    assert cache.images_seen == len(splits.labels["train"]) + len(splits.labels["val"])
    again = cache.get(splits, ["train", "val"])  # another seed over the same images: no pass
    assert calls == [2] * len(units)
    for i in (0, len(units) // 2, len(units) - 1):  # against the truncated backbone
        cut = copy.deepcopy(reference).truncate(i + 1)
        want = extract_features(cut, splits.images["val"], **kw).numpy()
        np.testing.assert_allclose(feats["val"][i], want, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(again["val"][i], feats["val"][i])


def test_cache_runs_only_on_new_images_and_timm_stages(data_root):
    bb = create_backbone("timm:convnext_atto", in_chans=1)
    calls = _count_unit_calls(bb)
    full = load_data("breastmnist", data_root=data_root, size=32, seed=0)
    part = load_data("breastmnist", data_root=data_root, size=32, label_fraction=0.5, seed=1)
    info = full.info
    cache = FeatureCache(bb, range(len(bb.units)), max_value=info.max_value, mean=info.mean,
                         std=info.std, device=torch.device("cpu"))
    a = cache.get(part, ["train"])
    assert calls == [1] * len(bb.units) and cache.images_seen == len(part.labels["train"])
    b = cache.get(full, ["train"])  # only the other half of the train images is new
    assert calls == [2] * len(bb.units) and cache.images_seen == len(full.labels["train"])
    pos = np.searchsorted(full.indices["train"], part.indices["train"])
    for u in range(len(bb.units)):
        np.testing.assert_allclose(b["train"][u][pos], a["train"][u], rtol=1e-5, atol=1e-6)
        assert b["train"][u].shape[1] == bb.units[u].out_channels


def test_probe_at_a_depth_is_tools_probe_at_that_truncation(data_root):
    res = probe_depths(["none"], "breastmnist", arch="resnet18", data_root=data_root,
                       limit=200, seeds=[3], depths=[50])
    (row,) = res["models"][0]["units"]
    assert (row["unit"], row["depth"]) == ("layer2.1", 50.0)
    ref = linear_probe(None, "breastmnist", arch="resnet18", data_root=str(data_root),
                       truncate=50, seed=3, limit=200)
    assert row["test_auc"][0] == pytest.approx(ref.test["auc"], abs=1e-6)
    assert row["val_auc"][0] == pytest.approx(ref.val["auc"], abs=1e-6)
    assert row["C"][0] == ref.C


def test_probe_units_follow_truncation_semantics():
    dm = DepthMap.from_backbone(create_backbone("resnet18"))
    assert [u.name for u in probe_units(dm, [25, 30, 100])] == ["layer1.1", "layer4.1"]
    assert len(probe_units(dm)) == len(dm.units) == 9


def _ckpt(path, method, family):
    torch.manual_seed(1)
    meta = grey_meta(method, family, mean=0.5, std=0.25)
    save_checkpoint(path, create_backbone("resnet18", in_chans=1).state_dict(), meta)
    return path


def test_probe_depths_tool(data_root, tmp_path, tool, capsys):
    ck = _ckpt(tmp_path / "ck.pt", "genesis", "restorative")
    out = tmp_path / "pd"
    code = run(tool("probe_depths").main, [
        "--checkpoint", str(ck), "--checkpoint", "none", "--arch", "resnet18",
        "--data", "pneumoniamnist", "--data-root", str(data_root), "--limit", "150",
        "--label-fraction", "0.5", "--seed", "0", "--seed", "1", "--out", str(out)])
    assert code == 0
    res = json.loads((out / "probe_depths.json").read_text())
    assert [m["label"] for m in res["models"]] == ["genesis (restorative)", "random init"]
    for m in res["models"]:
        assert [r["depth"] for r in m["units"]] == pytest.approx(
            [100 / 12, 100 / 6, 25, 37.5, 50, 62.5, 75, 87.5, 100])
        for r in m["units"]:
            assert len(r["val_auc"]) == len(r["test_auc"]) == 2
            assert all(0 <= v <= 1 for v in r["val_auc"] + r["test_auc"])
    # the checkpoint's features are computed once for both seeds (75 train images each, nested
    # fractions share them) plus val and test; the random init is drawn again per seed
    ck_model, rnd = res["models"]
    assert ck_model["images_forwarded"] < rnd["images_forwarded"]
    assert ck_model["units"][0]["val_auc"][0] != rnd["units"][0]["val_auc"][0]
    assert (out / "probe_depths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "probe_depths.md").read_text()
    assert "## genesis (restorative): resnet18, depth by stage" in table and "| layer2.1 | 50.0" \
        in table
    assert "best val probe AUC" in capsys.readouterr().out


def test_probe_depths_tool_bad_input(data_root, tool, capsys):
    code = run(tool("probe_depths").main, ["--checkpoint", "none", "--data", "breastmnist",
                                          "--data-root", str(data_root)])
    assert code == 2 and "pass arch (--arch)" in capsys.readouterr().err
    code = run(tool("probe_depths").main, ["--checkpoint", "none", "--arch", "resnet18",
                                          "--data", "breastmnist", "--data-root",
                                          str(data_root), "--depths", "0"])
    assert code == 2 and "probe depth 0" in capsys.readouterr().err
    code = run(tool("probe_depths").main, ["--checkpoint", "/nope.pt", "--data", "breastmnist",
                                          "--data-root", str(data_root)])
    assert code == 2 and "/nope.pt" in capsys.readouterr().err
