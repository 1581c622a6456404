"""Pieces of one fine-tuning epoch: which parameters train, BatchNorm modes, batch augmentation,
and the measurement batches that strategies such as Auto-RGN use (the learning-rate schedule
is the scaffold's: :func:`ssl_ft.scaffold.warmup_cosine`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ssl_ft.finetune.model import FinetuneModel, unit_modules
from ssl_ft.runtime import autocast

__all__ = ["augment_batch", "make_measurer", "set_trainable", "train_mode"]


def set_trainable(model: FinetuneModel, trained: list[int]) -> None:
    """Only the units ``trained`` (and the head) require gradients; the model runs the units
    before the first of them without autograd."""
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    for i in trained:
        for _, p in model.backbone.unit_parameters(model.backbone.units[i]):
            p.requires_grad_(True)
    model.grad_from = min(trained) if trained else len(model.backbone.units)


def train_mode(model: FinetuneModel, trained: list[int], freeze_bn: bool) -> None:
    """Train mode, except that units not trained keep their BatchNorm statistics frozen (eval
    mode) when ``freeze_bn``."""
    model.train()
    if freeze_bn:
        for i in set(range(len(model.backbone.units))) - set(trained):
            for module in unit_modules(model.backbone, i):
                module.eval()


def augment_batch(x: torch.Tensor, how: str) -> torch.Tensor:
    """``none``, ``flip`` (random horizontal flips) or ``crop-flip`` (flips, then one random
    reflect-padded shift of up to 1/8 of the side for the whole batch)."""
    if how == "none":
        return x
    flip = torch.rand(len(x), device=x.device) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    if how == "crop-flip":  # pad by 1/8 of the side (reflect) and crop back at random
        n, _, h, w = x.shape
        pad = max(1, h // 8)
        padded = nn.functional.pad(x, (pad,) * 4, mode="reflect")
        dy, dx = torch.randint(0, 2 * pad + 1, (2,)).tolist()
        x = padded[:, :, dy:dy + h, dx:dx + w]
    return x


def make_measurer(net: nn.Module, x_all: torch.Tensor, y_all: torch.Tensor,
                  loss_fn: nn.Module, seed: int, epoch: int, batch: int, max_value: int,
                  device: torch.device,
                  precision: str) -> Callable[[], None]:
    """``measure()`` for strategies: forward/backward on the next of a seeded series of
    mini-batches of this epoch (gradients accumulate in ``.grad``; no step)."""
    g = torch.Generator().manual_seed(seed * 7_919 + epoch)
    order = torch.randperm(len(x_all), generator=g)
    calls = [0]

    def measure() -> None:
        i = calls[0] * batch % max(1, len(order) - batch + 1)
        calls[0] += 1
        idx = order[i:i + batch]
        x = x_all[idx].to(device).float() / max_value
        with autocast(device, precision):
            loss = loss_fn(net(x).float(), y_all[idx].to(device))
        loss.backward()

    return measure
