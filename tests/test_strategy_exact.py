"""Strategy details found by mutation testing (tools/mutation.py): schedules and scales on worked
examples where rounding, bounds and defaults matter."""

from __future__ import annotations

import pytest
import torch

from ssl_ft.config import from_dict
from ssl_ft.finetune import FinetuneModel, get_strategy
from ssl_ft.models import create_backbone


def _model(seed: int = 0) -> FinetuneModel:
    torch.manual_seed(seed)
    return FinetuneModel(create_backbone("resnet18", in_chans=1), 2, (0.5,), (0.25,))


@pytest.fixture(scope="module")
def model() -> FinetuneModel:
    return _model()


def _strategy(name, model, selected=range(9), epochs=6, **args):
    cls = get_strategy(name)
    return cls(model, list(selected), epochs, from_dict(cls.Config, args))


def test_gradual_steps_are_whole_epochs_counts(model):
    # 9 units, 5 epochs: 5 // 2 = 2 steps by mid-run -> ceil(9 / 2) = 5 a step
    s = _strategy("gradual-lf", model, epochs=5)
    assert s.per_step == 5
    assert [len(s.trained_units(e)) for e in range(5)] == [0, 5, 9, 9, 9]
    # 10 epochs, every 4: (10 // 2) // 4 = 1 step -> all 9 at once (not ceil(9 / 1.25) = 8)
    s = _strategy("gradual-fl", model, epochs=10, every=4)
    assert s.per_step == 9
    assert [len(s.trained_units(e)) for e in range(10)] == [0] * 4 + [9] * 6
    assert s.trained_units(4) == list(range(9))


def test_only_lp_ft_with_frozen_bn_keeps_the_batchnorm_statistics(model):
    from ssl_ft.finetune.strategies import STRATEGIES

    for name in STRATEGIES:
        if name != "lp-ft":
            assert _strategy(name, model).keeps_bn_statistics() is False, name
    assert _strategy("lp-ft", model, bn="frozen").keeps_bn_statistics() is True
    assert _strategy("lp-ft", model, bn="batch").keeps_bn_statistics() is False


def test_the_probe_c_grid_must_be_positive_numbers():
    from ssl_ft.errors import UserError
    from ssl_ft.finetune.strategies.lp import check_c_grid

    check_c_grid([1e-3, 1.0])  # fine
    for bad in ([], [0.0, 1.0], [1.0, -2.0]):
        with pytest.raises(UserError) as err:
            check_c_grid(bad)
        assert str(err.value) == (f"strategy_args.c_grid must be a non-empty list of numbers > 0, "
                                  f"got {bad!r}")
