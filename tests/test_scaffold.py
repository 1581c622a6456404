"""ssl_ft.scaffold, the pieces pretraining, fine-tuning and fusion share: the schedule against
the loops' former schedules (bit for bit), seeding, optimisers, steps, selection and the run log."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import ssl_ft.scaffold as scaffold_module
from ssl_ft.errors import UserError
from ssl_ft.finite import NonFiniteError
from ssl_ft.runtime import Dist, grad_scaler
from ssl_ft.scaffold import (
    RunLog,
    build_optimizer,
    decode_history,
    encode_history,
    epoch_loader,
    image_tensor,
    optimizer_step,
    refuse_overwrite,
    seed_epoch,
    set_lr,
    val_score,
    warmup_cosine,
)


def _pretrain_lr(step, total, warmup, base, min_ratio):
    """The reference: pretraining's schedule before the scaffold (per step)."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _finetune_lr(epoch_float, phases, base, warmup):
    """The reference: fine-tuning's (and fusion's) schedule before the scaffold (per epoch)."""
    if epoch_float < warmup:
        return base * (epoch_float + 1e-3) / warmup
    for start, end in phases:
        if start <= epoch_float < end:
            t = (epoch_float - start) / max(1e-9, end - start)
            return base * 0.5 * (1 + math.cos(math.pi * t))
    return 0.0


@pytest.mark.parametrize("total,warmup,base,min_ratio", [
    (120, 0, 0.3, 0.0), (120, 24, 0.075, 0.0), (37, 5, 1.7, 0.1), (10, 10, 0.5, 0.0),
    (8, 12, 0.3, 0.2)])
def test_per_step_schedule_is_pretrainings_bit_for_bit(total, warmup, base, min_ratio):
    for step in range(total):
        got = warmup_cosine(step, base=base, warmup=warmup, phases=[(warmup, total)],
                            min_ratio=min_ratio)
        assert got == _pretrain_lr(step, total, warmup, base, min_ratio), step


@pytest.mark.parametrize("phases,warmup,base,steps", [
    ([(0, 6)], 0, 1e-3, 7), ([(0, 6)], 2, 0.05, 3), ([(0, 4), (4, 10)], 1, 0.01, 5),
    ([(0, 1), (1, 3), (3, 6)], 0, 0.3, 4)])
def test_per_epoch_schedule_is_finetunings_bit_for_bit(phases, warmup, base, steps):
    end = phases[-1][1]
    for step in range(end * steps + 3):  # past the last phase too
        t = step / steps
        got = warmup_cosine(t, base=base, warmup=warmup, phases=phases, warmup_offset=1e-3)
        assert got == _finetune_lr(t, phases, base, warmup), t


def test_schedule_shape():
    phases = [(0, 4), (4, 10)]
    lr = [warmup_cosine(t, base=1.0, warmup=0, phases=phases) for t in (0, 2, 4, 7, 10)]
    assert lr == pytest.approx([1.0, 0.5, 1.0, 0.5, 0.0], abs=1e-12)  # restarts at phase 2
    assert warmup_cosine(0, base=2.0, warmup=4, phases=[(4, 8)]) == 0.5  # first step: base/4
    assert warmup_cosine(9, base=2.0, warmup=0, phases=[(0, 8)], min_ratio=0.25) == 0.5


def test_seed_epoch_repeats_draws_and_separates_epochs_and_ranks():
    draws = {}
    for key in [(0, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 0), (0, 0, 0)]:
        value = seed_epoch(*key)
        draws.setdefault(key, []).append((value, torch.rand(1).item(), np.random.rand()))
    assert draws[(0, 0, 0)][0] == draws[(0, 0, 0)][1]
    assert len({d[0] for d in draws.values()}) == 4
    assert seed_epoch(2, 3, 1) == 2 * 100_003 + 3 * 1_009 + 1
    assert seed_epoch(2, 3, stride=1) == 2 * 100_003 + 3  # fusion's series


def test_epoch_loader_shards_and_reshuffles():
    x = torch.arange(20)
    seen = []
    for rank in (0, 1):
        loader, sampler = epoch_loader(x, batch_size=4, dist=Dist(rank, 2), seed=3,
                                       device=torch.device("cpu"))
        sampler.set_epoch(0)
        first = torch.cat([b for (b,) in loader])
        sampler.set_epoch(1)
        second = torch.cat([b for (b,) in loader])
        assert len(first) == 8 and not torch.equal(first, second)  # drop_last: 10 -> 8
        seen.append(first)
    assert not set(seen[0].tolist()) & set(seen[1].tolist())  # disjoint shards


