"""Stems for small images: the map size after the stem, and a checkpoint remembering its stem."""

from __future__ import annotations

import pytest
import torch

from ssl_ft.models import create_backbone


@pytest.mark.parametrize("arch", ["resnet18", "densenet121"])
@pytest.mark.parametrize("stem,side", [("standard", 7), ("midres", 14), ("lowres", 28)])
def test_stem_output_side_at_28_px(arch, stem, side):
    bb = create_backbone(arch, in_chans=1, stem=stem).eval()
    with torch.no_grad():
        out = bb.forward_units(torch.zeros(2, 1, 28, 28), 0, 1)
    assert out.shape[-1] == side
    first = bb.get_submodule("conv1" if arch == "resnet18" else "features.conv0")
    assert first.kernel_size == ((7, 7) if stem == "standard" else (3, 3))
    assert bb(torch.zeros(2, 1, 28, 28)).shape == (2, bb.num_features)


def test_vgg_midres_is_its_standard():
    a, b = create_backbone("vgg11", in_chans=1), create_backbone("vgg11", in_chans=1,
                                                                  stem="midres")
    assert [u.name for u in a.units] == [u.name for u in b.units]
    assert str(a) == str(b)
