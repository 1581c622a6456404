"""Any timm model with a features API (``forward_intermediates``) as a depth-mapped backbone.

timm (Wightman, "PyTorch Image Models") describes a network's feature stages in
``model.feature_info``; ``forward_intermediates`` returns their outputs and
``prune_intermediate_layers`` cuts the network after one of them. :class:`TimmBackbone` turns
each feature stage into one *unit* of the depth map, so ``--layers``/``--truncate`` work on
ConvNeXt, EfficientNet, RegNet, ... exactly as on the torchvision families, only at stage
granularity. Its ``state_dict`` keys are timm's own, so ``timm.create_model(name)`` loads them
with ``strict=False`` (only the classifier is missing).

    >>> bb = create_backbone("timm:convnext_atto", in_chans=1)
    >>> [u.name for u in bb.units]
    ['stages.0', 'stages.1', 'stages.2', 'stages.3']

A unit's parameters are those that pruning the network after that stage keeps and pruning it
after the previous stage drops (the stem counts with the first stage).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from ssl_ft.errors import UserError
from ssl_ft.models.contract import UnitSpec

__all__ = ["TimmBackbone", "create_timm_backbone"]


class TimmBackbone(nn.Module):
    """A timm model as a :class:`~ssl_ft.models.DepthBackbone` (the backbone contract). It has
    no ``forward_units`` (timm's features API starts at the input), so it is not a
    :class:`~ssl_ft.models.SplittableBackbone`."""

    family = "timm"

    def __init__(self, model: nn.Module, arch: str, in_chans: int, stem: str) -> None:
        super().__init__()
        object.__setattr__(self, "model", model)  # not a child: keep timm's key names
        for name, child in model.named_children():
            self.add_module(name, child)
        for name, param in model.named_parameters(recurse=False):
            self.register_parameter(name, param)
        self.arch, self.in_chans, self.stem_type = arch, in_chans, stem
        info = model.feature_info
        names = [f["module"] for f in info]
        owners = _stage_parameters(model, len(names))
        self._n_units = len(names)
        self.units: list[UnitSpec] = [
            UnitSpec(name, tuple(owners[i]), i + 1, int(info[i]["num_chs"]))
            for i, name in enumerate(names)
        ]

    @property
    def num_features(self) -> int:
        """Width of :meth:`forward`'s output (timm's ``num_features`` for the whole network,
        e.g. EfficientNet's 1280-channel ``conv_head``)."""
        if len(self.units) == self._n_units:
            return int(self.model.num_features)
        return self.units[-1].out_channels

    def unit_parameters(self, unit: UnitSpec) -> list[tuple[str, nn.Parameter]]:
        params = dict(self.model.named_parameters())
        return [(name, params[name]) for name in unit.modules]

    def unit_modules(self, unit: UnitSpec) -> list[nn.Module]:
        """The modules that own the unit's parameters (their BatchNorm statistics included)."""
        owners = {name.rpartition(".")[0] for name in unit.modules}
        return [self.model.get_submodule(path) for path in sorted(owners)]

    def forward_intermediates(self, x: torch.Tensor,
                              indices: Sequence[int] | None = None) -> list[torch.Tensor]:
        wanted = sorted(set(range(len(self.units)) if indices is None else indices))
        if not wanted:
            return []
        outs = self.model.forward_intermediates(x, indices=wanted, intermediates_only=True)
        return list(outs)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_intermediates(x, [len(self.units) - 1])[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features: timm's own pooling and head norm for the whole network, global
        average pooling of the last kept stage for a truncated one."""
        if len(self.units) == self._n_units:
            return self.model(x)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.forward_features(x), 1), 1)

    def truncate(self, keep: int) -> TimmBackbone:
        """Keep the first ``keep`` stages (in place)."""
        if not 1 <= keep <= len(self.units):
            raise ValueError(f"keep must be in [1, {len(self.units)}], got {keep}")
        if keep < len(self.units):  # the final norm goes with the last stage
            self.model.prune_intermediate_layers(indices=[keep - 1], prune_head=True,
                                                 prune_norm=True)
        for name in list(self._modules):
            del self._modules[name]
        for name, child in self.model.named_children():
            self.add_module(name, child)
        self.units = self.units[:keep]
        return self


def _stage_parameters(model: nn.Module, n: int) -> list[list[str]]:
    """Names of the parameters that each feature stage adds (stem with the first)."""
    kept: list[set[str]] = []
    for k in range(1, n + 1):
        pruned = copy.deepcopy(model)
        pruned.prune_intermediate_layers(indices=[k - 1], prune_head=True, prune_norm=True)
        kept.append({name for name, _ in pruned.named_parameters()})
    order = [name for name, _ in model.named_parameters()]
    out, seen = [], set()
    for k, names in enumerate(kept):
        if k == n - 1:  # the last stage also owns what pruning never removes (final norm)
            names = {name for name in order if name not in seen}
        out.append([name for name in order if name in names and name not in seen])
        seen |= names
    return out


def create_timm_backbone(name: str, *, in_chans: int, stem: str, weights: str) -> TimmBackbone:
    """``timm.create_model(name, num_classes=0, in_chans=...)`` as a :class:`TimmBackbone`.

    ``weights="imagenet"`` uses timm's pretrained weights (downloaded by timm from its hub);
    other paths go through :func:`ssl_ft.models.load_backbone_weights`.
    """
    import timm

    if stem != "standard":
        raise UserError(f"stem {stem!r} is only available for torchvision backbones")
    if name not in timm.list_models():
        raise UserError(f"unknown timm model {name!r} (see timm.list_models())")
    model = timm.create_model(name, pretrained=weights == "imagenet", num_classes=0,
                              in_chans=in_chans)
    if not hasattr(model, "forward_intermediates") or not hasattr(model, "feature_info"):
        raise UserError(f"timm model {name!r} has no forward_intermediates features API")
    return TimmBackbone(model, f"timm:{name}", in_chans, stem)