def test_image_tensor_widens_uint16_only():
    assert image_tensor(np.zeros((2, 1, 4, 4), np.uint8)).dtype == torch.uint8
    wide = image_tensor(np.full((2, 1, 4, 4), 65535, np.uint16))
    assert wide.dtype == torch.int32 and int(wide.max()) == 65535


def test_build_optimizer_and_set_lr_scale_per_group():
    w, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    groups = [{"params": [w], "lr_scale": 0.1, "weight_decay": 0.5}, {"params": [b]}]
    opt = build_optimizer("adamw", groups, lr=1.0)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.01]  # group, else default
    set_lr(opt, 2.0)
    assert [g["lr"] for g in opt.param_groups] == [2.0 * 0.1, 2.0]
    sgd = build_optimizer("sgd", [w], lr=0.1, momentum=0.5, weight_decay=1e-4)
    assert (sgd.defaults["momentum"], sgd.defaults["weight_decay"]) == (0.5, 1e-4)
    assert type(build_optimizer("lars", [w], lr=0.1)).__name__ == "LARS"
    with pytest.raises(ValueError, match="'rmsprop'"):
        build_optimizer("rmsprop", [w], lr=0.1)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_is_fused_and_steps_as_the_for_loop_does(name):
    """The fused kernel where it applies (float CPU tensors), fed from generators and groups
    alike, and 5 steps equal torch's for-loop Adam up to float rounding."""
    torch.manual_seed(0)
    nets = [nn.Linear(8, 3) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    fused = build_optimizer(name, ({"params": p, "lr_scale": 1.0} for p in nets[0].parameters()),
                            lr=0.01, weight_decay=0.1)
    assert fused.defaults["fused"] and len(fused.param_groups) == 2  # nothing lost to the check
    loop = (torch.optim.Adam if name == "adam" else torch.optim.AdamW)(
        nets[1].parameters(), lr=0.01, weight_decay=0.1)
    x = torch.randn(16, 8)
    for _ in range(5):
        for net, opt in zip(nets, (fused, loop), strict=True):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(nets[0].weight, nn.Linear(8, 3).weight)
    ints = [torch.zeros(2, dtype=torch.int64)]
    assert not scaffold_module._fusable(ints)  # not float: the for-loop step


def test_optimizer_step_checks_calls_the_hook_on_true_gradients_and_steps():
    model = nn.Linear(2, 1, bias=False)
    nn.init.ones_(model.weight)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    scaler = grad_scaler(torch.device("cpu"), "fp32")
    grads = []
    loss = model(torch.ones(1, 2)).sum()
    optimizer_step(loss, opt, scaler, model, "step 0",
                   before_step=lambda: grads.append(model.weight.grad.clone()))
    assert torch.equal(grads[0], torch.ones(1, 2))
    assert torch.equal(model.weight.detach(), torch.full((1, 2), 0.5))
    with pytest.raises(NonFiniteError, match="at step 1"):
        optimizer_step(loss.detach() * float("nan"), opt, scaler, model, "step 1")


def test_val_score_falls_back_to_acc_where_auc_is_undefined():
    assert val_score({"auc": 0.8, "acc": 0.6}) == 0.8
    assert val_score({"auc": float("nan"), "acc": 0.6}) == 0.6


def test_run_log_writes_recipe_rows_and_the_epoch_line(tmp_path, capsys):
    out = tmp_path / "run"
    old = [{"epoch": 1, "loss": 0.5}]
    log = RunLog(out, {"lr": 0.1, "data": {"name": "x"}}, old)
    assert yaml.safe_load((out / "recipe.yaml").read_text()) == {"lr": 0.1, "data": {"name": "x"}}
    assert (out / "metrics.jsonl").read_text() == json.dumps(old[0]) + "\n"
    log.open_tensorboard(purge_step=1)
    log.epoch({"epoch": 2, "loss": 0.25, "phase": "ft", "trained_units": 3}, epochs=4)
    log.close()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows == [*old, {"epoch": 2, "loss": 0.25, "phase": "ft", "trained_units": 3}]
    assert capsys.readouterr().err == "epoch 2/4  loss 0.25  phase ft  trained_units 3\n"
    assert list((out / "tb").iterdir())
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["epoch/loss", "epoch/trained_units"]
    assert [e.step for e in events.Scalars("epoch/loss")] == [2]
    # a history round-trips as last.pt stores it
    assert decode_history(encode_history(rows)) == rows


def test_refuse_overwrite_names_the_way_out(tmp_path):
    refuse_overwrite(tmp_path, resume=False, another="--out")  # no last.pt: fine
    (tmp_path / "last.pt").write_bytes(b"")
    refuse_overwrite(tmp_path, resume=True, another="--out")
    with pytest.raises(UserError, match="pass --resume to continue it or choose another out="):
        refuse_overwrite(tmp_path, resume=False, another="out=")
