"""Typed recipes: YAML files validated against dataclasses, with ``key=value`` overrides.

A recipe is a YAML mapping whose keys mirror a dataclass tree (for example
:class:`ssl_ft.pretrain.PretrainConfig`). Loading checks every key and type and raises
:class:`~ssl_ft.errors.UserError` with the file and the dotted key on the first mistake:

    >>> cfg = load_recipe("recipes/pretrain/simclr_pneumoniamnist.yaml", PretrainConfig,
    ...                   overrides=["train.epochs=1", "data.limit=256", "out=/tmp/run"])

Overrides are ``dotted.key=value``; the value is parsed as YAML (``1``, ``0.5``, ``true``,
``null``, ``[1, 2]``, ``abc``). A float key also takes the numbers YAML 1.1 leaves as strings
(``lr: 1e6``, ``1.0e-3``); NaN and infinity are refused. An empty recipe file is refused (write
``{}`` to run every default). :func:`to_dict` gives the resolved recipe back as plain data, which
is what run folders and checkpoints store.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ssl_ft.errors import UserError

__all__ = ["apply_overrides", "from_dict", "load_recipe", "parse_override", "to_dict"]

T = TypeVar("T")
# numbers YAML 1.1 leaves as strings: 1e6, 1.0e6 (no dot, or no sign in the exponent); nan/inf
# (then refused as not finite)
_NUMBER = re.compile(r"[-+]?((\d+\.?\d*|\.\d+)[eE][-+]?\d+|nan|inf|infinity)", re.I)


def to_dict(cfg: Any) -> Any:
    """A dataclass tree as plain dicts/lists/scalars (safe for YAML, JSON and checkpoints)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, list | tuple):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, tuple, Sequence):
        return "a list"
    if origin in (dict, Mapping):
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (ints to floats...)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = UserError(
        f"{where}: {key} = {value!r} has the wrong type (expected {_type_name(tp)})"
    )
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, where)
            except UserError:
                continue
        raise bad
    if origin is typing.Literal:
        if value in args:
            return value
        raise UserError(
            f"{where}: {key} = {value!r} is not allowed (choose one of "
            f"{', '.join(repr(a) for a in args)})"
        )
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise bad
        return from_dict(tp, value, where=where, prefix=f"{key}.")
    if origin in (list, Sequence) or tp is list:
        if not isinstance(value, list | tuple):
            raise bad
        inner = args[0] if args else Any
        return [_convert(v, inner, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value))
        if len(value) != len(args):
            raise UserError(f"{where}: {key} = {value!r} needs {len(args)} values")
        return tuple(_convert(v, a, f"{key}[{i}]", where) for i, (v, a) in
                     enumerate(zip(value, args, strict=True)))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise bad
        return dict(value)
    if tp is float:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e6 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        if not math.isfinite(value):
            raise UserError(f"{where}: {key} = {value!r} must be a finite number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise bad


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "recipe",
              prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    if not isinstance(data, Mapping):
        raise UserError(f"{where}: {prefix.rstrip('.') or 'the recipe'} must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise UserError(f"{where}: unknown key {prefix}{key!s} (known here: {known})")
    kwargs = {}
    for name in fields:
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], prefix + name, where)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, UserError):
            raise UserError(f"{where}: {exc}") from None
        text = str(exc)  # a __post_init__ message may name the key with its section already
        raise UserError(f"{where}: {'' if text.startswith(prefix) else prefix}{text}") from None
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=3"`` -> ``(["train", "epochs"], 3)``; the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not p for p in key.strip().split(".")):
        raise UserError(f"override {text!r} is not of the form key=value (e.g. train.epochs=1)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set each ``dotted.key=value`` in a nested dict (creating mappings on the way)."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"override {text!r}: {part} is not a mapping")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file is a :class:`UserError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"recipe file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"recipe {path} is not valid YAML{line}") from None
    if data is None:
        raise UserError(f"recipe {path} is empty; give at least one key (an empty mapping {{}} "
                        "runs every default)")
    if not isinstance(data, dict):
        raise UserError(f"recipe {path} must be a mapping of keys, not {type(data).__name__}")
    return data


def load_recipe(
    path: str | os.PathLike | None,
    cls: type[T],
    overrides: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> T:
    """Load a YAML recipe (or start from ``defaults`` when ``path`` is None), apply the
    overrides, and validate the result against ``cls``."""
    data: dict[str, Any] = dict(defaults or {})
    where = "command line"
    if path is not None:
        data.update(read_yaml(path))
        where = str(path)
    apply_overrides(data, overrides)
    return from_dict(cls, data, where=where)
