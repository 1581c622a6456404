"""Corruption details found by mutation testing (tools/mutation.py)."""

from __future__ import annotations

import pytest
import torch

from ssl_ft.methods.corruptions import local_pixel_shuffle, random_holes


def test_bad_shapes_and_fractions_are_refused():
    with pytest.raises(ValueError, match=r"expected images of shape \(N, C, H, W\)"):
        local_pixel_shuffle(torch.rand(2, 8, 8), p=0.0)  # checked even when nothing is drawn
    for bad in (0, 0.0, 1, 1.5):
        with pytest.raises(ValueError, match="fraction must be in"):
            random_holes(torch.rand(1, 1, 8, 8), fraction=bad)


def test_local_shuffle_at_rate_one_shuffles_every_sample():
    x = torch.arange(6 * 20 * 20, dtype=torch.float32).view(6, 1, 20, 20) / 2400
    out = local_pixel_shuffle(x, p=1.0, max_window=4, generator=torch.Generator().manual_seed(0))
    changed = [not torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    # a 1x1 window leaves a sample as it is: with windows up to 4 x 4 that is 1 in 16 draws
    assert sum(changed) >= 5
    for o, i in zip(out, x, strict=True):  # each sample keeps its own values
        assert torch.equal(o.flatten().sort().values, i.flatten().sort().values)
