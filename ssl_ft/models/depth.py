"""The depth map: which units of a backbone lie at which depth, and which of them to train.

Khan & Fang ("Revisiting Fine-Tuning Strategies for Self-supervised Medical Imaging Analysis",
arXiv 2307.10915) fine-tune quarters of a network (0-25, 25-50, 50-75, 75-100 %) and truncate it
(keep 0-75 %). To make such percentages exact, every unit of a backbone
(:class:`~ssl_ft.models.DepthBackbone`) gets a depth position in (0, 100] by one of three rules:

``stage`` (default for ResNet and DenseNet)
    The network's stages split the depth evenly (4 stages: 25 % each; VGG: 5 max-pool stages,
    20 % each); inside a stage the units are spaced evenly and the last one sits at the stage's
    end. The stem belongs to stage 1. For resnet50, ``truncate=75`` ends after ``layer3``.
``block`` (default for VGG: 16 convolutions, 4 a quarter)
    Unit ``i`` of ``N`` sits at ``100 * i / N``.
``param``
    A unit sits at the cumulative share of parameters up to and including it.

``layers="A-B"`` selects the units whose depth lies in ``(A, B]``; ``truncate=P`` keeps the units
at depth ``<= P`` and drops the rest. Kept units outside ``(A, B]`` are frozen. Depths are exact
fractions, so the four quarters always partition the units.

Example::

    >>> dm = DepthMap.from_backbone(create_backbone("resnet50"))
    >>> sel = dm.select(layers="25-50", truncate=75)
    >>> print(sel.table())        # each unit, its depth, params and trained/frozen/dropped
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from ssl_ft.errors import UserError
from ssl_ft.models.contract import DepthBackbone, UnitSpec, missing_members

__all__ = [
    "DEFAULT_RULE",
    "RULES",
    "DepthMap",
    "Selection",
    "Unit",
    "parse_layers",
    "parse_percent",
]

RULES = ("stage", "block", "param")
DEFAULT_RULE = {"resnet": "stage", "densenet": "stage", "vgg": "block", "timm": "stage"}
STATUSES = ("trained", "frozen", "dropped")

_NUMBER = r"(\d+(?:\.\d+)?)"
_RANGE = re.compile(rf"^\s*{_NUMBER}\s*-\s*{_NUMBER}\s*$")


def parse_percent(value: object, what: str = "truncate") -> Fraction:
    """A depth percentage in (0, 100]; a :class:`UserError` names anything else."""
    text = str(value).strip()
    if not re.fullmatch(_NUMBER, text):
        raise UserError(f"{what} {value!r} is not a percentage (expected a number in (0, 100])")
    p = Fraction(text)
    if not 0 < p <= 100:
        raise UserError(f"{what} {value!r} is out of range (expected a number in (0, 100])")
    return p


def parse_layers(value: object) -> tuple[Fraction, Fraction]:
    """Parse ``"A-B"`` with ``0 <= A < B <= 100`` strictly; a :class:`UserError` names bad input."""
    if isinstance(value, tuple | list) and len(value) == 2:
        value = f"{value[0]}-{value[1]}"
    text = str(value)
    m = _RANGE.match(text)
    if not m:
        raise UserError(
            f"layer range {text!r} is not of the form A-B with percentages 0 <= A < B <= 100 "
            "(e.g. 25-50)"
        )
    a, b = Fraction(m.group(1)), Fraction(m.group(2))
    if b > 100:
        raise UserError(f"layer range {text!r} goes past 100 %")
    if a >= b:
        raise UserError(f"layer range {text!r} is empty or reversed (need A < B)")
    return a, b


def _pct(x: Fraction) -> str:
    return f"{float(x):g}"


@dataclass(frozen=True)
class Unit:
    """A unit with its depth position (an exact fraction of 100) and parameter count."""

    index: int
    name: str
    modules: tuple[str, ...]
    stage: int
    depth: Fraction
    params: int
    out_channels: int


@dataclass(frozen=True)
class DepthMap:
    """Ordered units of one backbone with depth positions under one rule."""

    arch: str
    rule: str
    units: tuple[Unit, ...]

    @classmethod
    def from_backbone(cls, backbone: DepthBackbone, rule: str | None = None) -> DepthMap:
        """Depth map of a (not yet truncated) backbone; ``rule=None`` takes the default. A
        ``TypeError`` names what an object that does not meet :class:`DepthBackbone` lacks."""
        if not isinstance(backbone, DepthBackbone):
            raise TypeError(f"{type(backbone).__name__} is not a DepthBackbone: it lacks "
                            f"{', '.join(missing_members(backbone))}")
        if rule is None:
            rule = DEFAULT_RULE[backbone.family]
        if rule not in RULES:
            raise UserError(f"unknown depth unit rule {rule!r}; choose one of {', '.join(RULES)}")
        specs = backbone.units
        params = [sum(p.numel() for _, p in backbone.unit_parameters(u)) for u in specs]
        depths = _depths(specs, params, rule)
        units = tuple(
            Unit(i, s.name, s.modules, s.stage, d, n, s.out_channels)
            for i, (s, d, n) in enumerate(zip(specs, depths, params, strict=True))
        )
        return cls(backbone.arch, rule, units)

    @property
    def total_params(self) -> int:
        return sum(u.params for u in self.units)

    def select(
        self,
        layers: str | tuple[float, float] = "0-100",
        truncate: float | str = 100,
        *,
        allow_empty: bool = False,
    ) -> Selection:
        """Units in ``(A, B]`` are trained, other kept units frozen, units deeper than
        ``truncate`` dropped. Raises :class:`UserError` when nothing is kept, or (unless
        ``allow_empty``) when the range trains no kept unit."""
        a, b = parse_layers(layers)
        p = parse_percent(truncate)
        status: list[str] = []
        for u in self.units:
            if u.depth > p:
                status.append("dropped")
            elif a < u.depth <= b:
                status.append("trained")
            else:
                status.append("frozen")
        if "dropped" in status and status.index("dropped") == 0:
            raise UserError(
                f"truncate {_pct(p)} drops every unit of {self.arch} (by {self.rule}); the first "
                f"unit ends at {float(self.units[0].depth):.1f} %"
            )
        if "trained" not in status and not allow_empty:
            depths = ", ".join(f"{float(u.depth):.1f}" for u in self.units)
            raise UserError(
                f"layers {_pct(a)}-{_pct(b)} select no kept unit of {self.arch} "
                f"(by {self.rule}, truncate {_pct(p)}); unit depths are {depths}"
            )
        return Selection(self, (a, b), p, tuple(status))


@dataclass(frozen=True)
class Selection:
    """The outcome of :meth:`DepthMap.select`: one status per unit."""

    depth_map: DepthMap
    layers: tuple[Fraction, Fraction]
    truncate: Fraction
    status: tuple[str, ...]

    def units_with(self, status: str) -> list[Unit]:
        return [u for u, s in zip(self.depth_map.units, self.status, strict=True) if s == status]

    @property
    def trained(self) -> list[Unit]:
        return self.units_with("trained")

    @property
    def frozen(self) -> list[Unit]:
        return self.units_with("frozen")

    @property
    def dropped(self) -> list[Unit]:
        return self.units_with("dropped")

    @property
    def kept(self) -> list[Unit]:
        return [u for u, s in zip(self.depth_map.units, self.status, strict=True) if s != "dropped"]

    @property
    def trainable_params(self) -> int:
        return sum(u.params for u in self.trained)

    @property
    def layers_str(self) -> str:
        return f"{_pct(self.layers[0])}-{_pct(self.layers[1])}"

    def apply(self, backbone: DepthBackbone) -> DepthBackbone:
        """Truncate ``backbone`` in place and set ``requires_grad`` per unit."""
        if [u.name for u in backbone.units] != [u.name for u in self.depth_map.units]:
            raise ValueError("the backbone was already truncated or is another architecture")
        keep = len(self.kept)
        if keep < len(backbone.units):
            backbone.truncate(keep)
        for unit, status in zip(backbone.units, self.status, strict=False):
            for _, p in backbone.unit_parameters(unit):
                p.requires_grad_(status == "trained")
        return backbone

    def table(self) -> str:
        """A plain-text table: each unit, its stage, depth %, parameters and status."""
        dm = self.depth_map
        width = max(len(u.name) for u in dm.units)
        lines = [
            f"{dm.arch}: depth by {dm.rule}; layers {self.layers_str}, "
            f"truncate {_pct(self.truncate)}",
            f"{'#':>3}  {'unit':<{width}}  stage  depth %  {'params':>11}  status",
        ]
        for u, s in zip(dm.units, self.status, strict=True):
            lines.append(
                f"{u.index + 1:>3}  {u.name:<{width}}  {u.stage:>5}  {float(u.depth):>7.2f}  "
                f"{u.params:>11,}  {s}"
            )
        kept = sum(u.params for u in self.kept)
        lines.append(
            f"trainable backbone parameters: {self.trainable_params:,} of {kept:,} kept "
            f"({dm.total_params:,} in the full backbone); output features: "
            f"{self.kept[-1].out_channels}"
        )
        return "\n".join(lines)


def _depths(specs: list[UnitSpec], params: list[int], rule: str) -> list[Fraction]:
    n = len(specs)
    if rule == "block":
        return [Fraction(100 * (i + 1), n) for i in range(n)]
    if rule == "param":
        total = sum(params)
        if total == 0:
            raise UserError("depth rule 'param' needs units with parameters")
        out, acc = [], 0
        for k in params:
            acc += k
            out.append(Fraction(100 * acc, total))
        # a parameter-free leading unit would sit at 0 and escape every (A, B]; share its depth
        # with the next unit that has parameters
        for i in range(n - 2, -1, -1):
            if out[i] == 0:
                out[i] = out[i + 1]
        return out
    stages = sorted({s.stage for s in specs})
    n_stages = len(stages)
    out = []
    for s in specs:
        members = [x for x in specs if x.stage == s.stage]
        j = members.index(s) + 1
        k = stages.index(s.stage)
        out.append(Fraction(100, n_stages) * (k + Fraction(j, len(members))))
    return out

