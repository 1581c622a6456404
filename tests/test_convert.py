"""ssl_ft.data.convert on arrays whose converted values are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ssl_ft.data.convert as convert
from ssl_ft.data.convert import (
    centre_crop,
    channel_stats,
    check_channels,
    check_size,
    convert_channels,
    max_value_of,
    resize_images,
    to_nchw,
)
from ssl_ft.errors import UserError


def test_checks_accept_and_name_the_bad_value():
    assert check_channels(None) is None and check_channels(1) == 1
    assert check_channels(np.int64(3)) == 3 and type(check_channels(np.int64(3))) is int
    for bad in (2, 0, True, 1.0, "3"):
        with pytest.raises(UserError, match="channels must be 1 or 3") as info:
            check_channels(bad)
        assert repr(bad) in str(info.value)
    assert check_size(None) is None and check_size(1) == 1
    assert check_size(np.int32(28)) == 28 and type(check_size(np.int32(28))) is int
    for bad in (0, -4, True, 2.5, "28"):
        with pytest.raises(UserError, match="size must be a positive integer") as info:
            check_size(bad)
        assert repr(bad) in str(info.value)
    assert max_value_of(np.uint8) == 255 and max_value_of(np.dtype("uint16")) == 65535
    with pytest.raises(ValueError, match="float32"):
        max_value_of(np.float32)


def test_to_nchw_layouts():
    hw = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = to_nchw(hw, source="x.npz")
    assert out.shape == (2, 1, 3, 4) and out.flags.c_contiguous
    np.testing.assert_array_equal(out[:, 0], hw)
    np.testing.assert_array_equal(to_nchw(hw[..., None], source="x"), out)
    rgb = np.arange(2 * 3 * 4 * 3, dtype=np.uint16).reshape(2, 3, 4, 3)
    out = to_nchw(rgb, source="x")
    assert out.shape == (2, 3, 3, 4) and out.flags.c_contiguous and out.dtype == np.uint16
    assert out[1, 2, 0, 3] == rgb[1, 0, 3, 2]
    for bad in (np.zeros((2, 3, 4, 2), np.uint8), np.zeros((3, 4), np.uint8),
                np.zeros((1, 2, 3, 4, 3), np.uint8)):
        with pytest.raises(UserError, match=r"data\.npz: 'val_images' has shape") as info:
            to_nchw(bad, source="data.npz", key="val_images")
        assert str(bad.shape) in str(info.value)


def test_rgb_to_grey_is_rounded_bt601_luma():
    # 0.299 R + 0.587 G + 0.114 B: (255, 0, 0) -> 76.245 -> 76; (0, 255, 0) -> 149.685 -> 150;
    # (0, 0, 255) -> 29.07 -> 29; (10, 20, 30) -> 2.99 + 11.74 + 3.42 = 18.15 -> 18;
    # (255, 255, 255) -> 255
    pixels = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30], [255, 255, 255]],
                      dtype=np.uint8)
    images = pixels.T.reshape(1, 3, 1, 5)
    grey = convert_channels(images, 1)
    assert grey.dtype == np.uint8 and grey.shape == (1, 1, 1, 5)
    assert grey.ravel().tolist() == [76, 150, 29, 18, 255]
    # 16 bit: 0.299 * 65535 = 19594.965 -> 19595, dtype kept
    deep = np.array([65535, 0, 0], dtype=np.uint16).reshape(1, 3, 1, 1)
    assert convert_channels(deep, 1).ravel().tolist() == [19595]
    assert convert_channels(deep, 1).dtype == np.uint16


def test_grey_to_rgb_replicates_and_same_channels_is_untouched():
    grey = np.arange(12, dtype=np.uint8).reshape(1, 1, 3, 4)
    rgb = convert_channels(grey, 3)
    assert rgb.shape == (1, 3, 3, 4) and rgb.flags.c_contiguous
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, c], grey[:, 0])
    assert convert_channels(grey, None) is grey and convert_channels(grey, 1) is grey
    assert convert_channels(rgb, 3) is rgb
    with pytest.raises(ValueError, match="cannot convert 2 channels to 1"):
        convert_channels(np.zeros((1, 2, 2, 2), np.uint8), 1)


def test_chunked_work_equals_one_chunk(monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 3, 5, 6), dtype=np.uint8)
    whole_grey, whole_small = convert_channels(images, 1), resize_images(images, 3)
    whole_stats = channel_stats(images, 255)
    monkeypatch.setattr(convert, "_CHUNK_VALUES", 2 * 3 * 5 * 6)  # 2 images a chunk
    assert convert._chunk(images) == 2
    np.testing.assert_array_equal(convert_channels(images, 1), whole_grey)
    np.testing.assert_array_equal(resize_images(images, 3), whole_small)
    for got, want in zip(channel_stats(images, 255), whole_stats, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    monkeypatch.setattr(convert, "_CHUNK_VALUES", 1)  # never below one image a chunk
    assert convert._chunk(images) == 1
    np.testing.assert_array_equal(convert_channels(images, 1), whole_grey)
    assert convert._chunk(np.zeros((3, 0, 4, 4), np.uint8)) == 1


def test_centre_crop_takes_the_middle_square():
    wide = np.arange(4 * 6).reshape(1, 1, 4, 6)
    np.testing.assert_array_equal(centre_crop(wide)[0, 0], wide[0, 0, :, 1:5])
    tall = np.arange(7 * 4).reshape(1, 1, 7, 4)
    np.testing.assert_array_equal(centre_crop(tall)[0, 0], tall[0, 0, 1:5, :])  # (7-4)//2 = 1
    square = np.zeros((1, 1, 3, 3))
    assert centre_crop(square).shape == (1, 1, 3, 3)


def test_resize_keeps_constants_rounds_and_clips():
    flat = np.full((2, 1, 8, 8), 200, np.uint8)
    small = resize_images(flat, 4)
    assert small.shape == (2, 1, 4, 4) and small.dtype == np.uint8 and (small == 200).all()
    assert resize_images(flat, 8) is not flat and (resize_images(flat, 8) == flat).all()
    # a non-square image is cropped first: the middle 4x4 of a 4x10 one, already 4 px
    wide = np.zeros((1, 1, 4, 10), np.uint16)
    wide[..., 3:7] = 65535
    out = resize_images(wide, 4)
    assert out.dtype == np.uint16 and (out == 65535).all()
    # against torch's antialiased bilinear, rounded half to even and clipped to the dtype
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 2, 9, 9), dtype=np.uint8)
    for size in (4, 13):
        ref = torch.nn.functional.interpolate(torch.from_numpy(images.astype(np.float32)),
                                              size=(size, size), mode="bilinear",
                                              align_corners=False, antialias=True)
        want = np.clip(np.rint(ref.numpy()), 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(resize_images(images, size), want)
    # 2x2 checkerboard of 0/255 up to 4x4: bilinear overshoot is clipped, never wraps around
    board = np.array([[0, 255], [255, 0]], np.uint8).reshape(1, 1, 2, 2)
    up = resize_images(board, 4)
    assert up.min() >= 0 and up.max() <= 255 and up[0, 0, 0, 0] == 0 and up[0, 0, 0, 3] == 255


def test_channel_stats_on_a_worked_example():
    # channel 0: values 0, 255, 255, 0 and 255 x 4 -> in [0, 1]: mean 6/8 = 0.75,
    # E[x^2] = 0.75, std = sqrt(0.75 - 0.5625) = sqrt(0.1875); channel 1: constant -> std 1
    images = np.zeros((2, 2, 2, 2), np.uint8)
    images[0, 0] = [[0, 255], [255, 0]]
    images[1, 0] = 255
    images[:, 1] = 51
    mean, std = channel_stats(images, 255)
    assert mean == pytest.approx((0.75, 0.2))
    assert std == pytest.approx((math.sqrt(0.1875), 1.0))
    mean16, _ = channel_stats(np.full((1, 1, 2, 2), 1000, np.uint16), 65535)
    assert mean16 == pytest.approx((1000 / 65535,))
    with pytest.raises(ValueError, match="empty"):
        channel_stats(np.zeros((0, 1, 2, 2), np.uint8), 255)


def _luma(images):
    w = np.array([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
    return np.clip(np.rint((images.astype(np.float64) * w).sum(1, keepdims=True)), 0, 255)


def test_every_chunk_is_written_including_the_first(monkeypatch):
    # fresh values (nothing computed from them before), several chunks: the library result
    # first, the reference after, so no freed buffer can hold the answer already
    monkeypatch.setattr(convert, "_CHUNK_VALUES", 3 * 4 * 4)
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (5, 3, 4, 4), dtype=np.uint8)
    grey = convert_channels(images, 1)
    np.testing.assert_array_equal(grey, _luma(images).astype(np.uint8))
    big = rng.integers(0, 256, (5, 1, 8, 8), dtype=np.uint8)
    small = resize_images(big, 4)
    ref = torch.nn.functional.interpolate(torch.from_numpy(big.astype(np.float32)), size=(4, 4),
                                          mode="bilinear", align_corners=False, antialias=True)
    np.testing.assert_array_equal(small, np.clip(np.rint(ref.numpy()), 0, 255).astype(np.uint8))


def test_shapes_that_tell_height_width_and_channels_apart():
    with pytest.raises(ValueError, match="cannot convert 2 channels to 3"):
        convert_channels(np.zeros((1, 2, 2, 2), np.uint8), 3)
    tall = np.arange(8 * 4).reshape(1, 1, 8, 4)
    np.testing.assert_array_equal(centre_crop(tall)[0, 0], tall[0, 0, 2:6, :])  # (8-4)//2 = 2
    wide = np.arange(3 * 9).reshape(1, 1, 3, 9)
    np.testing.assert_array_equal(centre_crop(wide)[0, 0], wide[0, 0, :, 3:6])
    rgb = np.full((2, 3, 9, 9), 77, np.uint8)  # 3 channels resized to 3 px: not the same "3"
    assert resize_images(rgb, 3).shape == (2, 3, 3, 3)
    # statistics of non-square images: 2 x 3 pixels, values 0..5 of 5 -> mean 0.5
    flat = (np.arange(6).reshape(1, 1, 2, 3)).astype(np.uint8)
    mean, std = channel_stats(flat, 5)
    assert mean == pytest.approx((0.5,))
    assert std == pytest.approx((float(np.std(np.arange(6) / 5)),))
