"""DINO: the loss against a slow reference, centre, temperatures, frozen last layer, local crops,
teacher momentum and resume, config checks."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch

from ssl_ft.augment import BatchAugment
from ssl_ft.methods.base import METHODS
from ssl_ft.methods.dino import DINO, DINOConfig, default_local_size
from ssl_ft.models import create_backbone


def make(aug=None, **cfg: object) -> DINO:
    cfg = {"hidden_dim": 64, "bottleneck_dim": 16, "out_dim": 32, **cfg}
    return DINO(create_backbone("resnet18", in_chans=1), DINOConfig(**cfg),
                augment=aug or BatchAugment(None, 28, 1), mean=[0.5], std=[0.25], image_size=28)


def dino_reference(teacher: list[torch.Tensor], student: list[torch.Tensor], center: torch.Tensor,
                   t_temp: float, s_temp: float) -> float:
    """DINO's loss with explicit loops: for every teacher view i and student view j != i, the
    mean over the batch of ``-sum_k softmax((t - c) / t_temp)_k * log_softmax(s / s_temp)_k``,
    averaged over the (i, j) pairs."""
    total, pairs = 0.0, 0
    for i, t in enumerate(teacher):
        for j, s in enumerate(student):
            if i == j:
                continue
            for b in range(len(t)):
                pt = [math.exp(v) for v in ((t[b] - center) / t_temp).double().tolist()]
                pt = [v / sum(pt) for v in pt]
                logits = (s[b] / s_temp).double().tolist()
                lse = math.log(sum(math.exp(v) for v in logits))
                total -= sum(p * (v - lse) for p, v in zip(pt, logits, strict=True)) / len(t)
            pairs += 1
    return total / pairs


def test_registered_with_dino_resnet_defaults() -> None:
    assert METHODS["dino"] is DINO and DINO.family == "contrastive"
    cfg = DINOConfig()
    assert (cfg.teacher_temp, cfg.student_temp, cfg.center_momentum, cfg.momentum) == \
        (0.04, 0.1, 0.9, 0.996)
    assert (cfg.batch_norm, cfg.norm_last_layer, cfg.local_crops) == (False, True, 0)


def test_lightly_loss_and_centre_match_slow_reference() -> None:
    torch.manual_seed(0)
    crit = make(center_momentum=0.8).criterion
    crit.center.copy_(0.3 * torch.randn(1, 1, 32))
    teacher = [torch.randn(5, 32) for _ in range(2)]
    student = [torch.randn(5, 32) for _ in range(4)]  # 2 global + 2 local views
    center = crit.center.clone().reshape(32)
    got = crit(teacher, student, teacher_temp=0.05).item()
    assert got == pytest.approx(dino_reference(teacher, student, center, 0.05, 0.1), rel=1e-5)
    mean = torch.cat(teacher).mean(0)
    torch.testing.assert_close(crit.center.reshape(32), 0.8 * center + 0.2 * mean)


def test_forward_uses_teacher_on_global_views_only() -> None:
    torch.manual_seed(0)
    method = make(local_crops=2, local_size=16)
    seen: list[tuple[str, tuple[int, ...]]] = []
    for name, net in (("teacher", method.backbone_momentum), ("student", method.backbone)):
        net.register_forward_hook(lambda m, i, o, name=name: seen.append((name, tuple(i[0].shape))))
    out = method(torch.rand(6, 1, 28, 28))
    assert set(out) == {"loss", "embedding_std"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.values())
    assert sorted(seen) == [("student", (12, 1, 16, 16)), ("student", (12, 1, 28, 28)),
                            ("teacher", (12, 1, 28, 28))]
    out["loss"].backward()
    assert method.backbone.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in method.backbone_momentum.parameters())


def test_local_size_default_and_checks() -> None:
    assert [default_local_size(s) for s in (28, 64, 224, 12)] == [16, 27, 96, 12]
    with pytest.raises(ValueError, match="local_size 40"):
        make(local_crops=2, local_size=40)
    with pytest.raises(ValueError, match="BatchAugment"):
        make(aug=lambda x: x, local_crops=1)
    assert make(aug=lambda x: x).local_augment is None  # no local crops: any augment will do


def test_teacher_temperature_warmup() -> None:
    method = make(warmup_teacher_temp=0.02, teacher_temp=0.06, teacher_temp_warmup=0.5)
    assert method.teacher_temp_at(0, 0) == pytest.approx(0.02)  # before the first after_step
    assert method.teacher_temp_at(0, 100) == pytest.approx(0.02)
    assert method.teacher_temp_at(25, 100) == pytest.approx(0.04)
    assert method.teacher_temp_at(50, 100) == method.teacher_temp_at(99, 100) == 0.06
    assert make().teacher_temp_at(0, 0) == 0.04


def test_evaluation_forward_keeps_the_centre() -> None:
    torch.manual_seed(0)
    method = make()
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        method(x)
    assert torch.equal(method.criterion.center, torch.zeros(1, 1, 32))
    method(x)
    assert not torch.equal(method.criterion.center, torch.zeros(1, 1, 32))


def test_last_layer_frozen_for_the_first_steps() -> None:
    torch.manual_seed(0)
    method = make(freeze_last_layer=0.5)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1,
                          weight_decay=0.1)
    last = method.projection_head.last_layer
    changed = []
    for step in range(4):
        before = last.weight_v.detach().clone()
        method(torch.rand(6, 1, 28, 28))["loss"].backward()
        assert last.weight_v.grad is not None  # computed (and reduced under DDP) ...
        method.before_step(step, 4)             # ... then dropped while frozen
        opt.step()
        opt.zero_grad()
        method.after_step(step, 4)
        changed.append(not torch.equal(before, last.weight_v))
    assert changed == [False, False, True, True]
    assert not last.weight_g.requires_grad  # norm_last_layer: the norm stays 1


def test_teacher_is_an_exact_copy_and_follows_by_momentum() -> None:
    torch.manual_seed(0)
    method = make(momentum=0.5, momentum_schedule=False)
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(method.teacher(x), method.student(x), rtol=0, atol=0)
    s0 = [p.detach().clone() for p in method.projection_head.parameters()]
    t0 = [p.detach().clone() for p in method.projection_head_momentum.parameters()]
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    method(x)["loss"].backward()
    opt.step()
    method.after_step(0, 10)
    for before, _s_old, s_new, t_new in zip(t0, s0, method.projection_head.parameters(),
                                           method.projection_head_momentum.parameters(),
                                           strict=True):
        torch.testing.assert_close(t_new, 0.5 * before + 0.5 * s_new.detach())
    assert not all(torch.equal(a, b) for a, b in zip(s0, method.projection_head.parameters(),
                                                     strict=True))
    assert method.progress.tolist() == [1, 10]


def test_resume_restores_teacher_centre_and_schedule(pneumonia: torch.Tensor) -> None:
    """With a temperature warm-up, the 4th step after a save/load into a differently
    initialised model equals the uninterrupted one; without the ``progress`` buffer (step 0's
    temperature) or the centre it does not."""
    def fresh(seed: int) -> tuple[DINO, torch.optim.Optimizer]:
        torch.manual_seed(seed)
        method = make(teacher_temp_warmup=1.0, warmup_teacher_temp=0.02, teacher_temp=0.07)
        return method, torch.optim.SGD(
            [p for p in method.parameters() if p.requires_grad], lr=0.05, momentum=0.9)

    def step(method: DINO, opt: torch.optim.Optimizer, i: int) -> float:
        torch.manual_seed(100 + i)
        loss = method(pneumonia[16 * i: 16 * i + 16])["loss"]
        opt.zero_grad()
        loss.backward()
        method.before_step(i, 6)
        opt.step()
        method.after_step(i, 6)
        return loss.item()

    run, opt = fresh(0)
    for i in range(3):
        step(run, opt, i)
    buffer = io.BytesIO()
    torch.save({"model": run.state_dict(), "optimizer": opt.state_dict()}, buffer)
    expected = step(run, opt, 3)

    def resumed(drop: str | None) -> tuple[float, DINO]:
        buffer.seek(0)
        ckpt = torch.load(buffer, weights_only=True)
        method, mopt = fresh(42)
        state = {k: v for k, v in ckpt["model"].items() if k != drop}
        method.load_state_dict(state, strict=drop is None)
        mopt.load_state_dict(ckpt["optimizer"])
        return step(method, mopt, 3), method

    loss, method = resumed(None)
    assert loss == expected
    for a, b in zip(method.state_dict().values(), run.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert resumed("progress")[0] != expected
    assert resumed("criterion.center")[0] != expected


@pytest.mark.parametrize(
    ("field", "value"),
    [("out_dim", 0), ("hidden_dim", 2.0), ("bottleneck_dim", -1), ("local_crops", -1),
     ("local_size", 4), ("batch_norm", "false"), ("student_temp", 0.0),
     ("teacher_temp", -0.04), ("warmup_teacher_temp", float("nan")), ("center_momentum", 1.5),
     ("momentum", -0.1), ("teacher_temp_warmup", 2.0), ("freeze_last_layer", -0.5),
     ("local_crop_scale", (0.5, 0.2)), ("local_crop_scale", (0.0, 0.3)),
     ("local_crop_scale", (0.1,))],
)
def test_config_errors_name_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field) as info:
        DINOConfig(**{field: value})
    assert repr(value) in str(info.value)


def test_tool_refuses_local_crops_larger_than_the_images(data_root, tmp_path, capsys,
                                                         tool) -> None:
    from ssl_ft.cli import run

    recipe = Path(__file__).resolve().parents[1] / "recipes/pretrain/dino_pneumoniamnist.yaml"
    code = run(tool("pretrain").main, [str(recipe), f"data.root={data_root}",
                                       f"out={tmp_path / 'run'}", "data.limit=64",
                                       "method_args.local_crops=2", "method_args.local_size=40"])
    err = capsys.readouterr().err
    assert code == 2 and "local_size 40" in err and "28 px" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "last.pt").exists()
