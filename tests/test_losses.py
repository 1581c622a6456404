"""Restorative losses and the corrupt() of each restorative method, on worked examples.

``reconstruction_loss`` is a plain or weighted mean of squared (or absolute) errors;
``forward`` compares the restoration of the corrupted, augmented batch with the augmented batch.
"""

from __future__ import annotations

import pytest
import torch

from ssl_ft.methods.autoencoder import Autoencoder
from ssl_ft.methods.genesis import Genesis
from ssl_ft.methods.inpainting import Inpainting
from ssl_ft.models import create_backbone


def _make(cls, augment=lambda x: x, **cfg):
    torch.manual_seed(0)
    return cls(create_backbone("resnet18", in_chans=1), cls.Config(**cfg), augment=augment,
               mean=[0.4], std=[0.25], image_size=16)


def test_reconstruction_loss_values():
    restored = torch.tensor([0.0, 0.5, 1.0, 0.25]).view(1, 1, 2, 2)
    target = torch.tensor([1.0, 0.5, 0.0, 0.75]).view(1, 1, 2, 2)
    # errors 1, 0, 1, 0.5: MSE (1 + 0 + 1 + 0.25) / 4, L1 (1 + 0 + 1 + 0.5) / 4
    mse = _make(Autoencoder).reconstruction_loss(restored, target)
    assert mse.item() == pytest.approx(2.25 / 4)
    l1 = _make(Autoencoder, loss="l1").reconstruction_loss(restored, target)
    assert l1.item() == pytest.approx(2.5 / 4)
    # a weighted mean: weights 3, 1, 0, 2 -> (3 * 1 + 0 + 0 + 2 * 0.25) / 6
    weight = torch.tensor([3.0, 1.0, 0.0, 2.0]).view(1, 1, 2, 2)
    got = _make(Autoencoder).reconstruction_loss(restored, target, weight)
    assert got.item() == pytest.approx(3.5 / 6)
    # a per-pixel weight (N, 1, H, W) broadcasts over channels
    rgb_r, rgb_t = restored.expand(1, 3, 2, 2), target.expand(1, 3, 2, 2)
    assert _make(Autoencoder).reconstruction_loss(rgb_r, rgb_t, weight).item() == \
        pytest.approx(3.5 / 6)
    # all-zero weights do not divide by zero
    zero = _make(Autoencoder).reconstruction_loss(restored, target, torch.zeros_like(weight))
    assert zero.item() == 0.0


def test_forward_restores_the_corrupted_augmented_batch():
    method = _make(Autoencoder, augment=lambda x: x.flip(-1), noise="masking", noise_level=0.5)
    x = torch.rand(3, 1, 16, 16)
    seen = {}
    real_restore = method.restore

    def spy(corrupted):
        seen["corrupted"] = corrupted
        return real_restore(corrupted)

    method.restore = spy
    torch.manual_seed(5)
    loss = method(x)["loss"]
    target = x.flip(-1)
    zeros = seen["corrupted"] == 0
    assert zeros.float().mean() == pytest.approx(0.5, abs=0.1)  # half the pixels masked
    assert torch.equal(seen["corrupted"][~zeros], target[~zeros])  # of the *augmented* batch
    with torch.no_grad():
        want = ((real_restore(seen["corrupted"]) - target) ** 2).mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_autoencoder_corruptions():
    x = torch.rand(4, 1, 16, 16)
    g = torch.Generator().manual_seed(0)
    plain, w = _make(Autoencoder).corrupt(x, g)
    assert plain is x and w is None
    noisy, w = _make(Autoencoder, noise="gaussian", noise_level=0.2).corrupt(x, g)
    assert w is None and 0.1 < (noisy - x).std() < 0.2
    masked, w = _make(Autoencoder, noise="masking", noise_level=0.3).corrupt(x, g)
    assert w is None and ((masked == 0).float().mean() - 0.3).abs() < 0.05
    assert torch.equal(masked[masked != 0], x[masked != 0])


@pytest.mark.parametrize(("fill", "value"), [("mean", 0.4), ("zero", 0.0), ("noise", None)])
def test_inpainting_weights_holes_and_fills_them(fill, value):
    method = _make(Inpainting, hole_fill=fill, loss_hole_weight=7.0, hole_fraction=0.3)
    x = torch.full((4, 1, 16, 16), 0.9)
    out, weight = method.corrupt(x, torch.Generator().manual_seed(1))
    holes = weight == 7.0
    assert weight.shape == (4, 1, 16, 16)
    assert torch.equal(weight[~holes], torch.ones_like(weight[~holes]))  # context weighs 1
    assert torch.equal(out[~holes], x[~holes])  # outside the holes nothing changes
    assert holes.float().mean(dim=(1, 2, 3)).min() >= 0.3  # holes cover >= 30 % of each image
    if value is not None:
        assert torch.all(out[holes] == value)
    else:
        filled = out[holes]
        assert 0 <= filled.min() and filled.max() < 1 and filled.std() > 0.2


def test_context_restoration_swaps_patches_of_the_configured_size():
    method = _make(Inpainting, mode="context_restoration", patch_size=0.25, num_swaps=1)
    x = torch.arange(16 * 16, dtype=torch.float32).view(1, 1, 16, 16) / 256
    out, weight = method.corrupt(x, torch.Generator().manual_seed(2))
    assert weight is None
    changed = out != x
    # one swap of two 4x4 patches (0.25 * 16): 32 pixels move
    assert changed.sum().item() == 32
    assert torch.equal(out.flatten().sort().values, x.flatten().sort().values)


def test_genesis_corrupt_has_no_weight_and_uses_its_config():
    method = _make(Genesis, paint_rate=0.0, local_rate=0.0, nonlinear_rate=0.0)
    x = torch.rand(5, 1, 16, 16)
    out, weight = method.corrupt(x, torch.Generator().manual_seed(0))
    assert weight is None and torch.equal(out, x)  # every corruption switched off
    always = _make(Genesis, paint_rate=1.0, inpaint_rate=0.0, local_rate=0.0,
                   nonlinear_rate=0.0)
    out, _ = always.corrupt(x, torch.Generator().manual_seed(0))
    assert not torch.equal(out, x)  # out-painting always changes the image


def test_context_restoration_patches_follow_height_and_width_at_least_one_pixel():
    x = torch.arange(16 * 32, dtype=torch.float32).view(1, 1, 16, 32) / 512
    wide = _make(Inpainting, mode="context_restoration", patch_size=0.25, num_swaps=1)
    out, _ = wide.corrupt(x, torch.Generator().manual_seed(3))
    assert (out != x).sum().item() == 2 * 4 * 8  # patches of 0.25 * (16, 32) = 4 x 8
    tiny = _make(Inpainting, mode="context_restoration", patch_size=0.02, num_swaps=1)
    out, _ = tiny.corrupt(x, torch.Generator().manual_seed(3))
    assert (out != x).sum().item() == 2  # round(0.32) = 0 -> one pixel each way


def test_weighted_loss_divides_by_small_weight_sums_too():
    restored = torch.zeros(1, 1, 2, 2)
    target = torch.ones(1, 1, 2, 2)
    weight = torch.full((1, 1, 2, 2), 0.125)  # sums to 0.5
    got = _make(Autoencoder).reconstruction_loss(restored, target, weight)
    assert got.item() == pytest.approx(1.0)  # (4 * 0.125 * 1) / 0.5
