"""Contract tests, parametrised over the registries (in the manner of timm's tests/test_models.py),
so that a new architecture, SSL method or fine-tuning strategy is covered the day it registers:

* every architecture meets the backbone contract (:mod:`ssl_ft.models.contract`) and the unit
  boundaries of its depth map are consistent;
* every SSL method builds from a recipe, takes training steps on tiny data without a NaN, and its
  state round-trips through a checkpoint to the same next loss;
* every fine-tuning strategy's optimiser groups hold exactly the parameters it trains, and an
  epoch of the engine's own loop moves those and nothing else;
* the names in the docs, the tools and fusion are the registries'.

Tiny inputs (1 channel, 28-32 px), random weights: seconds per case.
"""

from __future__ import annotations

import functools
import inspect
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ssl_ft.finetune.engine as engine
from ssl_ft.checkpoint import load_checkpoint, save_checkpoint
from ssl_ft.config import from_dict
from ssl_ft.data import DataInfo
from ssl_ft.ensemble import DEFAULT_DEPTH, FUSION_STRATEGIES
from ssl_ft.finetune import STRATEGIES, FinetuneConfig, FinetuneModel, Strategy, get_strategy
from ssl_ft.finetune.steps import set_trainable
from ssl_ft.finite import check_state
from ssl_ft.methods import METHODS, SSLMethod
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
from ssl_ft.pretrain import (
    PretrainConfig,
    TrainConfig,
    build_method,
    load_method_state,
    method_state,
    train_one_epoch,
)
from ssl_ft.runtime import Dist, grad_scaler
from ssl_ft.scaffold import epoch_loader
from tests.conftest import REPO, grey_meta

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


# ---- SSL methods ---------------------------------------------------------------------------

def _info(size: int = 28) -> DataInfo:
    return DataInfo("tiny", "npz", "tiny.npz", "binary-class", ("a", "b"), 1, size, 255,
                    (0.5,), (0.25,), "0" * 64)


def _method(name: str, seed: int) -> SSLMethod:
    torch.manual_seed(seed)
    cfg = PretrainConfig(method=name, train=TrainConfig(lr=0.05, batch_size=8, threads=1))
    return build_method(cfg, _info())


def _images(n: int = 16, size: int = 28) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_trains_without_nan_and_round_trips_through_a_checkpoint(name, tmp_path):
    cls = METHODS[name]
    assert cls.name == name and cls.family in DEFAULT_DEPTH  # a family fusion has a depth for
    method = _method(name, seed=0)
    assert isinstance(method.backbone, DepthBackbone)
    start = {k: v.clone() for k, v in method.state_dict().items()}
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.05,
                          momentum=0.9)
    loader = DataLoader(TensorDataset(_images()), batch_size=8)
    step, stats = train_one_epoch(method, method, loader, opt, epoch=0, step=0, total_steps=4,
                                  lr_fn=lambda s: 0.05, device=torch.device("cpu"),
                                  precision="fp32", max_value=255, writer=None,
                                  show_progress=False)
    assert step == 2 and math.isfinite(stats["loss"])
    check_state(method, "the contract test")  # every parameter and buffer finite
    moved = [k for k, v in method.backbone.state_dict().items()
             if not torch.equal(v, start[f"backbone.{k}"])]
    assert moved, "two steps left the backbone unchanged"
    meta = {**grey_meta(name, cls.family), "normalization": {"mean": [0.5], "std": [0.25],
                                                             "max_value": 255}}
    save_checkpoint(tmp_path / "last.pt", method.backbone.state_dict(), meta,
                    extra=method_state(method))
    ckpt = load_checkpoint(tmp_path / "last.pt")
    again = _method(name, seed=1)  # other random weights, then the checkpoint's state
    load_method_state(again, ckpt.backbone, ckpt.extra)
    a, b = method.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    extra_a, extra_b = method.extra_state(), again.extra_state()
    assert extra_a.keys() == extra_b.keys()
    assert all(torch.equal(extra_a[k], extra_b[k]) for k in extra_a)
    x = _images(8).float() / 255
    losses = []
    for m in (method, again):  # the same next loss, with the same random draws
        torch.manual_seed(7)
        m.train()
        losses.append(m(x)["loss"].item())
    assert losses[0] == losses[1]


# ---- fine-tuning strategies ----------------------------------------------------------------

SELECTED = [3, 4, 5, 6, 7]  # of resnet18's 9 units


