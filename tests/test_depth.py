"""The depth map: quarters partition units, ranges parse strictly, truncation is exact."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from ssl_ft.errors import UserError
from ssl_ft.models import RULES, DepthMap, create_backbone, parse_layers, parse_percent

ARCHS4 = ["resnet18", "resnet50", "densenet121", "vgg19"]
QUARTERS = ["0-25", "25-50", "50-75", "75-100"]


@pytest.fixture(scope="module")
def backbones():
    return {arch: create_backbone(arch, in_chans=1) for arch in ARCHS4}


@pytest.mark.parametrize("arch", ARCHS4)
@pytest.mark.parametrize("rule", RULES)
def test_quarters_partition_units(backbones, arch, rule):
    dm = DepthMap.from_backbone(backbones[arch], rule)
    names = [u.name for u in dm.units]
    seen: list[str] = []
    for q in QUARTERS:
        sel = dm.select(q, allow_empty=True)
        seen += [u.name for u in sel.trained]
    assert sorted(seen) == sorted(names)  # every unit in exactly one quarter
    assert len(seen) == len(set(seen))
    everything = dm.select("0-100")
    assert [u.name for u in everything.trained] == names
    assert everything.trainable_params == sum(
        p.numel() for p in backbones[arch].parameters()
    )
    depths = [u.depth for u in dm.units]
    assert depths == sorted(depths) and depths[-1] == 100 and depths[0] > 0


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "densenet121"])
def test_by_stage_quarters_follow_stages(backbones, arch):
    dm = DepthMap.from_backbone(backbones[arch], "stage")
    for k, q in enumerate(QUARTERS, start=1):
        assert {u.stage for u in dm.select(q).trained} == {k}


def test_vgg_by_stage_uses_its_five_pooling_stages(backbones):
    dm = DepthMap.from_backbone(backbones["vgg19"], "stage")
    assert [sum(u.stage == k for u in dm.units) for k in range(1, 6)] == [2, 2, 4, 4, 4]
    for u in dm.units:
        assert 20 * (u.stage - 1) < u.depth <= 20 * u.stage


def test_default_rules(backbones):
    assert DepthMap.from_backbone(backbones["resnet50"]).rule == "stage"
    assert DepthMap.from_backbone(backbones["densenet121"]).rule == "stage"
    vgg = DepthMap.from_backbone(backbones["vgg19"])
    assert vgg.rule == "block" and len(vgg.units) == 16
    assert [len(vgg.select(q).trained) for q in QUARTERS] == [4, 4, 4, 4]


def test_resnet50_truncate75_by_stage_ends_after_layer3():
    bb = create_backbone("resnet50", in_chans=1)
    sel = DepthMap.from_backbone(bb, "stage").select("0-100", truncate=75)
    assert sel.kept[-1].name == "layer3.5"
    assert all(u.name.startswith("layer4") for u in sel.dropped) and len(sel.dropped) == 3
    sel.apply(bb)
    assert bb.num_features == 1024
    assert bb(torch.zeros(2, 1, 64, 64)).shape == (2, 1024)
    assert not any(k.startswith("layer4") for k in bb.state_dict())


def test_resnet18_units_and_params(backbones):
    dm = DepthMap.from_backbone(backbones["resnet18"])
    assert [u.name for u in dm.units] == ["stem"] + [
        f"layer{s}.{b}" for s in range(1, 5) for b in range(2)
    ]
    assert dm.units[0].params == 64 * 1 * 7 * 7 + 2 * 64  # conv1 (1 channel) + bn1


def test_param_rule_is_cumulative_share(backbones):
    dm = DepthMap.from_backbone(backbones["resnet18"], "param")
    total = dm.total_params
    acc = 0
    for u in dm.units:
        acc += u.params
        assert u.depth == Fraction(100 * acc, total)


def test_selection_sets_requires_grad_and_truncates():
    bb = create_backbone("densenet121", in_chans=1)
    dm = DepthMap.from_backbone(bb)
    sel = dm.select("25-50", truncate=75)
    sel.apply(bb)
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    assert trainable and all("denseblock2" in n or "transition2" in n for n in trainable)
    assert not any("denseblock4" in n for n, _ in bb.named_parameters())
    assert sum(p.numel() for p in bb.parameters() if p.requires_grad) == sel.trainable_params
    assert bb(torch.zeros(1, 1, 28, 28)).shape == (1, sel.kept[-1].out_channels)


def test_table_lists_every_unit(backbones):
    sel = DepthMap.from_backbone(backbones["vgg19"]).select("25-50", truncate=75)
    text = sel.table()
    for unit, status in zip(sel.depth_map.units, sel.status, strict=True):
        line = next(ln for ln in text.splitlines() if f" {unit.name} " in ln)
        assert line.rstrip().endswith(status)
    assert f"{sel.trainable_params:,}" in text


@pytest.mark.parametrize("bad", ["80-20", "25-", "abc", "0-150", "-5-20", "25-25", "", "1e3-2"])
def test_bad_range_strings_name_the_value(bad):
    with pytest.raises(UserError) as err:
        parse_layers(bad)
    assert repr(bad) in str(err.value)


@pytest.mark.parametrize("bad", ["0", "150", "x", "-3"])
def test_bad_truncate_names_the_value(bad):
    with pytest.raises(UserError, match=repr(bad)):
        parse_percent(bad)


def test_good_ranges():
    assert parse_layers("25-50") == (25, 50)
    assert parse_layers(" 12.5 - 37.5 ") == (Fraction(25, 2), Fraction(75, 2))
    assert parse_layers((0, 100)) == (0, 100)


def test_empty_selection_is_an_error(backbones):
    dm = DepthMap.from_backbone(backbones["resnet18"], "block")  # first unit at 11.1 %
    with pytest.raises(UserError, match="select no kept unit"):
        dm.select("0-5")
    with pytest.raises(UserError, match="select no kept unit"):
        dm.select("75-100", truncate=50)
    with pytest.raises(UserError, match="drops every unit"):
        dm.select("0-100", truncate=5)
    with pytest.raises(UserError, match="'layers'"):
        DepthMap.from_backbone(backbones["resnet18"], "layers")


def test_depthmap_tool_as_a_user_runs_it():
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(__file__).resolve().parents[1] / "tools" / "depthmap.py"
    ok = subprocess.run([sys.executable, str(tool), "--arch", "resnet50", "--layers", "25-50",
                         "--truncate", "75"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0] == "resnet50: depth by stage; layers 25-50, truncate 75"
    assert sum(ln.endswith("trained") for ln in lines) == 4  # layer2.0-3
    assert sum(ln.endswith("dropped") for ln in lines) == 3  # layer4
    assert "output features: 1024" in lines[-1]
    bad = subprocess.run([sys.executable, str(tool), "--arch", "resnet50", "--layers", "0-150"],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: layer range '0-150' goes past 100 %"
