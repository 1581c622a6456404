"""The depth map's exact outputs: the printed table, the selection's strings and lists, the
bounds of ranges and percentages, the error messages that give depths."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from ssl_ft.errors import UserError
from ssl_ft.models import DepthMap, create_backbone, parse_layers, parse_percent


@pytest.fixture(scope="module")
def resnet18():
    return create_backbone("resnet18", in_chans=1)


def test_resnet18_table_is_exact(resnet18):
    # by stage: stage 1 (stem, layer1.0, layer1.1) at 25 * j / 3; stages 2-4 two blocks each
    sel = DepthMap.from_backbone(resnet18).select("25-50", 75)
    assert sel.table().splitlines() == [
        "resnet18: depth by stage; layers 25-50, truncate 75",
        "  #  unit      stage  depth %       params  status",
        "  1  stem          1     8.33        3,264  frozen",
        "  2  layer1.0      1    16.67       73,984  frozen",
        "  3  layer1.1      1    25.00       73,984  frozen",
        "  4  layer2.0      2    37.50      230,144  trained",
        "  5  layer2.1      2    50.00      295,424  trained",
        "  6  layer3.0      3    62.50      919,040  frozen",
        "  7  layer3.1      3    75.00    1,180,672  frozen",
        "  8  layer4.0      4    87.50    3,673,088  dropped",
        "  9  layer4.1      4   100.00    4,720,640  dropped",
        "trainable backbone parameters: 525,568 of 2,776,512 kept (11,170,240 in the full "
        "backbone); output features: 256",
    ]


def test_selection_lists_and_strings(resnet18):
    dm = DepthMap.from_backbone(resnet18)
    sel = dm.select("12.5-62.5", "87.5")
    assert sel.layers_str == "12.5-62.5" and sel.truncate == Fraction(175, 2)
    assert [u.name for u in sel.trained] == ["layer1.0", "layer1.1", "layer2.0", "layer2.1",
                                             "layer3.0"]
    assert [u.name for u in sel.frozen] == ["stem", "layer3.1", "layer4.0"]
    assert [u.name for u in sel.dropped] == ["layer4.1"]
    assert [u.name for u in sel.kept] == [u.name for u in dm.units[:8]]
    assert sel.trainable_params == 73_984 * 2 + 230_144 + 295_424 + 919_040
    assert dm.total_params == 11_170_240
    assert dm.select((0, 100)).layers_str == "0-100"
    assert dm.select("0-100", 100).dropped == []


def test_apply_truncates_exactly_the_dropped_units():
    bb = create_backbone("resnet18", in_chans=1)
    sel = DepthMap.from_backbone(bb).select("50-100", 87.5)
    assert sel.apply(bb) is bb
    assert [u.name for u in bb.units] == [u.name for u in sel.kept]
    assert bb.num_features == 512  # layer4.0 is kept
    trained = {n.split(".")[0] + "." + n.split(".")[1] for n, p in bb.named_parameters()
               if p.requires_grad}
    assert trained == {"layer3.0", "layer3.1", "layer4.0"}
    with pytest.raises(ValueError, match="already truncated"):
        sel.apply(bb)
    full = create_backbone("resnet18", in_chans=1)
    DepthMap.from_backbone(full).select("0-100").apply(full)  # nothing to drop
    assert len(full.units) == 9 and all(p.requires_grad for p in full.parameters())
    assert full.eval()(torch.zeros(1, 1, 28, 28)).shape == (1, 512)


@pytest.mark.parametrize(("text", "ok"), [
    ("100", True), ("100.0", True), ("0.001", True), ("100.5", False), ("101", False),
    ("0", False), ("0.0", False),
])
def test_percent_bounds(text, ok):
    if ok:
        assert parse_percent(text) == Fraction(text)
    else:
        with pytest.raises(UserError, match="out of range"):
            parse_percent(text)


@pytest.mark.parametrize(("text", "ok"), [
    ("0-100", True), ("99.5-100", True), ("0-100.5", False), ("50-101", False),
    ("50-50", False), ("50.5-50", False), ("0-0.01", True),
])
def test_layer_range_bounds(text, ok):
    if ok:
        a, b = parse_layers(text)
        assert 0 <= a < b <= 100
    else:
        with pytest.raises(UserError, match=r"past 100|empty or reversed"):
            parse_layers(text)


def test_errors_give_the_depths(resnet18):
    dm = DepthMap.from_backbone(resnet18, "block")
    with pytest.raises(UserError) as info:
        dm.select("0-100", 10.5)
    assert str(info.value) == ("truncate 10.5 drops every unit of resnet18 (by block); the "
                               "first unit ends at 11.1 %")
    with pytest.raises(UserError) as info:
        dm.select("0-5")
    assert str(info.value) == (
        "layers 0-5 select no kept unit of resnet18 (by block, truncate 100); unit depths are "
        "11.1, 22.2, 33.3, 44.4, 55.6, 66.7, 77.8, 88.9, 100.0")
    lp = dm.select("0-5", allow_empty=True)
    assert lp.trained == [] and len(lp.frozen) == 9


def test_param_rule_gives_a_parameter_free_first_unit_the_next_depth():
    from ssl_ft.models.backbones import UnitSpec
    from ssl_ft.models.depth import _depths

    specs = [UnitSpec(name=f"u{i}", modules=(), stage=1, out_channels=1) for i in range(4)]
    assert _depths(specs, [0, 0, 30, 10], "param") == [75, 75, 75, 100]
    assert _depths(specs[:3], [0, 0, 5], "param") == [100, 100, 100]  # up to the last but one
    assert _depths(specs, [1, 1, 1, 1], "block") == [25, 50, 75, 100]
    with pytest.raises(UserError, match="needs units with parameters"):
        _depths(specs, [0, 0, 0, 0], "param")