def _strategy(name: str, epochs: int = 4) -> Strategy:
    torch.manual_seed(0)
    model = FinetuneModel(create_backbone("resnet18", in_chans=1), 2, (0.5,), (0.25,))
    cls = get_strategy(name)
    selected = [] if name == "lp" else SELECTED
    return cls(model, selected, epochs, from_dict(cls.Config, {}))


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def _unit_params(s: Strategy, units) -> set[int]:
    bb = s.model.backbone
    return _ids(p for i in units for _, p in bb.unit_parameters(bb.units[i]))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_optimiser_groups_hold_exactly_what_it_trains(name):
    s = _strategy(name)
    assert type(s).name == name
    groups = s.param_groups(1e-4)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)), "a parameter in two groups"
    assert all(g["params"] and g["lr_scale"] > 0 and "weight_decay" in g and g["name"]
               for g in groups)
    epochs = range(s.train_epochs())
    trained = sorted({i for e in epochs for i in s.trained_units(e)})
    assert set(trained) <= set(s.selected)
    if name == "lp":
        assert not trained and s.fits_probe and s.train_epochs() == 0
    else:  # every selected unit trains in some epoch
        assert trained == SELECTED and s.train_epochs() == 4
    assert set(ids) == _unit_params(s, trained) | _ids(s.model.head.parameters())
    phases = s.phases()
    assert phases[0][0] == 0 and phases[-1][1] == s.epochs
    assert all(a[1] == b[0] for a, b in zip(phases, phases[1:], strict=False))
    assert all(isinstance(s.phase_name(e), str) for e in epochs)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_epoch_moves_its_units_and_nothing_else(name):
    """The fine-tuning engine's own epoch (two steps) in the first epoch that trains units."""
    s = _strategy(name)
    model = s.model
    cfg = FinetuneConfig(optimizer="sgd", lr=0.1, weight_decay=0.0, seed=0)
    opt = engine._optimizer(cfg, s)
    epoch = next((e for e in range(s.train_epochs()) if s.trained_units(e)), 0)
    trained = s.trained_units(epoch)
    set_trainable(model, trained)
    images, labels = _images(16), torch.arange(16) % 2
    loader, _ = epoch_loader(images, labels, batch_size=8, dist=Dist(), seed=0,
                             device=torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    step, stats = engine.train_one_epoch(
        model, SimpleNamespace(cfg=cfg, model=model, strategy=s), opt, epoch=epoch, step=0,
        loader=loader, x_all=images, y_all=labels, scale=255, device=torch.device("cpu"),
        precision="fp32", show=False, scaler=grad_scaler(torch.device("cpu"), "fp32"))
    assert step == 2 and stats["trained_units"] == len(trained)
    assert all(math.isfinite(v) for v in stats.values() if isinstance(v, float))
    check_state(model, "the contract test")
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    names = {n for i in trained for n, _ in model.backbone.unit_parameters(model.backbone.units[i])}
    assert {"head.weight", "head.bias"} & changed
    backbone = {k.removeprefix("backbone.") for k in changed if k.startswith("backbone.")}
    params = {k for k in backbone if not k.endswith(("running_mean", "running_var",
                                                     "num_batches_tracked"))}
    assert params <= names, sorted(params - names)[:3]  # frozen parameters stay
    assert (params == set()) == (not trained)  # trained units move
    stats = {k.rpartition(".")[0] for k in backbone - params}  # BatchNorm statistics
    if s.keeps_bn_statistics():
        assert not stats
    assert stats <= {n.rpartition(".")[0] for n in names}, stats  # of trained units only


# ---- names from the registries -------------------------------------------------------------

def _first_column(path: Path, header: str) -> list[str]:
    """The backticked first cells of the markdown table whose header row starts ``header``."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    names = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        names.append(line.split("|")[1].strip().strip("`"))
    return names


def test_docs_tables_list_exactly_the_registered_methods_and_strategies():
    methods = _first_column(REPO / "docs" / "pretraining.md", "| `method` |")
    assert sorted(methods) == sorted(METHODS) and len(set(methods)) == len(methods)
    strategies = _first_column(REPO / "docs" / "finetuning.md", "| `--strategy` |")
    assert sorted(strategies) == sorted(STRATEGIES)
    readme = (REPO / "README.md").read_text()
    listed = readme.split("strategies (`", 1)[1].split("`", 1)[0].split()
    assert sorted(listed) == sorted(STRATEGIES)


def test_fusion_strategies_and_tool_flags_are_registry_names(tool):
    assert set(FUSION_STRATEGIES) <= set(STRATEGIES)
    flags = tool("ensemble").FLAGS["--strategy"]
    assert list(flags["choices"]) == list(FUSION_STRATEGIES)
    text = tool("finetune").FLAGS["--strategy"]["help"]
    assert all(f" {n} " in f" {text} " for n in STRATEGIES)
