"""Contract tests, parametrised over the registries (in the manner of timm's tests/test_models.py):
every architecture meets the backbone contract (ssl_ft.models.contract) and its depth map's unit
boundaries are consistent. A new architecture is covered the day it is added to ``ARCHS``.

Tiny inputs (1 channel, 32 px), random weights, eval mode: seconds per architecture.
"""

from __future__ import annotations

import functools
import inspect

import pytest
import torch
from torch import nn

from ssl_ft.models import (
    DEFAULT_RULE,
    RULES,
    DepthBackbone,
    DepthMap,
    SplittableBackbone,
    UnitSpec,
    create_backbone,
    list_archs,
    missing_members,
)

#: the timm adapter, on two small models with the features API (one with BatchNorm)
TIMM = ["timm:resnet10t", "timm:convnext_atto"]
ARCHS = [*list_archs(), *TIMM]
SIZE = 32


@functools.cache
def _backbone(arch: str) -> nn.Module:
    """One random backbone per architecture for the read-only tests (eval mode)."""
    torch.manual_seed(0)
    return create_backbone(arch, in_chans=1).eval()


def _x(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ARCHS)
def test_meets_the_backbone_protocol(arch):
    bb = _backbone(arch)
    assert isinstance(bb, DepthBackbone), missing_members(bb)
    assert isinstance(bb, SplittableBackbone) == (not arch.startswith("timm:"))
    assert (bb.arch, bb.in_chans, bb.stem_type) == (arch, 1, "standard")
    assert bb.family in DEFAULT_RULE
    assert bb.units and all(isinstance(u, UnitSpec) for u in bb.units)
    assert len({u.name for u in bb.units}) == len(bb.units)
    # the members are the contract's, with its parameters (not just present)
    for name in ("forward_intermediates", "unit_parameters", "unit_modules", "truncate",
                 *(["forward_units"] if isinstance(bb, SplittableBackbone) else [])):
        want = list(inspect.signature(getattr(SplittableBackbone, name)).parameters)[1:]
        assert list(inspect.signature(getattr(bb, name)).parameters) == want, name


def test_an_object_without_the_members_is_refused_by_name():
    assert not isinstance(nn.Linear(2, 2), DepthBackbone)
    assert "unit_parameters" in missing_members(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="Linear is not a DepthBackbone: it lacks arch"):
        DepthMap.from_backbone(nn.Linear(2, 2))


@pytest.mark.parametrize("arch", ARCHS)
def test_every_parameter_and_batchnorm_belongs_to_exactly_one_unit(arch):
    bb = _backbone(arch)
    named = dict(bb.named_parameters())
    owned = [(n, p) for u in bb.units for n, p in bb.unit_parameters(u)]
    assert sorted(n for n, _ in owned) == sorted(named)  # each parameter exactly once
    assert all(named[n] is p for n, p in owned)  # the names are the state-dict names
    for unit in bb.units:
        mine = {id(p) for _, p in bb.unit_parameters(unit)}
        modules = bb.unit_modules(unit)
        assert modules and all(isinstance(m, nn.Module) for m in modules)
        assert {id(p) for m in modules for p in m.parameters()} <= mine, unit.name
    norms = [m for u in bb.units for mod in bb.unit_modules(u) for m in mod.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    every = [m for m in bb.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == len({id(m) for m in norms}) == len(every)


@pytest.mark.parametrize("arch", ARCHS)
def test_unit_outputs_match_their_specs_and_forward(arch):
    bb, x = _backbone(arch), _x()
    with torch.no_grad():
        maps = bb.forward_intermediates(x)
        pooled = bb(x)
        last = bb.forward_intermediates(x, [len(bb.units) - 1])
    assert len(maps) == len(bb.units)
    assert [m.shape[1] for m in maps] == [u.out_channels for u in bb.units]
    assert pooled.shape == (2, bb.num_features) and torch.isfinite(pooled).all()
    torch.testing.assert_close(last[0], maps[-1])
    if isinstance(bb, SplittableBackbone):  # any cut point: the slices chain to the whole
        with torch.no_grad():
            h = x
            for i in range(len(bb.units)):
                h = bb.forward_units(h, i, i + 1)
                torch.testing.assert_close(h, maps[i], msg=f"{arch} unit {i}")
            torch.testing.assert_close(bb.forward_units(bb.forward_units(x, 0, 2), 2), h)
        assert bb.num_features == bb.units[-1].out_channels
        torch.testing.assert_close(pooled, maps[-1].mean((2, 3)))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("rule", RULES)
def test_depth_map_quarters_partition_the_units(arch, rule):
    dm = DepthMap.from_backbone(_backbone(arch), rule)
    depths = [u.depth for u in dm.units]
    assert all(0 < d <= 100 for d in depths) and depths[-1] == 100
    assert depths == sorted(depths)
    assert [u.index for u in dm.units] == list(range(len(dm.units)))
    assert sum(u.params for u in dm.units) == sum(p.numel() for p in _backbone(arch).parameters())
    quarters = [{u.index for u in dm.select(f"{a}-{a + 25}", allow_empty=True).trained}
                for a in (0, 25, 50, 75)]
    assert set().union(*quarters) == set(range(len(dm.units)))
    assert sum(len(q) for q in quarters) == len(dm.units)
    if rule == DEFAULT_RULE[_backbone(arch).family]:  # every default quarter trains something
        assert all(quarters), [len(q) for q in quarters]


@pytest.mark.parametrize("arch", ARCHS)
def test_truncation_keeps_exactly_the_kept_units(arch):
    n = len(_backbone(arch).units)
    for keep in sorted({1, n // 2, n - 1} - {0}):
        torch.manual_seed(0)
        bb = create_backbone(arch, in_chans=1).eval()
        full = {k: v.clone() for k, v in bb.state_dict().items()}
        assert bb.truncate(keep) is bb and len(bb.units) == keep
        kept = {name for u in bb.units for name, _ in bb.unit_parameters(u)}
        assert kept == {name for name, _ in bb.named_parameters()}
        assert all(torch.equal(v, full[k]) for k, v in bb.state_dict().items())
        with torch.no_grad():
            out = bb(_x())
        assert out.shape == (2, bb.num_features) == (2, bb.units[-1].out_channels)
        assert isinstance(bb, DepthBackbone)
