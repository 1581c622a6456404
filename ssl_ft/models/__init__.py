"""Backbones (torchvision, with torchvision's parameter names) and their depth maps."""

from ssl_ft.models.backbones import (
    ARCHS,
    STEMS,
    Backbone,
    UnitSpec,
    check_input_size,
    create_backbone,
    family_of,
    list_archs,
    load_backbone_weights,
    torchvision_model,
)
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
    "DepthMap",
    "Selection",
    "Unit",
    "UnitSpec",
    "check_input_size",
    "create_backbone",
    "family_of",
    "list_archs",
    "load_backbone_weights",
    "parse_layers",
    "parse_percent",
    "torchvision_model",
]
