"""Restorative methods (autoencoder, inpainting / context restoration, Models Genesis) and the
shared decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_ft.methods.autoencoder import Autoencoder
from ssl_ft.methods.base import METHODS, get_method
from ssl_ft.methods.decoder import Decoder
from ssl_ft.methods.genesis import Genesis
from ssl_ft.methods.inpainting import Inpainting
from ssl_ft.models import create_backbone

CASES = [
    ("autoencoder", {}),
    ("autoencoder", {"noise": "masking", "loss": "l1"}),
    ("inpainting", {}),
    ("inpainting", {"mode": "context_restoration"}),
    ("genesis", {}),
]


def random_flip(x: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(x.shape[0]) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def make(name: str, in_chans: int = 1, arch: str = "resnet18", **cfg: object):
    cls = get_method(name)
    return cls(create_backbone(arch, in_chans=in_chans), cls.Config(**cfg), augment=random_flip,
               mean=[0.5] * in_chans, std=[0.25] * in_chans, image_size=28)


def test_registered_as_restorative() -> None:
    for cls in (Autoencoder, Inpainting, Genesis):
        assert METHODS[cls.name] is cls and cls.family == "restorative"
    assert (Autoencoder.name, Inpainting.name, Genesis.name) == ("autoencoder", "inpainting",
                                                                 "genesis")


def test_skip_defaults() -> None:
    assert Autoencoder.Config().skip is False
    assert Inpainting.Config().skip is False
    assert Inpainting.Config(mode="context_restoration").skip is False
    assert Genesis.Config().skip is True


@pytest.mark.parametrize(("name", "cfg"), CASES)
def test_loss_gradients_extra_state_and_examples(name: str, cfg: dict) -> None:
    torch.manual_seed(0)
    method = make(name, **cfg)
    x = torch.rand(6, 1, 28, 28)
    out = method(x)
    loss = out["loss"]
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    first = method.backbone.conv1.weight.grad
    last = method.backbone.layer4[1].conv2.weight.grad
    assert first is not None and first.abs().sum() > 0
    assert last is not None and last.abs().sum() > 0
    assert all(p.grad is not None for p in method.decoder.parameters())
    assert method.extra_state() == {}

    state = {k: v.clone() for k, v in method.state_dict().items()}
    rng = torch.get_rng_state()
    images = method.example_images(x)
    assert images.shape == (18, 1, 28, 28)
    assert images.min() >= 0 and images.max() <= 1
    assert torch.equal(images[:6], x)
    assert torch.equal(torch.get_rng_state(), rng)  # fixed generator: training RNG untouched
    assert all(torch.equal(v, method.state_dict()[k]) for k, v in state.items())  # eval mode
    assert method.training
    assert torch.equal(method.example_images(x), images)


def test_three_channels_and_vgg() -> None:
    torch.manual_seed(0)
    method = make("genesis", in_chans=3, arch="vgg11")
    x = torch.rand(4, 3, 32, 32)
    method(x)["loss"].backward()
    assert method.example_images(x[:2]).shape == (6, 3, 32, 32)


@pytest.mark.parametrize(("name", "cfg"), [c for c in CASES if c[1].get("noise") is None])
def test_loss_decreases_on_pneumoniamnist(pneumonia: torch.Tensor, name: str, cfg: dict) -> None:
    """20 Adam steps on 128 real images: both the training loss and the loss on a fixed,
    fixed-corruption evaluation batch fall well below their starting values."""
    torch.manual_seed(0)
    method = make(name, **cfg)
    fixed = pneumonia[:64]
    corrupted, weight = method.corrupt(fixed, torch.Generator().manual_seed(5))

    def evaluate() -> float:
        with torch.no_grad():
            return method.reconstruction_loss(method.restore(corrupted), fixed, weight).item()

    before = evaluate()
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-3)
    order = torch.cat([torch.randperm(128) for _ in range(5)])
    losses = []
    for step in range(20):
        loss = method(pneumonia[order[32 * step : 32 * (step + 1)]])["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_step(step, 20)
        losses.append(loss.item())
    after = evaluate()
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    assert after < 0.6 * before, (before, after)


def test_inpaint_weights_holes_and_mean_fill() -> None:
    method = make("inpainting", loss_hole_weight=7.0)
    x = torch.rand(4, 1, 28, 28)
    corrupted, weight = method.corrupt(x, torch.Generator().manual_seed(0))
    hole = weight > 1
    assert set(weight.unique().tolist()) == {1.0, 7.0}
    assert torch.equal(corrupted[~hole], x[~hole])
    assert torch.all(method.normalize(corrupted)[hole] == 0)  # the dataset mean: 0 after norm
    restored = torch.zeros_like(x)
    expected = (7 * (x**2)[hole].sum() + (x**2)[~hole].sum()) / (7 * hole.sum() + (~hole).sum())
    assert torch.allclose(method.reconstruction_loss(restored, x, weight), expected)


def test_context_restoration_keeps_histogram() -> None:
    method = make("inpainting", mode="context_restoration")
    x = torch.rand(4, 1, 28, 28)
    corrupted, weight = method.corrupt(x, torch.Generator().manual_seed(0))
    assert weight is None
    assert torch.equal(corrupted.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    assert not torch.equal(corrupted, x)


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (Autoencoder, "loss", "huber"),
        (Autoencoder, "noise", "salt"),
        (Autoencoder, "noise_level", -0.1),
        (Autoencoder, "decoder_channels", [64, 0]),
        (Autoencoder, "skip", "yes"),
        (Inpainting, "mode", "outpaint"),
        (Inpainting, "hole_fraction", 1.5),
        (Inpainting, "hole_size", [0.3, 0.1]),
        (Inpainting, "hole_fill", "blue"),
        (Inpainting, "loss_hole_weight", 0.5),
        (Inpainting, "num_swaps", 0),
        (Inpainting, "patch_size", 0.9),
        (Genesis, "paint_rate", 1.2),
        (Genesis, "inpaint_rate", -0.2),
        (Genesis, "shuffle_window", -1),
    ],
)
def test_config_errors_name_field_and_value(cls: type, field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field) as info:
        cls.Config(**{field: value})
    assert repr(value) in str(info.value) or str(value) in str(info.value)


def test_config_accepts_yaml_lists() -> None:
    cfg = Inpainting.Config(decoder_channels=[128, 64], hole_size=[0.1, 0.2])
    assert cfg.decoder_channels == (128, 64) and cfg.hole_size == (0.1, 0.2)


# --- the decoder ----------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "densenet121", "vgg19"])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_decoder_output_matches_input(arch: str, in_chans: int) -> None:
    for stem in ("standard", "lowres"):
        backbone = create_backbone(arch, in_chans=in_chans, stem=stem).eval()
        for skip in (False, True):
            decoder = Decoder(backbone, skip=skip).eval()
            last = len(backbone.units) - 1
            assert decoder.indices[-1] == last
            assert (decoder.indices == [last]) is (not skip)
            sizes = (28, 64) if stem == "standard" else (28,)
            for px in sizes:
                x = torch.rand(1, in_chans, px, px)
                with torch.no_grad():
                    y = decoder(backbone.forward_intermediates(x, decoder.indices), (px, px))
                assert y.shape == x.shape, (arch, stem, skip, px)
                assert y.min() >= 0 and y.max() <= 1


def test_decoder_odd_sizes_and_skips_used() -> None:
    torch.manual_seed(0)
    backbone = create_backbone("resnet18", in_chans=1).eval()
    plain, unet = Decoder(backbone, skip=False).eval(), Decoder(backbone, skip=True).eval()
    assert [backbone.units[i].name for i in unet.indices] == ["layer1.1", "layer2.1",
                                                              "layer3.1", "layer4.1"]
    x = torch.rand(2, 1, 33, 45)
    with torch.no_grad():
        feats = backbone.forward_intermediates(x, unet.indices)
        assert plain(feats[-1:], (33, 45)).shape == (2, 1, 33, 45)
        y = unet(feats, (33, 45))
        assert y.shape == (2, 1, 33, 45)
        # the U-Net really uses its shallowest skip; the plain decoder takes one map only
        poked = [feats[0] + 1.0, *feats[1:]]
        assert not torch.allclose(unet(poked, (33, 45)), y)
        with pytest.raises(ValueError, match="expected 1 feature map"):
            plain(feats, (33, 45))


def test_restore_requests_only_deepest_unit_without_skips() -> None:
    method = make("autoencoder")
    requested: list[list[int]] = []
    original = method.backbone.forward_intermediates

    def spy(x: torch.Tensor, indices: list[int] | None = None) -> list[torch.Tensor]:
        requested.append(list(indices or []))
        return original(x, indices)

    method.backbone.forward_intermediates = spy  # type: ignore[method-assign]
    method(torch.rand(4, 1, 28, 28))
    assert requested == [[len(method.backbone.units) - 1]]
