"""The interface every fine-tuning strategy implements, and the registry.

A strategy decides, given the units the depth map selected (``--layers``/``--truncate``):

* which of those units train in each epoch (:meth:`Strategy.trained_units`; the head always
  trains);
* the optimiser's parameter groups with a learning-rate multiplier each (``lr_scale``);
* an extra loss term (:meth:`Strategy.penalty`), e.g. L2-SP's pull towards the pretrained weights;
* work at the start of an epoch (:meth:`Strategy.on_epoch_start`), e.g. Auto-RGN's measurement;
* whether the head starts as the converged linear probe of the frozen features
  (``fits_probe``: ``lp``, ``lp-ft``) and how many epochs of optimiser steps follow
  (:meth:`Strategy.train_epochs`; ``lp``: none);
* the phases of the run: the cosine learning-rate schedule restarts at each phase.

A new strategy is one small module with a subclass decorated by :func:`register`, plus a test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ssl_ft.errors import UserError

__all__ = ["STRATEGIES", "NoConfig", "Strategy", "get_strategy", "register"]

STRATEGIES: dict[str, type[Strategy]] = {}


@dataclass
class NoConfig:
    """A strategy without arguments."""


class Strategy:
    """Base class: plain fine-tuning of the selected units at one learning rate.

    Args:
        model: the :class:`~ssl_ft.finetune.model.FinetuneModel` (truncated, weights loaded).
        selected: indices of the kept backbone units that ``--layers`` selected for training.
        epochs: length of the run.
        config: an instance of the subclass's ``Config`` dataclass (``strategy_args``).
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = NoConfig
    #: whether the selection may train no backbone unit (linear probing)
    allow_empty_selection: ClassVar[bool] = False
    #: whether the optimiser's weight decay applies (SP strategies replace it by a penalty)
    uses_weight_decay: ClassVar[bool] = True
    #: whether the head is first fitted as the converged logistic probe of the frozen features
    #: (:func:`ssl_ft.features.fit_linear_head`, ``config.c_grid``) before any optimiser step
    fits_probe: ClassVar[bool] = False

    def __init__(self, model: nn.Module, selected: list[int], epochs: int, config: Any) -> None:
        self.model = model
        self.selected = list(selected)
        self.epochs = epochs
        self.config = config

    # ---- which units train when --------------------------------------------------------------
    def train_epochs(self) -> int:
        """How many epochs of optimiser steps the run takes (``lp``: none, the probe is all)."""
        return self.epochs

    def trained_units(self, epoch: int) -> list[int]:
        """Indices of the backbone units trained in ``epoch`` (0-based)."""
        return list(self.selected)

    def keeps_bn_statistics(self) -> bool:
        """Whether every unit, trained ones included, keeps its BatchNorm running statistics
        (eval-mode normalisation) while training; by default only frozen units do."""
        return False

    def phases(self) -> list[tuple[int, int]]:
        """``[(first_epoch, end_epoch), ...]``; the learning-rate schedule restarts at each."""
        return [(0, self.epochs)]

    def phase_name(self, epoch: int) -> str:
        return self.name

    # ---- optimiser ----------------------------------------------------------------------------
    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Groups over every parameter that may train in any epoch: one for the selected units
        (``lr_scale`` 1) and one for the head."""
        wd = weight_decay if self.uses_weight_decay else 0.0
        params = [p for i in self.selected for _, p in self.unit_params(i)]
        groups = [{"params": params, "lr_scale": 1.0, "weight_decay": wd, "name": "backbone"}]
        return [g for g in groups if g["params"]] + [self.head_group(wd)]

    def head_group(self, weight_decay: float) -> dict[str, Any]:
        return {"params": list(self.model.head.parameters()), "lr_scale": 1.0,
                "weight_decay": weight_decay, "name": "head"}

    def unit_params(self, index: int) -> list[tuple[str, nn.Parameter]]:
        backbone = self.model.backbone
        return backbone.unit_parameters(backbone.units[index])

    def named_backbone_params(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of the selected units, names as in the backbone state dict."""
        for i in self.selected:
            yield from self.unit_params(i)

    # ---- hooks --------------------------------------------------------------------------------
    def penalty(self) -> torch.Tensor | None:
        """An extra term added to the loss (None: nothing)."""
        return None

    def on_epoch_start(self, epoch: int, optimizer: torch.optim.Optimizer,
                       measure: Callable[[], None]) -> dict[str, float]:
        """Called before each epoch's first step. ``measure()`` runs one forward/backward pass
        on the next measurement batch (gradients left in ``.grad``, no optimiser step).
        Returns scalars to log."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a strategy available by its ``name``."""
    if not cls.name or cls.name in STRATEGIES:
        raise ValueError(f"strategy name {cls.name!r} is empty or taken")
    STRATEGIES[cls.name] = cls
    return cls


def get_strategy(name: str) -> type[Strategy]:
    if name not in STRATEGIES:
        raise UserError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]
