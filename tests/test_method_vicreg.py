"""VICReg: the loss against a slow reference, the logged terms, config checks."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_ft.methods.base import METHODS
from ssl_ft.methods.vicreg import VICReg, VICRegConfig
from ssl_ft.models import create_backbone
from tests.conftest import TwoViews


def vicreg_reference(a: torch.Tensor, b: torch.Tensor, lam: float, mu: float, nu: float,
                     eps: float) -> float:
    """VICReg with Python loops over samples and dimensions, as the official code computes it:
    ``lam * MSE + mu * (v(a) + v(b)) / 2 + nu * (c(a) + c(b))`` with the unbiased variance,
    ``v = mean_j relu(1 - sqrt(var_j + eps))``, ``c = sum_{j != k} cov_jk^2 / dim``."""
    a, b = a.double().tolist(), b.double().tolist()
    n, d = len(a), len(a[0])
    inv = sum((a[i][j] - b[i][j]) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def terms(z: list[list[float]]) -> tuple[float, float]:
        mean = [sum(z[i][j] for i in range(n)) / n for j in range(d)]
        cov = [[sum((z[i][j] - mean[j]) * (z[i][k] - mean[k]) for i in range(n)) / (n - 1)
                for k in range(d)] for j in range(d)]
        var = sum(max(0.0, 1 - math.sqrt(cov[j][j] + eps)) for j in range(d)) / d
        off = sum(cov[j][k] ** 2 for j in range(d) for k in range(d) if j != k) / d
        return var, off

    (va, ca), (vb, cb) = terms(a), terms(b)
    return lam * inv + mu * (va + vb) / 2 + nu * (ca + cb)


def make(aug=None, **cfg: object) -> VICReg:
    cfg = {"hidden_dim": 64, "out_dim": 32, **cfg}
    return VICReg(create_backbone("resnet18", in_chans=1), VICRegConfig(**cfg),
                  augment=aug or TwoViews(), mean=[0.5], std=[0.25], image_size=28)


def test_registered_with_paper_defaults() -> None:
    assert METHODS["vicreg"] is VICReg and VICReg.family == "contrastive"
    cfg = VICRegConfig()
    assert (cfg.invariance_weight, cfg.variance_weight, cfg.covariance_weight, cfg.eps) == \
        (25.0, 25.0, 1.0, 1e-4)


@pytest.mark.parametrize(("lam", "mu", "nu"), [(25.0, 25.0, 1.0), (1.0, 0.0, 3.0)])
def test_lightly_loss_matches_slow_reference(lam: float, mu: float, nu: float) -> None:
    torch.manual_seed(0)
    a, b = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    b[:, 0] = a[:, 0] * 0.1  # one low-variance dimension, so the hinge is active
    method = make(invariance_weight=lam, variance_weight=mu, covariance_weight=nu)
    got = method.criterion(a, b).item()
    assert got == pytest.approx(vicreg_reference(a, b, lam, mu, nu, 1e-4), rel=1e-10)


def test_forward_loss_and_logged_terms_match_reference() -> None:
    torch.manual_seed(0)
    method = make()
    x = torch.rand(6, 1, 28, 28)
    out = method(x)
    assert set(out) == {"loss", "invariance", "variance", "embedding_std"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.values())
    with torch.no_grad():  # the same two views; BatchNorm in training mode sees the same batches
        za, zb = method.embed(x.flip(-1)), method.embed(x)
    assert out["loss"].item() == pytest.approx(vicreg_reference(za, zb, 25, 25, 1, 1e-4),
                                               rel=1e-4)
    assert out["invariance"].item() == pytest.approx(((za - zb) ** 2).mean().item(), rel=1e-5)
    assert 0 < out["variance"].item() < 1
    out["loss"].backward()
    assert method.backbone.conv1.weight.grad.abs().sum() > 0


def test_collapsed_embedding_has_full_variance_penalty() -> None:
    method = make()
    z = torch.ones(8, 32)  # every image at the same point: std 0 in each dimension
    loss = method.criterion(z, z).item()
    assert loss == pytest.approx(25 * (1 - math.sqrt(1e-4)))  # only the variance hinge


def test_batch_of_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        make()(torch.rand(1, 1, 28, 28))


@pytest.mark.parametrize(
    ("field", "value"),
    [("hidden_dim", 0), ("out_dim", 2.5), ("num_layers", 1), ("invariance_weight", -1.0),
     ("variance_weight", float("nan")), ("covariance_weight", "1"), ("eps", 0.0),
     ("invariance_weight", 0.0)],
)
def test_config_errors_name_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field) as info:
        VICRegConfig(**{field: value})
    assert repr(value) in str(info.value)
