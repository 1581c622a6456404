"""Every corruption against a reference written from its docstring, drawing the same random
numbers from a seeded generator in the documented order: the outputs must be equal, pixel for
pixel (the reference uses numpy's ``interp`` and plain loops instead of the library's batched
gathers). Also worked values of the Bezier curve and of the draws' helpers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ssl_ft.methods import corruptions as C


class Replay:
    """The draws a corruption makes on a generator seeded with ``seed``."""

    def __init__(self, seed: int) -> None:
        self.g = torch.Generator().manual_seed(seed)

    def rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.g)

    def randint(self, low: int, high: int) -> int:  # both inclusive; no draw when high <= low
        return low if high <= low else int(torch.randint(low, high + 1, (1,), generator=self.g))

    def uniform(self) -> float:
        return float(torch.rand((), generator=self.g))

    def box(self, size: int, side: int, margin: int) -> tuple[int, int]:
        size = max(1, min(size, side))
        margin = min(margin, (side - size) // 2)
        return self.randint(margin, side - size - margin), size


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int, c: int, h: int, w: int, seed: int = 7) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=_gen(seed))


# --- helpers ------------------------------------------------------------------------------------

def test_cubic_bezier_worked_values():
    p1 = torch.tensor([[0.2, 0.9]], dtype=torch.float64)
    p2 = torch.tensor([[0.4, 0.1]], dtype=torch.float64)
    xs, ys = C._cubic_bezier(p1, p2, 5)
    # Bernstein weights of P1, P2, P3: t = 0.25: 27/64, 9/64, 1/64; t = 0.5: 3/8, 3/8, 1/8;
    # t = 0.75: 9/64, 27/64, 27/64
    assert xs[0].tolist() == pytest.approx([0.0, 0.15625, 0.35, 0.61875, 1.0], abs=1e-12)
    assert ys[0].tolist() == pytest.approx([0.0, 0.409375, 0.5, 0.590625, 1.0], abs=1e-12)
    assert xs.shape == ys.shape == (1, 5)


def test_randint_is_inclusive_and_draws_nothing_for_an_empty_range():
    g = _gen(3)
    before = g.get_state()
    assert C._randint(4, 4, g) == 4 and C._randint(5, 2, g) == 5
    assert torch.equal(g.get_state(), before)  # no draw
    assert {C._randint(2, 4, g) for _ in range(200)} == {2, 3, 4}
    r = Replay(9)
    g = _gen(9)
    assert [C._randint(0, 6, g) for _ in range(20)] == [r.randint(0, 6) for _ in range(20)]


def test_chosen_and_uniform_follow_the_draws():
    r, g = Replay(4), _gen(4)
    draws = r.rand(10)
    assert C._chosen(10, 0.5, g) == [i for i in range(10) if draws[i] < 0.5]
    assert C._uniform(g) == r.uniform()
    assert C._chosen(6, 1.0, _gen(0)) == list(range(6)) and C._chosen(6, 0.0, _gen(0)) == []


def test_the_global_generator_is_used_when_none_is_given():
    x = _images(2, 2, 8, 8)
    for fn in (lambda g: C.masking_noise(x, 0.5, generator=g),
               lambda g: C.gaussian_noise(x, 0.3, generator=g),
               lambda g: C.bezier_intensity(x, generator=g),
               lambda g: C.genesis_outpaint(x, generator=g)[0]):
        torch.manual_seed(11)
        assert torch.equal(fn(None), fn(_gen(11)))


# --- Models Genesis -----------------------------------------------------------------------------

def _ref_bezier(x, seed, p, decreasing_prob, steps):
    r, n = Replay(seed), x.shape[0]
    draws = r.rand(n)
    idx = [i for i in range(n) if draws[i] < p]
    out = x.clone()
    if not idx:
        return out
    k = len(idx)
    p1, p2 = r.rand(k, 2).double().numpy(), r.rand(k, 2).double().numpy()
    flip = r.rand(k) < decreasing_prob
    t = np.linspace(0.0, 1.0, steps)
    b1, b2, b3 = 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t ** 2, t ** 3
    for j, i in enumerate(idx):
        xs = np.sort(b1 * p1[j, 0] + b2 * p2[j, 0] + b3)
        ys = np.sort(b1 * p1[j, 1] + b2 * p2[j, 1] + b3)
        ys = ys[::-1] if flip[j] else ys
        v = x[i].double().clamp(0, 1).numpy()
        out[i] = torch.from_numpy(np.interp(v, xs, ys)).clamp(0, 1).to(x.dtype)
    return out


@pytest.mark.parametrize(("seed", "p", "decreasing_prob", "steps"), [
    (0, 1.0, 0.5, 1001), (1, 0.6, 0.5, 1001), (2, 1.0, 0.0, 7), (3, 1.0, 1.0, 4)])
def test_bezier_intensity_equals_the_reference(seed, p, decreasing_prob, steps):
    x = _images(6, 2, 5, 7)
    x[0, 0, 0, :3] = torch.tensor([0.0, 1.0, 1.5])  # the ends, and a value clamped to 1
    out = C.bezier_intensity(x, p=p, decreasing_prob=decreasing_prob, steps=steps,
                             generator=_gen(seed))
    ref = _ref_bezier(x, seed, p, decreasing_prob, steps)
    assert torch.allclose(out, ref, atol=1e-6, rtol=0)
    changed = [not torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    assert changed == (Replay(seed).rand(6) < p).tolist()  # seed 1 at 0.6: samples 1, 2, 4
    assert sum(changed) == (6 if p == 1.0 else 3)


def _ref_shuffle_windows(x, window, offset, r):
    n, _, height, width = x.shape
    (h, w), (oy, ox) = window, offset
    nh, nw = (height - oy) // h, (width - ox) // w
    out = x.clone()
    if nh < 1 or nw < 1 or h * w == 1:
        return out
    perm = r.rand(n, nh, nw, h * w).argsort(dim=-1)
    for i, a, b in itertools.product(range(n), range(nh), range(nw)):
        pos = [(oy + a * h + q // w, ox + b * w + q % w) for q in range(h * w)]
        for q in range(h * w):
            src = pos[int(perm[i, a, b, q])]
            out[i, :, pos[q][0], pos[q][1]] = x[i, :, src[0], src[1]]
    return out


@pytest.mark.parametrize(("window", "offset"), [((2, 3), (1, 2)), ((3, 2), (0, 1)),
                                                ((1, 4), (0, 3)), ((4, 4), (3, 0)),
                                                ((1, 1), (0, 0)), ((9, 2), (0, 0))])
def test_shuffle_windows_equals_the_reference(window, offset):
    x = _images(2, 3, 8, 11)
    out = C.shuffle_windows(x, window, offset, generator=_gen(5))
    assert torch.equal(out, _ref_shuffle_windows(x, window, offset, Replay(5)))
    if window[0] * window[1] > 1 and window[0] <= 8:
        assert not torch.equal(out, x)


@pytest.mark.parametrize(("window", "offset"), [((0, 2), (0, 0)), ((2, 0), (0, 0)),
                                                ((2, 2), (2, 0)), ((2, 2), (0, 2)),
                                                ((2, 2), (-1, 0)), ((2, 2), (0, -1)),
                                                ((1, 3), (1, 0)), ((3, 1), (0, 1))])
def test_shuffle_windows_refuses_bad_windows(window, offset):
    with pytest.raises(ValueError, match=r"^bad window"):
        C.shuffle_windows(_images(1, 1, 8, 8), window, offset)


def _ref_local_shuffle(x, seed, p, max_window):
    r = Replay(seed)
    height, width = x.shape[-2:]
    m = max(2, min(height, width) // 10) if max_window is None else max_window
    out = x.clone()
    draws = r.rand(x.shape[0])
    for i in [i for i in range(x.shape[0]) if draws[i] < p]:
        h, w = r.randint(1, min(m, height)), r.randint(1, min(m, width))
        oy, ox = r.randint(0, h - 1), r.randint(0, w - 1)
        out[i : i + 1] = _ref_shuffle_windows(x[i : i + 1], (h, w), (oy, ox), r)
    return out


@pytest.mark.parametrize(("shape", "p", "max_window"), [
    ((5, 2, 9, 13), 1.0, 5), ((4, 1, 30, 44), 1.0, None), ((6, 1, 12, 6), 0.5, 8),
    ((3, 1, 4, 50), 1.0, 6), ((4, 1, 28, 28), 1.0, None)])
def test_local_pixel_shuffle_equals_the_reference(shape, p, max_window):
    x = _images(*shape)
    for seed in (0, 1, 2):
        out = C.local_pixel_shuffle(x, p=p, max_window=max_window, generator=_gen(seed))
        assert torch.equal(out, _ref_local_shuffle(x, seed, p, max_window))


def test_local_pixel_shuffle_refuses_a_window_below_one():
    with pytest.raises(ValueError, match=r"^max_window must be >= 1, got 0$"):
        C.local_pixel_shuffle(_images(1, 1, 8, 8), max_window=0)
    x = _images(3, 1, 8, 8)  # windows of one pixel: nothing moves
    assert torch.equal(C.local_pixel_shuffle(x, max_window=1, generator=_gen(0)), x)


def test_local_pixel_shuffle_default_window_is_a_tenth_of_the_shorter_side_at_least_2():
    # 28 px: max(2, 2) = 2, so windows of 1 or 2 rows: every moved pixel stays within 1 row
    x = torch.arange(8 * 28 * 28, dtype=torch.float64).view(8, 1, 28, 28)
    out = C.local_pixel_shuffle(x, generator=_gen(0))
    rows = torch.div(out - 28 * 28 * torch.arange(8).view(8, 1, 1, 1), 28, rounding_mode="floor")
    moved = (rows - torch.arange(28).view(1, 1, 28, 1)).abs()
    assert moved.max() == 1 and not torch.equal(out, x)


def _ref_inpaint(x, seed, max_boxes, box_prob):
    r = Replay(seed)
    n, c, height, width = x.shape
    out, mask = x.clone(), torch.zeros(n, 1, height, width, dtype=torch.bool)
    for i in range(n):
        for _ in range(max_boxes):
            if r.uniform() >= box_prob:
                break
            y0, bh = r.box(r.randint(height // 6, height // 3), height, 3)
            x0, bw = r.box(r.randint(width // 6, width // 3), width, 3)
            out[i, :, y0 : y0 + bh, x0 : x0 + bw] = r.rand(c, bh, bw)
            mask[i, :, y0 : y0 + bh, x0 : x0 + bw] = True
    return out, mask


def _ref_outpaint(x, seed, max_boxes, box_prob):
    r = Replay(seed)
    n, c, height, width = x.shape
    noise, mask = r.rand(n, c, height, width), torch.zeros(n, 1, height, width, dtype=torch.bool)
    for i in range(n):
        for j in range(max_boxes):
            if j > 0 and r.uniform() >= box_prob:
                break
            bh = height - r.randint(3 * height // 7, 4 * height // 7)
            bw = width - r.randint(3 * width // 7, 4 * width // 7)
            y0, bh = r.box(bh, height, 3)
            x0, bw = r.box(bw, width, 3)
            mask[i, :, y0 : y0 + bh, x0 : x0 + bw] = True
    return torch.where(mask, x, noise), mask


@pytest.mark.parametrize(("shape", "max_boxes", "box_prob"), [
    ((3, 2, 30, 22), 5, 0.95), ((4, 1, 8, 13), 3, 0.7), ((2, 1, 5, 4), 5, 0.95),
    ((3, 1, 28, 28), 2, 1.0)])
@pytest.mark.parametrize("which", ["in", "out"])
def test_genesis_painting_equals_the_reference(shape, max_boxes, box_prob, which):
    fn, ref = ((C.genesis_inpaint, _ref_inpaint) if which == "in"
               else (C.genesis_outpaint, _ref_outpaint))
    x = _images(*shape)
    for seed in (0, 1, 2, 3):
        out, mask = fn(x, max_boxes=max_boxes, box_prob=box_prob, generator=_gen(seed))
        want, want_mask = ref(x, seed, max_boxes, box_prob)
        assert torch.equal(mask, want_mask) and torch.equal(out, want)


def test_genesis_box_sizes_follow_the_documented_ranges():
    x = torch.zeros(40, 1, 42, 35)
    _, mask = C.genesis_outpaint(x, max_boxes=1, generator=_gen(0))  # one box each
    rows, cols = mask[:, 0].any(2).sum(1), mask[:, 0].any(1).sum(1)
    # side - randint(3 side // 7, 4 side // 7): 42 - [18, 24], 35 - [15, 20]
    assert rows.min() >= 18 and rows.max() <= 24 and cols.min() >= 15 and cols.max() <= 20
    assert len(set(rows.tolist())) > 3 and len(set(cols.tolist())) > 3
    _, mask = C.genesis_inpaint(x, max_boxes=1, box_prob=1.0, generator=_gen(0))
    rows, cols = mask[:, 0].any(2).sum(1), mask[:, 0].any(1).sum(1)
    assert rows.min() >= 7 and rows.max() <= 14 and cols.min() >= 5 and cols.max() <= 11
    # 3 pixels to the borders
    assert not mask[:, :, :3].any() and not mask[:, :, -3:].any() and not mask[..., :3].any()


# --- Context encoders, context restoration, denoising -------------------------------------------

def _ref_holes(x, seed, fraction, size, fill):
    r = Replay(seed)
    n, c, height, width = x.shape
    mask = torch.zeros(n, 1, height, width, dtype=torch.bool)
    for i in range(n):
        for _ in range(1000):
            if mask[i].float().mean().item() >= fraction:
                break
            bh = r.randint(max(1, round(size[0] * height)), max(1, round(size[1] * height)))
            bw = r.randint(max(1, round(size[0] * width)), max(1, round(size[1] * width)))
            y0, bh = r.box(bh, height, 0)
            x0, bw = r.box(bw, width, 0)
            mask[i, :, y0 : y0 + bh, x0 : x0 + bw] = True
    if fill is None:
        values = r.rand(n, c, height, width)
    else:
        values = torch.as_tensor(fill, dtype=x.dtype).reshape(-1, 1, 1).expand(c, height, width)
    return torch.where(mask, values, x), mask


@pytest.mark.parametrize(("fraction", "size", "fill"), [
    (0.25, (0.125, 0.25), None), (0.5, (0.1, 0.4), 0.5), (0.3, (0.2, 0.2), [0.1, 0.9]),
    (0.9, (0.05, 0.5), None)])
def test_random_holes_equal_the_reference(fraction, size, fill):
    x = _images(3, 2, 16, 24)
    for seed in (0, 1):
        out, mask = C.random_holes(x, fraction=fraction, size=size,
                                   fill=None if fill is None else torch.tensor(fill)
                                   if isinstance(fill, list) else fill, generator=_gen(seed))
        want, want_mask = _ref_holes(x, seed, fraction, size, fill)
        assert torch.equal(mask, want_mask) and torch.equal(out, want)
        assert (mask.float().mean(dim=(1, 2, 3)) >= fraction).all()


def _ref_swaps(x, seed, num_swaps, patch):
    r = Replay(seed)
    n, _, height, width = x.shape
    ph, pw = patch
    out, mask = x.clone(), torch.zeros(n, 1, height, width, dtype=torch.bool)
    for i in range(n):
        for _ in range(num_swaps):
            a = (r.randint(0, height - ph), r.randint(0, width - pw))
            while not any((a[0] >= ph, a[0] + 2 * ph <= height, a[1] >= pw,
                           a[1] + 2 * pw <= width)):  # no room beside a: draw it again
                a = (r.randint(0, height - ph), r.randint(0, width - pw))
            b = a
            while abs(a[0] - b[0]) < ph and abs(a[1] - b[1]) < pw:
                b = (r.randint(0, height - ph), r.randint(0, width - pw))
            sa = (i, slice(None), slice(a[0], a[0] + ph), slice(a[1], a[1] + pw))
            sb = (i, slice(None), slice(b[0], b[0] + ph), slice(b[1], b[1] + pw))
            out[sa], out[sb] = out[sb].clone(), out[sa].clone()
            mask[i, :, sa[2], sa[3]] = mask[i, :, sb[2], sb[3]] = True
    return out, mask


@pytest.mark.parametrize(("shape", "num_swaps", "patch"), [
    ((3, 2, 12, 9), 6, (3, 2)), ((2, 1, 4, 10), 3, (3, 4)), ((2, 1, 10, 4), 3, (4, 3)),
    ((1, 1, 6, 6), 1, (3, 3)), ((2, 1, 6, 9), 2, (3, 5)), ((2, 1, 9, 6), 2, (5, 3)),
    ((2, 2, 4, 5), 4, (1, 2)), ((2, 1, 5, 4), 4, (2, 1))])
def test_swap_patches_equal_the_reference(shape, num_swaps, patch):
    x = _images(*shape)
    for seed in (0, 1, 2):
        out, mask = C.swap_patches(x, num_swaps=num_swaps, patch=patch, generator=_gen(seed))
        want, want_mask = _ref_swaps(x, seed, num_swaps, patch)
        assert torch.equal(mask, want_mask) and torch.equal(out, want)


@pytest.mark.parametrize(("patch", "size"), [((0, 2), (8, 8)), ((2, 0), (8, 8)),
                                             ((5, 5), (9, 9)), ((3, 5), (5, 9))])
def test_swap_patches_refuses_patches_that_do_not_fit(patch, size):
    with pytest.raises(ValueError, match=r"^two .* patches do not fit side by side"):
        C.swap_patches(torch.zeros(1, 1, *size), patch=patch)


def test_a_patch_with_no_room_beside_it_is_drawn_again():
    # 5x9 holds two 3x4 patches side by side (9 >= 8) but not one above the other (5 < 6); a
    # patch at column 2 or 3 leaves no room for the other one: the rejection loop used to spin
    # forever on it. Seed 3 draws column 2 first.
    g = _gen(3)
    assert (C._randint(0, 2, g), C._randint(0, 5, g)) == (1, 2)
    for seed in range(20):
        a, b = C._patch_pair(5, 9, 3, 4, _gen(seed))
        assert abs(a[1] - b[1]) >= 4 and {a[1], b[1]} <= {0, 1, 4, 5}
    x = _images(1, 1, 5, 9)
    out, mask = C.swap_patches(x, num_swaps=1, patch=(3, 4), generator=_gen(3))
    assert mask.sum() == 24 and torch.equal(out.flatten().sort().values, x.flatten().sort().values)


def test_noises_equal_their_definitions():
    x = _images(2, 3, 6, 5)
    g = _gen(8)
    noise = torch.randn(tuple(x.shape), generator=_gen(8))
    assert torch.equal(C.gaussian_noise(x, 0.2, generator=g), (x + 0.2 * noise).clamp(0, 1))
    keep = torch.rand((2, 1, 6, 5), generator=_gen(8)) >= 0.3
    assert torch.equal(C.masking_noise(x, 0.3, generator=_gen(8)), x * keep)
    with pytest.raises(ValueError, match=r"expected images of shape \(N, C, H, W\), got \(6, 5\)"):
        C.masking_noise(x[0, 0], 0.3)


def test_interp_is_numpy_interp_with_ties_taking_the_right_hand_value():
    xs = torch.tensor([[0.0, 0.5, 0.5, 1.0, 1.0]], dtype=torch.float64)
    ys = torch.tensor([[0.0, 0.2, 0.6, 0.7, 0.9]], dtype=torch.float64)
    v = torch.tensor([[-0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5]], dtype=torch.float64)
    # below the first knot and above the last one the end values hold; at a repeated knot (a
    # jump) the value right of it: 0.6 at 0.5, 0.9 at 1.0
    assert C._interp(v, xs, ys)[0].tolist() == pytest.approx(
        [0.0, 0.0, 0.1, 0.6, 0.65, 0.9, 0.9], abs=1e-12)
    plain = torch.tensor([[0.0, 0.3, 1.0]], dtype=torch.float64)
    yp = torch.tensor([[0.1, 0.4, 0.8]], dtype=torch.float64)
    grid = torch.linspace(-0.2, 1.2, 15, dtype=torch.float64).unsqueeze(0)
    assert C._interp(grid, plain, yp)[0].numpy() == pytest.approx(
        np.interp(grid[0].numpy(), plain[0].numpy(), yp[0].numpy()), abs=1e-12)


@pytest.mark.parametrize("fn", [
    C.bezier_intensity, C.local_pixel_shuffle, C.genesis_inpaint, C.genesis_outpaint,
    C.random_holes, C.swap_patches, lambda x: C.shuffle_windows(x, (2, 2)),
    lambda x: C.gaussian_noise(x, 0.1), lambda x: C.masking_noise(x, 0.1)])
def test_every_corruption_refuses_images_without_a_channel_axis(fn):
    with pytest.raises(ValueError, match=r"^expected images of shape \(N, C, H, W\), got "
                                         r"\(2, 8, 8\)$"):
        fn(torch.rand(2, 8, 8))


def test_random_holes_stop_after_1000_holes():
    # one-pixel holes (0.001 of 40 px rounds to 0, at least 1): 1000 of them cover at most 1000
    # of the 1600 pixels, so the 90 % is never reached and the loop ends at its cap
    x = _images(1, 1, 40, 40)
    out, mask = C.random_holes(x, fraction=0.9, size=(0.001, 0.001), generator=_gen(0))
    want, want_mask = _ref_holes(x, 0, 0.9, (0.001, 0.001), None)
    assert torch.equal(mask, want_mask) and torch.equal(out, want)
    assert 500 < mask.sum() <= 1000
