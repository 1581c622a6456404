"""The corruptions do what their papers say, on exact small examples."""

from __future__ import annotations

import itertools

import pytest
import torch

from ssl_ft.methods.corruptions import (
    bezier_intensity,
    gaussian_noise,
    genesis_inpaint,
    genesis_outpaint,
    local_pixel_shuffle,
    masking_noise,
    random_holes,
    shuffle_windows,
    swap_patches,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _unique_images(n: int, c: int, h: int, w: int) -> torch.Tensor:
    """Every pixel has its own value in [0, 0.5); channel ``k`` adds ``0.5 * k / c``."""
    base = torch.randperm(h * w, generator=_gen(1)).float().view(1, 1, h, w) / (2 * h * w)
    return (base + 0.5 * torch.arange(c).view(1, c, 1, 1) / c).repeat(n, 1, 1, 1)


# --- Models Genesis: non-linear intensity transformation ---------------------------------------

def test_bezier_maps_unit_interval_monotonically() -> None:
    ramp = torch.linspace(0, 1, 2001).view(1, 1, 1, -1).repeat(64, 1, 1, 1)
    out = bezier_intensity(ramp, generator=_gen())
    assert out.min() >= 0 and out.max() <= 1
    diffs = out[:, 0, 0, 1:] - out[:, 0, 0, :-1]
    increasing = (diffs >= 0).all(dim=1)
    decreasing = (diffs <= 0).all(dim=1)
    assert (increasing | decreasing).all()  # every sample monotonic, one direction or the other
    assert increasing.any() and decreasing.any()  # both directions occur (p = 0.5 each)
    # end points: increasing curves fix 0 and 1, decreasing ones swap them
    assert torch.allclose(out[increasing, 0, 0, 0], torch.zeros(1), atol=1e-6)
    assert torch.allclose(out[increasing, 0, 0, -1], torch.ones(1), atol=1e-6)
    assert torch.allclose(out[decreasing, 0, 0, 0], torch.ones(1), atol=1e-6)
    # non-linear: not the identity
    assert (out[increasing] - ramp[increasing]).abs().amax() > 0.01


def test_bezier_increasing_keeps_sorted_inputs_sorted_and_shared_across_channels() -> None:
    x = torch.rand(8, 3, 16, 16, generator=_gen(2))
    out = bezier_intensity(x, decreasing_prob=0.0, generator=_gen(3))
    assert out.shape == x.shape
    for i, c in itertools.product(range(8), range(3)):
        order = x[i, c].flatten().argsort()
        assert (out[i, c].flatten()[order].diff() >= 0).all()
    # one curve per sample: equal intensities in different channels map to the same value
    y = x[:, :1].repeat(1, 3, 1, 1)
    out = bezier_intensity(y, generator=_gen(3))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])


def test_bezier_probability_zero_is_identity() -> None:
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(bezier_intensity(x, p=0.0, generator=_gen()), x)


# --- Models Genesis: local pixel shuffling -------------------------------------------------------

def test_shuffle_windows_keeps_each_window_multiset() -> None:
    x = _unique_images(3, 2, 13, 11)
    out = shuffle_windows(x, (3, 2), (1, 1), generator=_gen())
    assert not torch.equal(out, x)
    for top in range(1, 13 - 2, 3):
        for left in range(1, 11 - 1, 2):
            win = (slice(None), slice(None), slice(top, top + 3), slice(left, left + 2))
            a = x[win].reshape(3, 2, -1).sort(-1).values
            b = out[win].reshape(3, 2, -1).sort(-1).values
            assert torch.equal(a, b)
    # outside the whole windows of the grid nothing moves
    covered = torch.zeros(13, 11, dtype=torch.bool)
    covered[1 : 1 + 4 * 3, 1 : 1 + 5 * 2] = True
    assert torch.equal(out[..., ~covered], x[..., ~covered])
    # channels move together
    assert torch.allclose(out[:, 1] - out[:, 0], x[:, 1] - x[:, 0])


def _grid_explains(x: torch.Tensor, out: torch.Tensor, m: int) -> bool:
    """Some grid of windows of at most ``m`` x ``m`` explains ``x -> out`` (single image)."""
    h, w = x.shape[-2:]
    for wh, ww in itertools.product(range(1, m + 1), repeat=2):
        for oy, ox in itertools.product(range(wh), range(ww)):
            ok = True
            covered = torch.zeros(h, w, dtype=torch.bool)
            for top in range(oy, h - wh + 1, wh):
                for left in range(ox, w - ww + 1, ww):
                    covered[top : top + wh, left : left + ww] = True
                    a = x[..., top : top + wh, left : left + ww].flatten().sort().values
                    b = out[..., top : top + wh, left : left + ww].flatten().sort().values
                    if not torch.equal(a, b):
                        ok = False
                        break
                if not ok:
                    break
            if ok and torch.equal(out[..., ~covered], x[..., ~covered]):
                return True
    return False


