"""Batched augmentation: shapes, determinism, exact identity/flips, validation, and the batched
intensity ops against torchvision's per-image reference implementations."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from ssl_ft.augment import (
    AugmentConfig,
    BatchAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_gamma,
    adjust_hue,
    adjust_saturation,
    blur_kernel_size,
    gaussian_blur,
    preset,
)
from ssl_ft.errors import UserError

IDENTITY = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=0.0, vflip=0.0, rotate=0.0,
                brightness=0.0, contrast=0.0, gamma=0.0, saturation=0.0, hue=0.0, jitter_p=0.0,
                grayscale_p=0.0, blur_p=0.0, noise_std=0.0)


def identity(**changes) -> AugmentConfig:
    return AugmentConfig(**{**IDENTITY, **changes})


def images(n: int, c: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def checkerboard(size: int) -> torch.Tensor:
    i = torch.arange(size)
    return ((i[:, None] + i[None, :]) % 2).float().expand(2, 1, size, size)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("in_size", [28, 64])
@pytest.mark.parametrize("out_size", [28, 64])
def test_shape_dtype_range(channels, in_size, out_size):
    out = BatchAugment(AugmentConfig(), out_size, channels)(images(8, channels, in_size))
    assert out.shape == (8, channels, out_size, out_size)
    assert out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1 and torch.isfinite(out).all()


def test_non_square_input_and_empty_batch():
    aug = BatchAugment(AugmentConfig(), 32, 1)
    assert aug(torch.rand(3, 1, 50, 130)).shape == (3, 1, 32, 32)
    assert aug(torch.rand(0, 1, 28, 28)).shape == (0, 1, 32, 32)


def test_same_seed_same_output_different_seed_different():
    aug, x = BatchAugment(AugmentConfig(), 28, 1), images(16, 1, 28)
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    b = aug(x)
    torch.manual_seed(4)
    c = aug(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    g0, g1 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(aug(x, generator=g0), aug(x, generator=g1))


def test_per_sample_parameters_differ():
    x = images(1, 3, 64).expand(2, 3, 64, 64)
    torch.manual_seed(0)
    out = BatchAugment(AugmentConfig(), 64, 3)(x)
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 64])
def test_identity_config_returns_input(channels, size):
    x = images(4, channels, size)
    out = BatchAugment(identity(), size, channels)(x)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("field,flip", [("hflip", -1), ("vflip", -2)])
def test_flips_are_exact(field, flip):
    x = images(4, 3, 28)
    out = BatchAugment(identity(**{field: 1.0}), 28, 3)(x)
    torch.testing.assert_close(out, x.flip(flip), atol=1e-5, rtol=0)


def test_crop_scale_sets_the_crop_area():
    ramp = torch.linspace(0, 1, 64).expand(4, 1, 64, 64).contiguous()
    out = BatchAugment(identity(crop_scale=(0.25, 0.25)), 64, 1)(ramp)
    span = out.amax(dim=(1, 2, 3)) - out.amin(dim=(1, 2, 3))
    torch.testing.assert_close(span, torch.full((4,), 0.5), atol=0.03, rtol=0)


def test_rotation_pads_corners_with_zeros():
    torch.manual_seed(0)
    out = BatchAugment(identity(rotate=45.0), 28, 1)(torch.ones(8, 1, 28, 28))
    assert out[:, :, 14, 14].min() == pytest.approx(1.0)   # centre stays inside the image
    assert (out == 0).any() and out.mean() < 0.97          # corners outside it are black


def test_one_channel_colour_field_rejected():
    for name in ("saturation", "hue", "grayscale_p"):
        with pytest.raises(UserError, match=name):
            AugmentConfig(**{name: 0.1}).resolve(28, 1)
        with pytest.raises(UserError, match=name):
            BatchAugment(AugmentConfig(**{name: 0.1}), 28, 1)
    AugmentConfig(saturation=0.0, hue=0.0).resolve(28, 1)   # zero is fine


@pytest.mark.parametrize("changes,name", [
    (dict(crop_scale=(0.5, 0.2)), "crop_scale"),
    (dict(crop_scale=(0.0, 1.0)), "crop_scale"),
    (dict(crop_scale=(0.5, 1.5)), "crop_scale"),
    (dict(crop_ratio=(2.0, 1.0)), "crop_ratio"),
    (dict(crop_ratio=(1.0,)), "crop_ratio"),
    (dict(blur_sigma=(0.0, 1.0)), "blur_sigma"),
    (dict(hflip=1.5), "hflip"),
    (dict(jitter_p=-0.1), "jitter_p"),
    (dict(rotate=200.0), "rotate"),
    (dict(hue=0.7), "hue"),
    (dict(noise_std=float("nan")), "noise_std"),
    (dict(brightness="a lot"), "brightness"),
])
def test_bad_values_name_the_field(changes, name):
    with pytest.raises(UserError, match=name) as err:
        AugmentConfig(**changes).resolve(64, 3)
    assert "\n" not in str(err.value)


def test_bad_inputs():
    aug = BatchAugment(AugmentConfig(), 28, 1)
    with pytest.raises(UserError, match="shape"):
        aug(torch.rand(2, 3, 28, 28))
    with pytest.raises(UserError, match="uint8"):
        aug(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(UserError, match="channels"):
        preset(28, 2)
    with pytest.raises(UserError, match="size"):
        preset(0, 1)


def test_resolve_fills_only_none_and_does_not_mutate():
    cfg = AugmentConfig(rotate=0.0, crop_scale=[0.5, 1.0])   # lists come from YAML recipes
    res = cfg.resolve(28, 1)
    assert cfg.hflip is None and res.hflip == 0.5
    assert res.rotate == 0.0 and res.crop_scale == (0.5, 1.0)
    assert all(v is not None for v in vars(res).values())


def test_presets():
    assert preset(28, 1).crop_scale == (0.35, 1.0)
    assert preset(64, 1).crop_scale == (0.25, 1.0)
    assert preset(128, 3).crop_scale == (0.2, 1.0) == preset(512, 3).crop_scale
    assert preset(20, 1) == preset(28, 1)                    # nearest outside the table
    mid = preset(96, 1)
    assert 0.2 < mid.crop_scale[0] < 0.25 and 0.6 < mid.blur_sigma[1] < 1.1
    moco = preset(224, 3, "natural")                         # MoCo v2 exactly
    assert (moco.brightness, moco.contrast, moco.saturation, moco.hue) == (0.4, 0.4, 0.4, 0.1)
    assert (moco.jitter_p, moco.grayscale_p, moco.blur_p, moco.blur_sigma) == (0.8, 0.2, 0.5,
                                                                               (0.1, 2.0))
    gray = preset(28, 1)
    assert gray.saturation == gray.hue == gray.grayscale_p == 0 and gray.gamma > 0
    assert gray.blur_p < preset(64, 1).blur_p and gray.vflip == 0 and gray.hflip == 0.5


def test_modality_presets_keep_colour_for_medical_photographs():
    auto_rgb, colour = preset(64, 3), preset(64, 3, "colour")
    assert auto_rgb == colour and colour.modality == "colour"
    assert colour.grayscale_p == 0 and colour.hue <= 0.02 and colour.saturation <= 0.1
    assert preset(64, 3, "grey").saturation == preset(64, 3, "grey").hue == 0
    assert preset(64, 1).modality == "grey"
    assert AugmentConfig(modality="natural").resolve(64, 3).grayscale_p == 0.2
    assert AugmentConfig(modality="natural", hue=0.05).resolve(64, 3).hue == 0.05
    with pytest.raises(UserError, match="modality='colour'.*1 channel"):
        preset(28, 1, "colour")
    with pytest.raises(UserError, match="modality='fundus'"):
        AugmentConfig(modality="fundus").resolve(28, 3)


def test_blur_kernel_size():
    assert [blur_kernel_size(s) for s in (28, 64, 128, 224)] == [3, 7, 13, 23]
    assert blur_kernel_size(28, sigma_max=3.0) == 13
    assert blur_kernel_size(4, sigma_max=10.0) == 3


def test_blur_reduces_high_frequencies():
    x = checkerboard(28)
    assert gaussian_blur(x, 1.0, 3).var() < 0.2 * x.var()
    torch.manual_seed(0)
    out = BatchAugment(identity(blur_p=1.0, blur_sigma=(1.0, 1.0)), 28, 1)(x)
    assert out.var() < 0.2 * x.var()


def test_blur_matches_torchvision_per_image():
    x, sigma = images(4, 3, 28), torch.tensor([0.3, 0.8, 1.5, 4.0])
    ref = torch.stack([TF.gaussian_blur(x[i], [7, 7], [float(s)] * 2) for i, s in enumerate(sigma)])
    torch.testing.assert_close(gaussian_blur(x, sigma, 7), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("op,ref,channels", [
    (adjust_brightness, TF.adjust_brightness, 1),
    (adjust_contrast, TF.adjust_contrast, 1),
    (adjust_contrast, TF.adjust_contrast, 3),
    (adjust_saturation, TF.adjust_saturation, 3),
])
def test_jitter_matches_torchvision_per_image(op, ref, channels):
    x, f = images(4, channels, 16), torch.tensor([0.0, 0.6, 1.0, 1.4])
    expected = torch.stack([ref(x[i], float(v)) for i, v in enumerate(f)])
    torch.testing.assert_close(op(x, f), expected, atol=1e-5, rtol=0)


def test_hue_matches_torchvision_per_image():
    x, shift = images(4, 3, 16), torch.tensor([-0.5, -0.1, 0.05, 0.3])
    x[0, :, 0, 0] = 0.5                                     # a grey pixel: undefined hue
    expected = torch.stack([TF.adjust_hue(x[i], float(v)) for i, v in enumerate(shift)])
    torch.testing.assert_close(adjust_hue(x, shift), expected, atol=1e-5, rtol=0)


def test_gamma_direction():
    x = images(2, 1, 16)
    assert adjust_gamma(x, 2.0).mean() < x.mean() < adjust_gamma(x, 0.5).mean()
    torch.testing.assert_close(adjust_gamma(x, torch.tensor([2.0, 1.0]))[1], x[1])
    torch.testing.assert_close(adjust_gamma(x, 2.0), TF.adjust_gamma(x, 2.0))


def test_gamma_in_pipeline_is_log_symmetric():
    torch.manual_seed(0)
    x = torch.full((2000, 1, 4, 4), 0.5)
    out = BatchAugment(identity(gamma=1.0, jitter_p=1.0), 4, 1)(x)[:, 0, 0, 0]
    gammas = torch.log(out) / math.log(0.5)                  # recover each image's gamma
    assert gammas.min() >= 0.5 - 1e-4 and gammas.max() <= 2.0 + 1e-4
    assert abs(torch.log(gammas).mean().item()) < 0.05       # as often darker as brighter


def test_noise_std_matches():
    torch.manual_seed(0)
    x = torch.full((16, 1, 32, 32), 0.5)
    out = BatchAugment(identity(noise_std=0.05), 32, 1)(x)
    assert (out - x).std().item() == pytest.approx(0.05, rel=0.05)
    assert (out - x).mean().abs() < 0.005


def test_grayscale_and_jitter_probability():
    torch.manual_seed(0)
    x = images(64, 3, 8)
    out = BatchAugment(identity(grayscale_p=1.0), 8, 3)(x)
    assert torch.allclose(out[:, 0], out[:, 1]) and torch.allclose(out[:, 1], out[:, 2])
    out = BatchAugment(identity(brightness=0.4, jitter_p=0.5), 8, 3)(x)
    changed = (out - x).abs().amax(dim=(1, 2, 3)) > 1e-4
    assert 16 < changed.sum() < 48


def test_autocast_and_low_precision_input():
    aug, x = BatchAugment(AugmentConfig(), 28, 3), images(4, 3, 28)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = aug(x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    out = aug(x.bfloat16())
    assert out.dtype == torch.bfloat16 and out.min() >= 0 and out.max() <= 1


def test_generator_drives_all_randomness():
    aug, x = BatchAugment(AugmentConfig(), 28, 1), images(8, 1, 28)
    torch.manual_seed(0)
    a = aug(x, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(99)                                   # global RNG state must not matter
    b = aug(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
