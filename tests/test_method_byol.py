"""BYOL: the loss against a reference, the target network and its momentum, resume, config."""

from __future__ import annotations

import io

import pytest
import torch
from lightly.utils.scheduler import cosine_schedule

from ssl_ft.methods.base import METHODS
from ssl_ft.methods.byol import BYOL, BYOLConfig
from ssl_ft.models import create_backbone
from tests.conftest import TwoViews


def make(aug=None, **cfg: object) -> BYOL:
    cfg = {"hidden_dim": 64, "out_dim": 32, "predictor_hidden_dim": 64, **cfg}
    return BYOL(create_backbone("resnet18", in_chans=1), BYOLConfig(**cfg),
                augment=aug or TwoViews(), mean=[0.5], std=[0.25], image_size=28)


def online_params(method: BYOL) -> list[torch.Tensor]:
    return [p.detach().clone() for p in (*method.backbone.parameters(),
                                         *method.projection_head.parameters())]


def target_params(method: BYOL) -> list[torch.Tensor]:
    return [p.detach().clone() for p in (*method.backbone_momentum.parameters(),
                                         *method.projection_head_momentum.parameters())]


def test_registered_with_paper_defaults() -> None:
    assert METHODS["byol"] is BYOL and BYOL.family == "contrastive"
    cfg = BYOLConfig()
    assert (cfg.hidden_dim, cfg.out_dim, cfg.predictor_hidden_dim) == (4096, 256, 4096)
    assert (cfg.momentum, cfg.momentum_schedule) == (0.99, True)


def test_loss_is_symmetrised_normalised_squared_distance() -> None:
    """BYOL Eq. 2: ``|q/|q| - z'/|z'||^2`` per sample, averaged, summed over both directions."""
    torch.manual_seed(0)
    method = make()
    x = torch.rand(6, 1, 28, 28)
    out = method(x)
    assert set(out) == {"loss", "embedding_std"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.values())
    with torch.no_grad():
        (_, q0), (_, q1) = method.online(x.flip(-1)), method.online(x)
        t0, t1 = method.target(x.flip(-1)), method.target(x)

    def dist(q: torch.Tensor, z: torch.Tensor) -> float:
        q, z = q.double(), z.double()
        return sum(((q[i] / q[i].norm() - z[i] / z[i].norm()) ** 2).sum().item()
                   for i in range(len(q))) / len(q)

    assert out["loss"].item() == pytest.approx(dist(q0, t1) + dist(q1, t0), rel=1e-5)
    assert 0 <= out["loss"].item() <= 8
    out["loss"].backward()
    assert method.backbone.conv1.weight.grad.abs().sum() > 0
    assert method.prediction_head.layers[0].weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in (
        *method.backbone_momentum.parameters(), *method.projection_head_momentum.parameters()))


def test_target_moves_only_by_momentum_update() -> None:
    torch.manual_seed(0)
    method = make(momentum=0.9, momentum_schedule=False)
    assert all(torch.equal(t, o) for t, o in zip(target_params(method), online_params(method),
                                                 strict=True))
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    for step in range(2):
        t0 = target_params(method)
        loss = method(torch.rand(8, 1, 28, 28))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert all(torch.equal(a, b) for a, b in zip(t0, target_params(method), strict=True))
        o1 = online_params(method)
        method.after_step(step, 10)
        for before, online, after in zip(t0, o1, target_params(method), strict=True):
            torch.testing.assert_close(after, 0.9 * before + 0.1 * online, rtol=1e-6, atol=1e-7)


def test_momentum_schedule_is_lightly_cosine_to_one() -> None:
    method = make()
    values = [method.momentum_at(s, 50) for s in range(50)]
    assert values[0] == pytest.approx(0.99) and values[-1] == 1.0
    assert values[20] == cosine_schedule(20, 50, 0.99, 1.0)
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))
    assert make(momentum_schedule=False).momentum_at(49, 50) == 0.99


def test_resume_restores_target_network(pneumonia: torch.Tensor) -> None:
    """Save after 3 steps, load into a differently initialised model: the 4th step's loss and
    every weight of the target network then equal those of the uninterrupted run."""
    def step(method: BYOL, opt: torch.optim.Optimizer, i: int) -> float:
        torch.manual_seed(100 + i)
        loss = method(pneumonia[16 * i: 16 * i + 16])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.after_step(i, 10)
        return loss.item()

    def fresh(seed: int) -> tuple[BYOL, torch.optim.Optimizer]:
        torch.manual_seed(seed)
        method = make(aug=lambda x: (x + 0.05 * torch.randn_like(x)).clamp(0, 1))
        return method, torch.optim.SGD(
            [p for p in method.parameters() if p.requires_grad], lr=0.05, momentum=0.9)

    run, opt = fresh(0)
    for i in range(3):
        step(run, opt, i)
    buffer = io.BytesIO()
    torch.save({"model": run.state_dict(), "optimizer": opt.state_dict()}, buffer)
    expected = step(run, opt, 3)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    resumed, ropt = fresh(42)
    assert not torch.equal(resumed.backbone_momentum.conv1.weight, run.backbone_momentum.conv1.weight)
    resumed.load_state_dict(ckpt["model"])
    ropt.load_state_dict(ckpt["optimizer"])
    assert step(resumed, ropt, 3) == expected
    for a, b in zip(target_params(resumed), target_params(run), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("field", "value"),
    [("hidden_dim", 0), ("out_dim", -3), ("predictor_hidden_dim", 1.5), ("momentum", 1.01),
     ("momentum", -0.1), ("momentum_schedule", "no")],
)
def test_config_errors_name_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field) as info:
        BYOLConfig(**{field: value})
    assert repr(value) in str(info.value)
