"""Barlow Twins: the loss against a slow reference, its optimum, config checks."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_ft.methods.barlow_twins import BarlowTwins, BarlowTwinsConfig
from ssl_ft.methods.base import METHODS
from ssl_ft.models import create_backbone
from tests.conftest import TwoViews


def barlow_reference(a: torch.Tensor, b: torch.Tensor, lam: float) -> float:
    """Barlow Twins with Python loops, as the official code computes it: each dimension
    standardised over the batch (``BatchNorm1d(affine=False)``: biased variance, eps 1e-5),
    ``C_ij = sum_n a_ni b_nj / N``, ``sum_i (1 - C_ii)^2 + lam * sum_{i != j} C_ij^2``."""
    a, b = a.double().tolist(), b.double().tolist()
    n, d = len(a), len(a[0])

    def standardise(z: list[list[float]]) -> list[list[float]]:
        mean = [sum(z[i][j] for i in range(n)) / n for j in range(d)]
        var = [sum((z[i][j] - mean[j]) ** 2 for i in range(n)) / n for j in range(d)]
        return [[(z[i][j] - mean[j]) / math.sqrt(var[j] + 1e-5) for j in range(d)]
                for i in range(n)]

    sa, sb = standardise(a), standardise(b)
    c = [[sum(sa[k][i] * sb[k][j] for k in range(n)) / n for j in range(d)] for i in range(d)]
    on = sum((1 - c[i][i]) ** 2 for i in range(d))
    off = sum(c[i][j] ** 2 for i in range(d) for j in range(d) if i != j)
    return on + lam * off


def make(**cfg: object) -> BarlowTwins:
    cfg = {"hidden_dim": 64, "out_dim": 32, **cfg}
    return BarlowTwins(create_backbone("resnet18", in_chans=1), BarlowTwinsConfig(**cfg),
                       augment=TwoViews(), mean=[0.5], std=[0.25], image_size=28)


def test_registered_with_paper_lambda() -> None:
    assert METHODS["barlow_twins"] is BarlowTwins and BarlowTwins.family == "contrastive"
    assert BarlowTwinsConfig().redundancy_weight == 5e-3


@pytest.mark.parametrize("lam", [5e-3, 0.5])
def test_lightly_loss_matches_slow_reference(lam: float) -> None:
    torch.manual_seed(0)
    a = torch.randn(9, 6, dtype=torch.float64)
    b = a + 0.5 * torch.randn(9, 6, dtype=torch.float64)
    got = make(redundancy_weight=lam).criterion(a, b).item()
    assert got == pytest.approx(barlow_reference(a, b, lam), rel=1e-10)


def test_identical_decorrelated_views_are_the_optimum() -> None:
    """Orthogonal standardised columns and b == a: C is the identity, the loss is 0 (up to the
    eps of the standardisation); shuffling b's rows (unrelated views) costs the whole diagonal."""
    torch.manual_seed(0)
    centred = torch.randn(64, 8, dtype=torch.float64)
    a, _ = torch.linalg.qr(centred - centred.mean(0))  # orthonormal, zero-mean columns
    crit = make().criterion
    assert crit(a, a).item() < 1e-3
    assert crit(a, a[torch.randperm(64)]).item() > 4


def test_forward_matches_reference_on_the_two_views() -> None:
    torch.manual_seed(0)
    method = make()
    x = torch.rand(6, 1, 28, 28)
    out = method(x)
    assert set(out) == {"loss", "embedding_std"}
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    with torch.no_grad():
        za, zb = method.embed(x.flip(-1)), method.embed(x)
    assert out["loss"].item() == pytest.approx(barlow_reference(za, zb, 5e-3), rel=1e-4)
    out["loss"].backward()
    assert method.backbone.conv1.weight.grad.abs().sum() > 0


def test_batch_of_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        make()(torch.rand(1, 1, 28, 28))


@pytest.mark.parametrize(
    ("field", "value"),
    [("hidden_dim", 0), ("out_dim", True), ("redundancy_weight", -0.1),
     ("redundancy_weight", float("inf"))],
)
def test_config_errors_name_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field) as info:
        BarlowTwinsConfig(**{field: value})
    assert repr(value) in str(info.value)
