"""timm models (features API) as depth-mapped backbones."""

from __future__ import annotations

import pytest
import timm
import torch

from ssl_ft.errors import UserError
from ssl_ft.methods import get_method
from ssl_ft.models import DepthMap, create_backbone


@pytest.mark.parametrize("name", ["convnext_atto", "resnet18", "efficientnet_b0"])
def test_units_cover_parameters_and_keys_are_timms(name):
    bb = create_backbone(f"timm:{name}", in_chans=1)
    dm = DepthMap.from_backbone(bb)
    assert dm.rule == "stage" and [u.name for u in dm.units] == [
        f["module"] for f in bb.model.feature_info]
    owned = [n for u in bb.units for n in u.modules]
    assert sorted(owned) == sorted(n for n, _ in bb.named_parameters())  # each exactly once
    plain = timm.create_model(name, num_classes=0, in_chans=1)
    plain.load_state_dict(bb.state_dict())  # strict: the same keys and shapes
    x = torch.randn(2, 1, 64, 64)
    bb.eval(), plain.eval()
    with torch.no_grad():
        out = bb(x)
        torch.testing.assert_close(out, plain(x))
    assert out.shape == (2, bb.num_features)


def test_selection_and_truncation_on_convnext():
    bb = create_backbone("timm:convnext_atto", in_chans=1)
    sel = DepthMap.from_backbone(bb).select("25-50", truncate=75)
    assert [u.name for u in sel.trained] == ["stages.1"]
    assert [u.name for u in sel.dropped] == ["stages.3"]
    sel.apply(bb)
    assert bb(torch.zeros(1, 1, 64, 64)).shape == (1, 160)
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("stages.1.") for n in trainable)
    assert not any(k.startswith("stages.3.") for k in bb.state_dict())


@pytest.mark.parametrize("method", ["simclr", "genesis"])
def test_ssl_methods_run_on_a_timm_backbone(method):
    cls = get_method(method)
    m = cls(create_backbone("timm:convnext_atto", in_chans=1), cls.Config(),
            augment=lambda x: x, mean=[0.5], std=[0.25], image_size=32)
    loss = m(torch.rand(4, 1, 32, 32))["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert m.backbone.stages[0].blocks[0].conv_dw.weight.grad is not None


def test_timm_weights_from_a_file_and_errors(tmp_path):
    torch.manual_seed(0)
    src = timm.create_model("resnet18", num_classes=0, in_chans=1)
    torch.save({"model": {f"module.{k}": v for k, v in src.state_dict().items()}},
               tmp_path / "w.pth")
    bb = create_backbone("timm:resnet18", in_chans=1, weights=tmp_path / "w.pth")
    assert torch.equal(bb.conv1.weight, src.conv1.weight)
    with pytest.raises(UserError, match="unknown timm model 'nosuchnet'"):
        create_backbone("timm:nosuchnet")
    with pytest.raises(UserError, match="only available for torchvision"):
        create_backbone("timm:resnet18", stem="lowres")
