"""Each fine-tuning strategy against its definition, on a resnet18 with a 2-class head."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_ft.config import from_dict
from ssl_ft.errors import UserError
from ssl_ft.finetune import STRATEGIES, FinetuneModel, get_strategy
from ssl_ft.finetune.steps import set_trainable
from ssl_ft.models import create_backbone

ALL = {"ft", "lp", "lp-ft", "gradual-lf", "gradual-fl", "l1-sp", "l2-sp", "auto-rgn",
       "discriminative"}


def _model(seed: int = 0) -> FinetuneModel:
    torch.manual_seed(seed)
    return FinetuneModel(create_backbone("resnet18", in_chans=1), 2, (0.5,), (0.25,))


def _strategy(name: str, selected=range(9), epochs: int = 6, model=None, **args):
    cls = get_strategy(name)
    model = model or _model()
    return cls(model, list(selected), epochs, from_dict(cls.Config, args))


def test_registry_has_the_eight_strategies_and_ft():
    assert set(STRATEGIES) == ALL
    with pytest.raises(UserError, match="'nope'"):
        get_strategy("nope")


def test_ft_trains_the_selection_in_every_epoch():
    s = _strategy("ft", selected=[3, 4])
    assert all(s.trained_units(e) == [3, 4] for e in range(6))
    groups = s.param_groups(1e-4)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    n = sum(p.numel() for p in groups[0]["params"])
    bb = s.model.backbone
    assert n == sum(p.numel() for i in (3, 4) for _, p in bb.unit_parameters(bb.units[i]))


def test_lp_trains_only_the_head_and_takes_no_sgd_epoch():
    s = _strategy("lp", selected=[])
    assert all(s.trained_units(e) == [] for e in range(6))
    assert s.fits_probe and s.train_epochs() == 0  # the converged probe is the whole run
    (group,) = s.param_groups(0.0)
    assert group["params"] == list(s.model.head.parameters())


def test_lp_ft_fine_tunes_every_epoch_at_the_scaled_rate():
    s = _strategy("lp-ft", selected=[5, 6, 7, 8], epochs=6, ft_lr_scale=0.25)
    ft = _strategy("ft", selected=[5, 6, 7, 8], epochs=6, model=s.model)
    # phase 1 is the probe (before any epoch); phase 2 is ft's whole budget
    assert s.fits_probe and not ft.fits_probe
    assert s.train_epochs() == ft.train_epochs() == 6
    assert [s.trained_units(e) for e in range(6)] == [ft.trained_units(e) for e in range(6)]
    assert s.phases() == ft.phases() == [(0, 6)]
    groups = s.param_groups(0.0)
    assert {g["name"]: g["lr_scale"] for g in groups} == {"backbone": 0.25, "head": 0.25}
    same = [[id(p) for p in g["params"]] for g in groups]
    assert same == [[id(p) for p in g["params"]] for g in ft.param_groups(0.0)]
    assert _strategy("lp-ft").config.ft_lr_scale == 0.1
    assert s.keeps_bn_statistics() and not ft.keeps_bn_statistics()
    assert not _strategy("lp-ft", bn="batch").keeps_bn_statistics()
    with pytest.raises(UserError, match="'running'"):
        _strategy("lp-ft", bn="running")
    with pytest.raises(UserError, match="ft_lr_scale must be > 0, got 0.0"):
        _strategy("lp-ft", ft_lr_scale=0.0)
    with pytest.raises(UserError, match=r"c_grid .* got \[\]"):
        _strategy("lp", selected=[], c_grid=[])
    with pytest.raises(UserError, match="-1.0"):
        _strategy("lp-ft", c_grid=[1.0, -1.0])


def test_gradual_unfreezing_schedules():
    # 9 units, 6 epochs: head only first, then 3 more units an epoch, all by mid-run
    lf = _strategy("gradual-lf")
    assert [lf.trained_units(e) for e in range(6)] == [
        [], [6, 7, 8], [3, 4, 5, 6, 7, 8], list(range(9)), list(range(9)), list(range(9))]
    fl = _strategy("gradual-fl")
    assert [fl.trained_units(e) for e in range(4)] == [[], [0, 1, 2], list(range(6)),
                                                       list(range(9))]
    custom = _strategy("gradual-lf", selected=[2, 3, 4], epochs=8, every=2, units_per_step=1)
    assert [custom.trained_units(e) for e in range(8)] == [
        [], [], [4], [4], [3, 4], [3, 4], [2, 3, 4], [2, 3, 4]]
    with pytest.raises(UserError, match="every"):
        _strategy("gradual-fl", every=0)


def _perturb(model: FinetuneModel) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)


@pytest.mark.parametrize("name", ["l2-sp", "l1-sp"])
def test_sp_gradient_is_the_definition(name):
    model = _model()
    s = _strategy(name, selected=[4, 5], model=model, alpha=0.3, beta=0.02)
    start = {k: v.clone() for k, v in s.start.items()}
    _perturb(model)
    model.zero_grad()
    s.penalty().backward()
    for key, p in s.named_backbone_params():
        diff = p.detach() - start[key]
        want = 0.3 * diff if name == "l2-sp" else 0.3 * torch.sign(diff)
        torch.testing.assert_close(p.grad, want, msg=key)
    torch.testing.assert_close(model.head.weight.grad, 0.02 * model.head.weight.detach())
    assert model.head.bias.grad is None
    # units outside the selection are not pulled
    assert model.backbone.conv1.weight.grad is None
    assert not s.uses_weight_decay
    assert all(g["weight_decay"] == 0.0 for g in s.param_groups(1e-2))


@pytest.mark.parametrize("name", ["l2-sp", "l1-sp"])
def test_sp_penalty_is_zero_at_the_start_and_keeps_w0_after_training(pneumonia, name):
    pretrained = _model(seed=4).state_dict()
    model = _model(seed=9)
    model.load_state_dict(pretrained)
    s = _strategy(name, selected=[7, 8], model=model, alpha=1.0, beta=0.0)
    assert s.penalty().item() == 0.0
    # real training: 8 SGD steps of cross-entropy + penalty on PneumoniaMNIST images
    set_trainable(model, [7, 8])
    opt = torch.optim.SGD(s.param_groups(0.0), lr=0.05)
    x, y = pneumonia[:64], torch.arange(64) % 2
    model.train()
    for i in range(8):
        xb, yb = x[i * 8:(i + 1) * 8], y[i * 8:(i + 1) * 8]
        loss = torch.nn.functional.cross_entropy(model(xb), yb) + s.penalty()
        opt.zero_grad()
        loss.backward()
        opt.step()
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    after = s.penalty().item()
    assert after > 0.0
    for key, w0 in s.start.items():  # w0 is still the pretrained tensor, bit for bit
        assert torch.equal(w0, pretrained[f"backbone.{key}"]), key
    # the penalty is the distance to w0 as defined, on the trained weights
    diffs = [trained[f"backbone.{k}"] - pretrained[f"backbone.{k}"] for k in s.start]
    want = (sum(d.abs().sum() for d in diffs) if name == "l1-sp"
            else sum(d.pow(2).sum() for d in diffs) / 2)
    assert after == pytest.approx(float(want), rel=1e-5)
    # a resumed run: the strategy is built on the pretrained weights, then the trained weights
    # are loaded (as the engine does); the pull is still towards the pretrained ones
    resumed = _model(seed=9)
    resumed.load_state_dict(pretrained)
    s2 = _strategy(name, selected=[7, 8], model=resumed, alpha=1.0, beta=0.0)
    resumed.load_state_dict(trained)
    assert s2.penalty().item() == pytest.approx(after, rel=1e-6)
    # units outside the selection are not pulled: moving them leaves the penalty alone
    with torch.no_grad():
        resumed.backbone.conv1.weight.add_(1.0)
    assert s2.penalty().item() == pytest.approx(after, rel=1e-6)


def test_discriminative_rates_decay_by_depth():
    s = _strategy("discriminative", selected=[6, 7, 8], decay=0.5)
    groups = {g["name"]: g["lr_scale"] for g in s.param_groups(0.0)}
    # 9 kept units: the last (8) gets decay^1, unit 6 decay^3, the head 1
    assert groups == {"unit6": 0.125, "unit7": 0.25, "unit8": 0.5, "head": 1.0}
    with pytest.raises(UserError, match="decay"):
        _strategy("discriminative", decay=1.5)


def test_auto_rgn_rates_are_proportional_to_the_measured_rgn(pneumonia):
    model = _model()
    s = _strategy("auto-rgn", selected=[5, 6, 7, 8], model=model, measure_batches=2)
    set_trainable(model, [5, 6, 7, 8])
    groups = s.param_groups(0.0)
    assert len(groups) == len(list(s.named_backbone_params())) + 1  # one per tensor + head
    opt = torch.optim.SGD(groups, lr=1.0)
    x, y = pneumonia[:32], torch.arange(32) % 2
    batches = iter([(x[:16], y[:16]), (x[16:], y[16:])])
    loss_fn = torch.nn.CrossEntropyLoss()

    def measure():
        xb, yb = next(batches)
        loss_fn(model(xb), yb).backward()

    model.eval()  # deterministic BN so the reference pass sees the same function
    logs = s.on_epoch_start(0, opt, measure)
    assert all(p.grad is None for p in model.parameters())  # measurement leaves no gradients
    # reference: summed gradients of the same two batches
    model.zero_grad()
    loss_fn(model(x[:16]), y[:16]).backward()
    loss_fn(model(x[16:]), y[16:]).backward()
    params = dict(s.named_backbone_params())
    zero = {k for k, p in params.items() if float(p.detach().norm()) == 0}
    assert zero  # random-init BatchNorm biases: no RGN, full rate
    rgn = {k: float(p.grad.norm() / p.detach().norm()) for k, p in params.items() if k not in zero}
    top = max(rgn.values())
    scales = {g["name"]: g["lr_scale"] for g in opt.param_groups}
    for key, value in rgn.items():
        assert math.isclose(scales[key], value / top, rel_tol=1e-4), key
    assert scales["head"] == 1.0
    assert all(scales[k] == 1.0 for k in zero)
    assert max(scales[k] for k in rgn) == pytest.approx(1.0)
    assert logs["rgn_max"] == pytest.approx(top, rel=1e-4)