def test_local_pixel_shuffle_only_moves_pixels_within_small_windows() -> None:
    x = _unique_images(6, 1, 20, 20)
    out = local_pixel_shuffle(x, max_window=3, generator=_gen(4))
    assert not torch.equal(out, x)
    for i in range(6):
        assert torch.equal(x[i].flatten().sort().values, out[i].flatten().sort().values)
        assert _grid_explains(x[i], out[i], 3)
    # default window: a tenth of the side, at least 2; probability 0 leaves images alone
    assert torch.equal(local_pixel_shuffle(x, p=0.0, generator=_gen()), x)


# --- Models Genesis: in-painting and out-painting ------------------------------------------------

def test_genesis_inpaint_changes_only_painted_boxes() -> None:
    x = torch.full((32, 3, 28, 28), 0.5)
    out, mask = genesis_inpaint(x, generator=_gen(5))
    changed = (out != x).any(dim=1, keepdim=True)
    assert torch.equal(changed, mask)  # noise never hits exactly 0.5
    assert ((out >= 0) & (out < 1)).all()
    # boxes keep 3 px to the border; at most 5 boxes of side <= 28 // 3
    assert not mask[..., :3, :].any() and not mask[..., -3:, :].any()
    assert not mask[..., :, :3].any() and not mask[..., :, -3:].any()
    assert (mask.flatten(1).sum(1) <= 5 * 9 * 9).all()
    assert mask.flatten(1).any(1).float().mean() > 0.8  # no box at all only with p = 0.05


def test_genesis_outpaint_keeps_only_boxes() -> None:
    x = torch.rand(16, 1, 28, 28, generator=_gen(6))
    out, kept = genesis_outpaint(x, generator=_gen(7))
    assert torch.equal(out[kept.expand_as(out)], x[kept.expand_as(x)])
    assert (out[~kept.expand_as(out)] != x[~kept.expand_as(x)]).all()
    # at least one box of about half the side, 3 px from the border
    side = 28 - 4 * 28 // 7
    assert (kept.flatten(1).sum(1) >= side * side).all()
    assert not kept[..., :3, :].any() and not kept[..., :, -3:].any()


def test_corruptions_reproducible_with_generator() -> None:
    x = torch.rand(4, 1, 28, 28, generator=_gen(8))
    for fn in (bezier_intensity, local_pixel_shuffle):
        assert torch.equal(fn(x, generator=_gen(9)), fn(x, generator=_gen(9)))
    for fn2 in (genesis_inpaint, genesis_outpaint, random_holes, swap_patches):
        a, ma = fn2(x, generator=_gen(9))
        b, mb = fn2(x, generator=_gen(9))
        assert torch.equal(a, b) and torch.equal(ma, mb)
        c, _ = fn2(x, generator=_gen(10))
        assert not torch.equal(a, c)
    assert torch.equal(gaussian_noise(x, 0.1, _gen(9)), gaussian_noise(x, 0.1, _gen(9)))
    assert torch.equal(masking_noise(x, 0.3, _gen(9)), masking_noise(x, 0.3, _gen(9)))
    assert torch.equal(x, torch.rand(4, 1, 28, 28, generator=_gen(8)))  # input not modified


# --- Context encoder holes and context restoration -----------------------------------------------

def test_random_holes_fill_and_coverage() -> None:
    x = torch.rand(8, 3, 28, 28, generator=_gen(11))
    fill = torch.tensor([0.1, 0.2, 0.3])
    out, hole = random_holes(x, fraction=0.25, fill=fill, generator=_gen(12))
    cover = hole.float().flatten(1).mean(1)
    assert (cover >= 0.25).all() and (cover < 0.25 + 2 * 7 * 7 / 784).all()
    h = hole.expand_as(x)
    assert torch.equal(out[~h], x[~h])
    assert torch.equal(out.permute(1, 0, 2, 3)[h.permute(1, 0, 2, 3)],
                       fill.view(3, 1).expand(3, int(hole.sum())).flatten())


def test_swap_patches_keeps_histogram_and_moves_pixels() -> None:
    x = _unique_images(5, 2, 28, 28)
    out, moved = swap_patches(x, num_swaps=10, patch=(3, 3), generator=_gen(13))
    for i in range(5):
        for c in range(2):
            assert torch.equal(x[i, c].flatten().sort().values, out[i, c].flatten().sort().values)
    changed = (out != x).any(dim=1, keepdim=True)
    assert changed.any(dim=(1, 2, 3)).all()
    assert not (changed & ~moved).any()  # only pixels of swapped patches change
    assert torch.allclose(out[:, 1] - out[:, 0], x[:, 1] - x[:, 0])  # pixels move whole
    with pytest.raises(ValueError, match="do not fit"):
        swap_patches(x[..., :4, :4], patch=(3, 3))


def test_single_swap_exchanges_two_patches() -> None:
    x = _unique_images(1, 1, 10, 10)
    out, moved = swap_patches(x, num_swaps=1, patch=(2, 2), generator=_gen(14))
    assert int(moved.sum()) == 8 and int((out != x).sum()) == 8


def test_noises() -> None:
    x = torch.full((2, 1, 32, 32), 0.5)
    g = gaussian_noise(x, 0.1, _gen())
    assert 0.08 < (g - x).std() < 0.12 and g.min() >= 0 and g.max() <= 1
    m = masking_noise(x, 0.3, _gen())
    assert set(m.unique().tolist()) == {0.0, 0.5}
    assert 0.25 < (m == 0).float().mean() < 0.35
