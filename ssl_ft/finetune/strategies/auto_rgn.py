"""``auto-rgn``: per-tensor learning rates from the relative gradient norm.

Lee et al., "Surgical Fine-Tuning Improves Adaptation to Distribution Shifts" (ICLR 2023):
RGN = ||grad|| / ||weight|| per parameter tensor signals which layers the new task wants to
change. At the start of every epoch the gradients of the first ``measure_batches`` mini-batches
(no optimiser step) give each backbone tensor the rate ``lr * RGN / max RGN`` (the maximum over
the trainable backbone tensors); the new head trains at ``lr``. A tensor whose weights are all
zero (a BatchNorm bias at random initialisation) has no defined RGN: it trains at ``lr`` and
does not enter the maximum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ssl_ft.errors import UserError
from ssl_ft.finetune.strategies.base import Strategy, register


@dataclass
class AutoRGNConfig:
    measure_batches: int = 2   # mini-batches whose summed gradients measure the RGN


@register
class AutoRGN(Strategy):
    name = "auto-rgn"
    Config = AutoRGNConfig

    def __init__(self, model, selected, epochs, config) -> None:
        super().__init__(model, selected, epochs, config)
        if config.measure_batches < 1:
            raise UserError(f"strategy_args.measure_batches must be >= 1, "
                            f"got {config.measure_batches}")
        self.rgn: dict[str, float] = {}

    def param_groups(self, weight_decay: float) -> list[dict]:
        groups = [{"params": [p], "lr_scale": 1.0, "weight_decay": weight_decay, "name": name}
                  for name, p in self.named_backbone_params()]
        return groups + [self.head_group(weight_decay)]

    def on_epoch_start(self, epoch: int, optimizer: torch.optim.Optimizer,
                       measure: Callable[[], None]) -> dict[str, float]:
        optimizer.zero_grad(set_to_none=True)
        for _ in range(self.config.measure_batches):
            measure()
        rgn = {}
        for name, p in self.named_backbone_params():
            norm = float(p.detach().norm())
            if p.grad is not None and norm > 0:
                rgn[name] = float(p.grad.norm()) / norm
        optimizer.zero_grad(set_to_none=True)
        self.rgn = rgn
        top = max(rgn.values(), default=0.0)
        for group in optimizer.param_groups:
            if group["name"] in rgn:
                group["lr_scale"] = rgn[group["name"]] / top if top > 0 else 0.0
            elif group["name"] != "head":
                group["lr_scale"] = 1.0
        if not rgn:
            return {}
        scales = [v / top for v in rgn.values()] if top > 0 else [0.0]
        return {"rgn_max": top, "rgn_scale_mean": sum(scales) / len(scales)}
