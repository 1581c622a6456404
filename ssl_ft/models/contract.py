"""The backbone contract: what the rest of ssl_ft may ask of a backbone, written down.

Every backbone that :func:`~ssl_ft.models.create_backbone` returns (the torchvision families'
:class:`~ssl_ft.models.Backbone` and timm's :class:`~ssl_ft.models.timm_adapter.TimmBackbone`)
is an ``nn.Module`` that meets :class:`DepthBackbone`: an ordered list of :class:`UnitSpec`
(the units of the depth map, :mod:`ssl_ft.models.depth`), the parameters and modules of each
unit, pooled features, timm's features API (``forward_intermediates``) and in-place truncation.
SSL methods, the depth map, fine-tuning, probes and fusion use nothing else.

One capability is optional: :class:`SplittableBackbone` adds ``forward_units(x, start, stop)``,
running a slice of the units on the output of the unit before it. The torchvision families have
it (a DenseNet block's running concatenation included); timm's features API can only start at
the input, so timm backbones do not. With it, fine-tuning runs the frozen prefix under
``torch.no_grad()`` and can cache its activations (:mod:`ssl_ft.finetune.prefix_cache`);
without it, the whole backbone runs and autograd skips the frozen parameters.

Both are ``typing.Protocol`` classes, checked with ``isinstance`` (``runtime_checkable``: the
members are present; their signatures are checked by the contract tests,
``tests/test_contracts.py``)::

    >>> bb = create_backbone("resnet18", in_chans=1)
    >>> isinstance(bb, DepthBackbone), isinstance(bb, SplittableBackbone)
    (True, True)
    >>> isinstance(create_backbone("timm:convnext_atto", in_chans=1), SplittableBackbone)
    False
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["DepthBackbone", "SplittableBackbone", "UnitSpec", "missing_members"]


@dataclass(frozen=True)
class UnitSpec:
    """One unit: a name, what makes it (module paths relative to the backbone for the
    torchvision families, parameter names for timm), its stage, its output channels."""

    name: str
    modules: tuple[str, ...]
    stage: int
    out_channels: int


@runtime_checkable
class DepthBackbone(Protocol):
    """A backbone described by its depth units (an ``nn.Module`` besides these members).

    Attributes:
        arch: the ``arch`` it was created as (``resnet50``, ``timm:convnext_atto``).
        family: ``resnet``, ``densenet``, ``vgg`` or ``timm``: picks the default depth rule.
        in_chans: input channels (1 or 3).
        stem_type: ``standard``, ``midres`` or ``lowres``.
        units: the kept units in forward order; :meth:`truncate` shortens it.
    """

    arch: str
    family: str
    in_chans: int
    stem_type: str
    units: list[UnitSpec]

    @property
    def num_features(self) -> int:
        """Width of :meth:`forward`'s pooled output."""
        ...

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(N, num_features)`` of normalised images ``(N, in_chans, H, W)``."""
        ...

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature map after the last kept unit."""
        ...

    def forward_intermediates(self, x: torch.Tensor,
                              indices: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Feature maps after the units numbered ``indices`` (0-based; default every unit),
        shallowest first, as timm's features API names it."""
        ...

    def unit_parameters(self, unit: UnitSpec) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of one unit, names as in the backbone's ``state_dict``; every
        parameter belongs to exactly one unit."""
        ...

    def unit_modules(self, unit: UnitSpec) -> list[nn.Module]:
        """The modules whose training mode (BatchNorm statistics) belongs to one unit."""
        ...

    def truncate(self, keep: int) -> DepthBackbone:
        """Keep the first ``keep`` units, in place (their modules leave the model)."""
        ...


@runtime_checkable
class SplittableBackbone(DepthBackbone, Protocol):
    """A :class:`DepthBackbone` that can run any slice of its units."""

    def forward_units(self, x: torch.Tensor, start: int = 0,
                      stop: int | None = None) -> torch.Tensor:
        """Run units ``start .. stop - 1`` on ``x``, the output of unit ``start - 1`` (the
        input images for ``start = 0``); ``stop`` defaults to every kept unit."""
        ...


def missing_members(obj: object, protocol: type = DepthBackbone) -> list[str]:
    """The members of ``protocol`` that ``obj`` lacks (empty: ``isinstance`` holds), for error
    messages that say what a custom backbone still needs."""
    names = set()
    for cls in protocol.__mro__:
        if cls in (Protocol, object) or not getattr(cls, "_is_protocol", False):
            continue
        names |= set(getattr(cls, "__annotations__", {}))
        names |= {n for n in vars(cls) if not n.startswith("_")}
    return sorted(n for n in names if not hasattr(obj, n))
