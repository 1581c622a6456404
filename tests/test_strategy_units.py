"""Strategy details the definitions pin down: Auto-RGN with stale gradients, the learning-rate
scales and schedules of the other strategies on worked examples."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_ft.config import from_dict
from ssl_ft.errors import UserError
from ssl_ft.finetune import FinetuneModel, get_strategy
from ssl_ft.finetune.steps import set_trainable
from ssl_ft.models import create_backbone


def _model(seed: int = 0) -> FinetuneModel:
    torch.manual_seed(seed)
    return FinetuneModel(create_backbone("resnet18", in_chans=1), 2, (0.5,), (0.25,))


def _strategy(name: str, selected=range(9), epochs: int = 6, model=None, **args):
    cls = get_strategy(name)
    return cls(model or _model(), list(selected), epochs, from_dict(cls.Config, args))


def _rgn_reference(model, params, batches):
    model.zero_grad(set_to_none=True)
    for xb, yb in batches:
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
    rgn = {k: float(p.grad.norm() / p.detach().norm()) for k, p in params.items()
           if float(p.detach().norm()) > 0}
    model.zero_grad(set_to_none=True)
    return rgn


def test_auto_rgn_ignores_stale_gradients_and_measures_every_epoch(pneumonia):
    model = _model(1)
    s = _strategy("auto-rgn", selected=[6, 7, 8], model=model, measure_batches=2)
    set_trainable(model, [6, 7, 8])
    opt = torch.optim.SGD(s.param_groups(0.0), lr=1.0)
    x, y = pneumonia[:64], torch.arange(64) % 2
    model.eval()  # deterministic BN: the reference pass sees the same function
    params = dict(s.named_backbone_params())
    for epoch, start in enumerate((0, 32)):
        batches = [(x[start:start + 16], y[start:start + 16]),
                   (x[start + 16:start + 32], y[start + 16:start + 32])]
        want = _rgn_reference(model, params, batches)
        # stale gradients of a last training step, large and one-sided: a measurement that
        # adds to them instead of starting from zero gets other rates
        for p in model.parameters():
            p.grad = torch.full_like(p, 3.0) if p.requires_grad else None
        feed = iter(batches)

        def measure(feed=feed):
            xb, yb = next(feed)
            torch.nn.functional.cross_entropy(model(xb), yb).backward()

        logs = s.on_epoch_start(epoch, opt, measure)
        assert all(p.grad is None for p in model.parameters())
        assert set(s.rgn) == set(want)
        top = max(want.values())
        scales = {g["name"]: g["lr_scale"] for g in opt.param_groups}
        for key, value in want.items():
            assert math.isclose(s.rgn[key], value, rel_tol=1e-4), key
            assert math.isclose(scales[key], value / top, rel_tol=1e-4), key
        assert scales["head"] == 1.0
        assert logs["rgn_max"] == pytest.approx(top, rel=1e-4)
        mean = sum(v / top for v in want.values()) / len(want)
        assert logs["rgn_scale_mean"] == pytest.approx(mean, rel=1e-4)
        with torch.no_grad():  # the next epoch measures other weights
            for p in params.values():
                p.mul_(1.5)


def test_auto_rgn_without_any_gradient_freezes_the_backbone_groups():
    model = _model(2)
    s = _strategy("auto-rgn", selected=[8], model=model)
    opt = torch.optim.SGD(s.param_groups(0.0), lr=1.0)
    logs = s.on_epoch_start(0, opt, lambda: None)  # a measurement that computes nothing
    assert logs == {} and s.rgn == {}
    assert all(g["lr_scale"] == 1.0 for g in opt.param_groups)  # no RGN: every tensor at lr
    with pytest.raises(UserError, match="measure_batches must be >= 1, got 0"):
        _strategy("auto-rgn", measure_batches=0)
    assert _strategy("auto-rgn", measure_batches=1).config.measure_batches == 1


def test_discriminative_decay_counts_from_the_last_kept_unit():
    s = _strategy("discriminative", selected=[0, 4, 8], decay=0.5)
    scales = {g["name"]: g["lr_scale"] for g in s.param_groups(0.0)}
    assert scales == {"unit0": 0.5 ** 9, "unit4": 0.5 ** 5, "unit8": 0.5, "head": 1.0}
    one = _strategy("discriminative", selected=[3], decay=1.0)
    assert {g["name"]: g["lr_scale"] for g in one.param_groups(0.0)} == {"unit3": 1.0,
                                                                          "head": 1.0}
    for bad in (0.0, -0.5, 1.01):
        with pytest.raises(UserError, match="decay"):
            _strategy("discriminative", decay=bad)


def test_gradual_schedules_on_worked_examples():
    # 4 units over 10 epochs: 5 unfreezing steps by mid-run -> ceil(4 / 5) = 1 a step
    lf = _strategy("gradual-lf", selected=[2, 3, 4, 5], epochs=10)
    assert lf.per_step == 1
    assert [len(lf.trained_units(e)) for e in range(10)] == [0, 1, 2, 3, 4, 4, 4, 4, 4, 4]
    assert lf.trained_units(2) == [4, 5]
    fl = _strategy("gradual-fl", selected=[2, 3, 4, 5], epochs=10)
    assert fl.trained_units(2) == [2, 3]
    # 7 units over 4 epochs: 2 steps -> ceil(7 / 2) = 4 a step
    big = _strategy("gradual-lf", selected=range(7), epochs=4)
    assert [len(big.trained_units(e)) for e in range(4)] == [0, 4, 7, 7]
    # every 3 epochs, 2 units a step
    slow = _strategy("gradual-fl", selected=range(5), epochs=12, every=3, units_per_step=2)
    assert [len(slow.trained_units(e)) for e in range(12)] == [0] * 3 + [2] * 3 + [4] * 3 + [5] * 3
    # one epoch: a single step, all units by then (and none in epoch 0)
    assert _strategy("gradual-lf", selected=[1, 2], epochs=1).per_step == 2
    with pytest.raises(UserError, match="units_per_step"):
        _strategy("gradual-lf", units_per_step=-1)


def test_lp_ft_defaults_and_phase_names():
    s = _strategy("lp-ft", selected=[8], epochs=7)
    assert s.phases() == [(0, 7)] and s.train_epochs() == 7
    assert [s.phase_name(e) for e in range(7)] == ["ft"] * 7
    assert s.config.c_grid == [0.001, 0.01, 0.1, 1.0, 10.0]
    assert _strategy("lp-ft", epochs=1).train_epochs() == 1  # one epoch is a valid budget


def test_base_strategy_groups_and_names():
    s = _strategy("ft", selected=[], epochs=3)
    assert [g["name"] for g in s.param_groups(0.1)] == ["head"]  # no empty backbone group
    assert s.phases() == [(0, 3)] and s.phase_name(1) == "ft"
    assert s.state_dict() == {} and s.penalty() is None
    assert s.on_epoch_start(0, None, lambda: None) == {}
    lp = _strategy("lp", selected=[], epochs=3)
    assert lp.allow_empty_selection and not _strategy("ft").allow_empty_selection
    wd = {g["name"]: g["weight_decay"] for g in _strategy("ft", selected=[4]).param_groups(0.1)}
    assert wd == {"backbone": 0.1, "head": 0.1}
    sp = {g["name"]: g["weight_decay"] for g in _strategy("l2-sp", selected=[4]).param_groups(0.1)}
    assert sp == {"backbone": 0.0, "head": 0.0}


def test_register_refuses_empty_or_taken_names():
    from ssl_ft.finetune.strategies.base import Strategy, register

    class Nameless(Strategy):
        pass

    class Taken(Strategy):
        name = "ft"

    for cls in (Nameless, Taken):
        with pytest.raises(ValueError, match="empty or taken"):
            register(cls)


def test_auto_rgn_small_weights_stale_scales_and_zero_gradients(pneumonia):
    model = _model(3)
    s = _strategy("auto-rgn", selected=[8], model=model, measure_batches=1)
    set_trainable(model, [8])
    with torch.no_grad():  # a tensor of norm below 1 still has an RGN
        model.backbone.layer4[1].bn2.weight.mul_(0.01)
    opt = torch.optim.SGD(s.param_groups(0.0), lr=1.0)
    for g in opt.param_groups:
        g["lr_scale"] = 0.3  # left over from an earlier epoch
    x, y = pneumonia[:16], torch.arange(16) % 2
    model.eval()

    def measure():
        torch.nn.functional.cross_entropy(model(x), y).backward()

    s.on_epoch_start(0, opt, measure)
    small = "layer4.1.bn2.weight"
    assert 0 < float(model.backbone.layer4[1].bn2.weight.detach().norm()) < 1 and small in s.rgn
    scales = {g["name"]: g["lr_scale"] for g in opt.param_groups}
    zero = [k for k, p in s.named_backbone_params() if float(p.detach().norm()) == 0]
    assert zero and all(scales[k] == 1.0 for k in zero)  # reset, not left at 0.3
    assert scales["head"] == 0.3  # the head group is the engine's (lr_scale set by others)

    def no_signal():  # gradients that are all zero: every RGN is 0
        (0.0 * torch.nn.functional.cross_entropy(model(x), y)).backward()

    logs = s.on_epoch_start(1, opt, no_signal)
    assert logs == {"rgn_max": 0.0, "rgn_scale_mean": 0.0}
    scales = {g["name"]: g["lr_scale"] for g in opt.param_groups}
    assert all(scales[k] == 0.0 for k in s.rgn)  # no tensor asks to change: none moves


def test_lp_ft_epoch_start_logs_nothing_and_register_returns_the_class():
    from ssl_ft.finetune.strategies.base import STRATEGIES, Strategy, register

    s = _strategy("lp-ft", selected=[8], epochs=4)
    opt = torch.optim.SGD(s.param_groups(0.0), lr=1.0)
    assert s.on_epoch_start(0, opt, lambda: None) == {}

    class Probe(Strategy):
        name = "test-probe-strategy"

    try:
        assert register(Probe) is Probe and STRATEGIES["test-probe-strategy"] is Probe
    finally:
        STRATEGIES.pop("test-probe-strategy", None)
