"""Backbones keep torchvision's names, adapt channels and stems, and load ImageNet weights."""

from __future__ import annotations

import os

import pytest
import torch
import torchvision

from ssl_ft.errors import UserError
from ssl_ft.models import check_input_size, create_backbone

ARCHS4 = ["resnet18", "resnet50", "densenet121", "vgg19"]
CLASSIFIER = ("fc.", "classifier.")


@pytest.mark.parametrize("arch", ARCHS4)
def test_state_dict_keys_are_torchvision_keys(arch):
    bb = create_backbone(arch, in_chans=3)
    tv = torchvision.models.get_model(arch, weights=None)
    tv_keys = {k for k in tv.state_dict() if not k.startswith(CLASSIFIER)}
    assert set(bb.state_dict()) == tv_keys
    missing, unexpected = tv.load_state_dict(bb.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith(CLASSIFIER) for k in missing)


@pytest.mark.parametrize("arch", ARCHS4)
@pytest.mark.parametrize("stem", ["standard", "lowres"])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_forward_shapes_at_28px(arch, stem, in_chans):
    bb = create_backbone(arch, in_chans=in_chans, stem=stem)
    out = bb(torch.randn(2, in_chans, 28, 28))
    assert out.shape == (2, bb.num_features)
    assert torch.isfinite(out).all()


def test_lowres_stem_keeps_resolution():
    std = create_backbone("resnet18", in_chans=1)
    low = create_backbone("resnet18", in_chans=1, stem="lowres")
    x = torch.randn(1, 1, 28, 28)
    assert std[:4](x).shape[-1] == 7
    assert low[:4](x).shape[-1] == 28
    assert low.conv1.kernel_size == (3, 3) and low.conv1.stride == (1, 1)


def _fake_imagenet(tmp_path, monkeypatch, arch: str) -> dict[str, torch.Tensor]:
    """Save a random 'ImageNet' state dict where torchvision's loader caches downloads."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    torch.manual_seed(0)
    state = torchvision.models.get_model(arch, weights=None).state_dict()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / os.path.basename(weights.url))
    return state


@pytest.mark.parametrize("arch", ["resnet18", "densenet121"])
def test_imagenet_weights_through_torchvision_loader(tmp_path, monkeypatch, arch):
    state = _fake_imagenet(tmp_path, monkeypatch, arch)
    bb = create_backbone(arch, in_chans=3, weights="imagenet")
    for key, value in bb.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_imagenet_weights_adapted_to_one_channel(tmp_path, monkeypatch):
    state = _fake_imagenet(tmp_path, monkeypatch, "resnet18")
    bb = create_backbone("resnet18", in_chans=1, weights="imagenet")
    assert bb.conv1.weight.shape == (64, 1, 7, 7)
    torch.testing.assert_close(bb.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(bb.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_imagenet_with_lowres_stem_warns_and_keeps_the_rest(tmp_path, monkeypatch):
    state = _fake_imagenet(tmp_path, monkeypatch, "resnet18")
    with pytest.warns(UserWarning, match="lowres"):
        bb = create_backbone("resnet18", in_chans=1, stem="lowres", weights="imagenet")
    assert bb.conv1.weight.shape == (64, 1, 3, 3)
    assert torch.equal(bb.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [({"arch": "resnet19"}, "resnet19"), ({"arch": "resnet18", "in_chans": 2}, "2"),
     ({"arch": "resnet18", "stem": "tiny"}, "tiny")],
)
def test_bad_arguments_name_the_value(kwargs, bad):
    arch = kwargs.pop("arch")
    with pytest.raises(UserError, match=bad):
        create_backbone(arch, **kwargs)


def test_input_size_check():
    check_input_size(create_backbone("densenet121", in_chans=1), 28)
    with pytest.raises(UserError, match="8 px is too small for vgg19"):
        check_input_size(create_backbone("vgg19", in_chans=1), 8)


def _meta(arch: str, stem: str, in_chans: int) -> dict:
    return {"method": "simclr", "arch": arch, "in_chans": in_chans, "image_size": 28,
            "stem": stem, "normalization": {"mean": [0.5], "std": [0.25]}, "recipe": {},
            "data_fingerprint": "0" * 64, "epoch": 1}


@pytest.mark.parametrize(("arch", "stem"), [("resnet18", "lowres"), ("densenet121", "standard"),
                                            ("vgg19", "lowres")])
def test_checkpoint_loads_into_plain_torchvision_model(tmp_path, arch, stem):
    from ssl_ft.checkpoint import save_checkpoint
    from ssl_ft.models import torchvision_model

    torch.manual_seed(0)
    bb = create_backbone(arch, in_chans=1, stem=stem).eval()
    path = save_checkpoint(tmp_path / "c.pt", bb.state_dict(), _meta(arch, stem, 1))
    tv = torchvision_model(path, num_classes=3).eval()
    assert type(tv) is type(torchvision.models.get_model(arch, weights=None))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert tv(x).shape == (2, 3)
        if arch.startswith("resnet"):
            tv.fc = torch.nn.Identity()
            torch.testing.assert_close(tv(x), bb(x))


def test_weights_from_prefixed_state_dict_and_checkpoint(tmp_path):
    from ssl_ft.checkpoint import save_checkpoint

    torch.manual_seed(1)
    src = create_backbone("resnet18", in_chans=1)
    torch.save({"state_dict": {f"model.backbone.{k}": v for k, v in src.state_dict().items()}},
               tmp_path / "lightning.ckpt")
    loaded = create_backbone("resnet18", in_chans=1, weights=tmp_path / "lightning.ckpt")
    for key, value in src.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    save_checkpoint(tmp_path / "r18.pt", src.state_dict(), _meta("resnet18", "standard", 1))
    with pytest.raises(UserError, match="arch='resnet18', not arch='resnet50'"):
        create_backbone("resnet50", in_chans=1, weights=tmp_path / "r18.pt")
    with pytest.raises(UserError, match="stem='standard', not stem='lowres'"):
        create_backbone("resnet18", in_chans=1, stem="lowres", weights=tmp_path / "r18.pt")
    torch.save(create_backbone("resnet50", in_chans=1).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(UserError, match="does not fit"):
        create_backbone("resnet18", in_chans=1, weights=tmp_path / "r50.pth")
