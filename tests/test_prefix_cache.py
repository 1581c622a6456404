"""The frozen-prefix cache: which units it covers, and a run with it equal to one without."""

from __future__ import annotations

import pytest
import torch

from ssl_ft.config import from_dict
from ssl_ft.finetune import FinetuneConfig, finetune, load_finetuned, prepare
from ssl_ft.finetune.prefix_cache import cacheable_prefix


def _cfg(data_root, out, **kw) -> FinetuneConfig:
    base = dict(checkpoint="none", arch="resnet18", data="breastmnist", data_root=str(data_root),
                epochs=2, batch_size=32, limit=96, threads=1, seed=0, out=str(out))
    return from_dict(FinetuneConfig, {**base, **kw})


@pytest.mark.parametrize("layers,strategy,expected", [
    ("75-100", "ft", 7), ("0-100", "lp", 9), ("25-100", "gradual-lf", 3), ("0-100", "ft", 0),
    ("50-100", "lp-ft", 5)])
def test_cacheable_prefix_is_the_units_frozen_in_every_epoch(data_root, tmp_path, layers,
                                                            strategy, expected):
    p = prepare(_cfg(data_root, tmp_path, layers=layers, strategy=strategy, epochs=4))
    assert [u.name for u in p.model.backbone.units][:1] == ["stem"]   # 9 units: stem + 8 blocks
    assert cacheable_prefix(p.model, p.strategy, 4, augment="none", freeze_bn=True) == expected
    assert cacheable_prefix(p.model, p.strategy, 4, augment="flip", freeze_bn=True) == 0
    assert cacheable_prefix(p.model, p.strategy, 4, augment="none", freeze_bn=False) == 0


@pytest.mark.parametrize("layers,strategy", [("75-100", "ft"), ("50-100", "lp-ft"),
                                             ("50-100", "gradual-fl")])
def test_a_run_with_the_cache_equals_one_without(data_root, tmp_path, capfd, layers, strategy):
    models = {}
    for mode in ("off", "auto"):
        out = tmp_path / mode
        finetune(_cfg(data_root, out, layers=layers, strategy=strategy, prefix_cache=mode),
                 progress=False)
        models[mode] = load_finetuned(out / "model.pt").state_dict()
    err = capfd.readouterr().err
    assert err.count("prefix cache:") == 1                      # used by the 'auto' run only
    for key, value in models["off"].items():
        assert torch.equal(value, models["auto"][key]), key
