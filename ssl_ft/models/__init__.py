"""Backbones (torchvision, with torchvision's parameter names; timm), the contract they meet
(:mod:`ssl_ft.models.contract`) and their depth maps."""

from ssl_ft.models.backbones import (
    ARCHS,
    STEMS,
    Backbone,
    check_input_size,
    create_backbone,
    family_of,
    list_archs,
    load_backbone_weights,
    torchvision_model,
)
from ssl_ft.models.contract import DepthBackbone, SplittableBackbone, UnitSpec, missing_members
from ssl_ft.models.depth import (
    DEFAULT_RULE,
    RULES,
    DepthMap,
    Selection,
    Unit,
    parse_layers,
    parse_percent,
)

__all__ = [
    "ARCHS",
    "DEFAULT_RULE",
    "RULES",
    "STEMS",
    "Backbone",
    "DepthBackbone",
    "DepthMap",
    "Selection",
    "SplittableBackbone",
    "Unit",
    "UnitSpec",
    "check_input_size",
    "create_backbone",
    "family_of",
    "list_archs",
    "load_backbone_weights",
    "missing_members",
    "parse_layers",
    "parse_percent",
    "torchvision_model",
]
