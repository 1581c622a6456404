"""Fit a foreign state dict to a model: prefixes, wrappers and ``nn.Sequential`` layouts.

Nobody should strip ``module.`` by hand. :func:`match_state_dict` finds the prefix that makes
the most keys fit the model, drops wrapper components (``_orig_mod.`` of ``torch.compile``,
``_fsdp_wrapped_module.``, ``_checkpoint_wrapped_module.``), maps the child indices of the
lightly-example layout ``nn.Sequential(*list(resnet.children())[:-1])`` (``0.weight``,
``4.0.conv1.weight``) onto the model's child names, and checks every shape::

    state, meta = read_state_dict("simclr.ckpt")
    matched, report = match_state_dict(state, model, ignore=("fc.",))
    model.load_state_dict(matched, strict=False)
    print(report.summary())
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ssl_ft.errors import UserError

__all__ = ["MatchReport", "match_state_dict"]

_WRAPPER_PARTS = frozenset({"_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module"})


@dataclass
class MatchReport:
    """What :func:`match_state_dict` did.

    Attributes:
        prefix: the prefix stripped from the checkpoint keys (``""`` if none), after wrapper
            components such as ``_orig_mod.`` were dropped.
        missing: model keys the checkpoint did not provide (model keys matching ``ignore`` are
            not listed).
        unexpected: checkpoint keys (as stored) that fit no model key.
        ignored: checkpoint keys (as stored) dropped because they match ``ignore``.
        child_map: checkpoint child index -> model child name, when the ``nn.Sequential``
            layout was mapped (e.g. ``{"0": "conv1", "4": "layer1"}``), else empty.
        matched: number of tensors in the returned state dict.
    """

    prefix: str
    missing: list[str]
    unexpected: list[str]
    ignored: list[str]
    child_map: dict[str, str] = field(default_factory=dict)
    matched: int = 0

    def summary(self) -> str:
        """One line: how many tensors fit, the prefix, and what was missing/unexpected/ignored."""
        total = self.matched + len(self.missing)
        parts = [f"matched {self.matched}/{total} model tensors"]
        if self.prefix:
            parts.append(f"stripped prefix {self.prefix!r}")
        if self.child_map:
            parts.append(f"mapped Sequential children {_few([f'{k}->{v}' for k, v in self.child_map.items()], 4)}")
        for name, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                           ("ignored", self.ignored)):
            parts.append(f"{len(keys)} {name}" + (f" ({_few(keys)})" if keys else ""))
        return "; ".join(parts)


def match_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    model: nn.Module,
    *,
    ignore: Sequence[str] = (),
    source: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, torch.Tensor], MatchReport]:
    """Rename the keys of ``state_dict`` so that ``model.load_state_dict(result, strict=False)`` fits.

    Args:
        state_dict: weights from any source (see :func:`ssl_ft.checkpoint.read_state_dict`).
        model: the target. A DDP/DataParallel or ``torch.compile`` wrapper is looked through and
            the returned keys carry its prefix, so ``model.load_state_dict`` works on it as is.
        ignore: key prefixes to drop (``"fc."``, ``"classifier."``; ``"fc"`` means ``"fc."``), tested
            against the stored key and the key after prefix stripping.
        source: name of the checkpoint, used in error messages only.

    Returns:
        The matched tensors (not copied) under the model's key names, and a :class:`MatchReport`.

    Raises:
        UserError: fewer than half of the model's (non-ignored) tensors were found, or a matched
            tensor has the wrong shape; the message names the key and both shapes.
    """
    if isinstance(ignore, str):
        ignore = (ignore,)
    inner, outer = _unwrap(model)
    target = inner.state_dict()
    by_norm: dict[str, str] = {}
    for key in target:
        by_norm.setdefault(_drop_wrappers(key), key)
    children = [name for name, _ in inner.named_children()]
    if any(name.isdigit() for name in children):
        children = []  # the model is itself a Sequential: indices are already its names

    items = []
    for key, value in state_dict.items():
        if type(key) is not str:
            raise TypeError(f"state dict key {key!r} is a {type(key).__name__}, not a str")
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        items.append((key, _drop_wrappers(key), value))

    prefix, use_index = _best_layout([norm for _, norm, _ in items], by_norm, children)

    out: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    ignored: list[str] = []
    child_map: dict[str, str] = {}
    bad_shape: tuple[str, str, tuple[int, ...], tuple[int, ...]] | None = None
    for key, norm, value in items:
        rest = norm[len(prefix):] if norm.startswith(prefix) else None
        name = rest
        if rest is not None and use_index:
            first, _, tail = rest.partition(".")
            if first.isdigit() and tail and int(first) < len(children):
                name = f"{children[int(first)]}.{tail}"
                child_map[first] = children[int(first)]
        if any(_ignored(k, ignore) for k in (key, norm, rest, name) if k is not None):
            ignored.append(key)
            continue
        model_key = by_norm.get(name) if name is not None else None
        if model_key is None or outer + model_key in out:
            unexpected.append(key)
            continue
        want = tuple(target[model_key].shape)
        if tuple(value.shape) != want and bad_shape is None:
            bad_shape = (key, model_key, tuple(value.shape), want)
        out[outer + model_key] = value

    considered = [k for k in target if not _ignored(k, ignore)]
    missing = [outer + k for k in considered if outer + k not in out]
    where = f"checkpoint {source}" if source is not None else "checkpoint"
    arch = type(inner).__name__
    if 2 * (len(considered) - len(missing)) < len(considered):
        found = f"only {len(considered) - len(missing)} of the model's {len(considered)} tensors are in it"
        example = f"the model expects e.g. {missing[0]!r}"
        other = f", the checkpoint has e.g. {unexpected[0]!r}" if unexpected else (
            ", the checkpoint is empty" if not state_dict else "")
        raise UserError(f"{where} does not fit the architecture ({arch}): {found}; {example}{other}")
    if bad_shape is not None:
        key, model_key, have, want = bad_shape
        stored = f" (stored as {key!r})" if key != model_key else ""
        raise UserError(
            f"{where} does not fit the architecture ({arch}): {model_key}{stored} has shape "
            f"{_shape(have)}, the model expects {_shape(want)}"
        )
    report = MatchReport(prefix=prefix, missing=missing, unexpected=unexpected, ignored=ignored,
                         child_map=dict(sorted(child_map.items(), key=lambda kv: int(kv[0]))),
                         matched=len(out))
    return out, report


def _best_layout(keys: list[str], model_keys: Mapping[str, str], children: list[str]) -> tuple[str, bool]:
    """The (prefix, map child indices?) under which most ``keys`` are model keys.

    Every prefix made of leading dot-components of a key is a candidate. Ties go to no index
    mapping, then to the shorter prefix.
    """
    counts: Counter[tuple[str, bool]] = Counter()
    for key in keys:
        parts = key.split(".")
        for i in range(len(parts)):
            prefix = "".join(p + "." for p in parts[:i])
            rest = parts[i:]
            if ".".join(rest) in model_keys:
                counts[(prefix, False)] += 1
            if children and len(rest) > 1 and rest[0].isdigit() and int(rest[0]) < len(children):
                if ".".join([children[int(rest[0])], *rest[1:]]) in model_keys:
                    counts[(prefix, True)] += 1
    if not counts:
        return "", False
    return max(counts, key=lambda c: (counts[c], not c[1], -len(c[0])))


def _unwrap(model: nn.Module) -> tuple[nn.Module, str]:
    """Look through DDP/DataParallel (``module.``) and torch.compile (``_orig_mod.``) wrappers."""
    outer = ""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model, outer = model.module, outer + "module."
        elif type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model, outer = model._orig_mod, outer + "_orig_mod."
        else:
            return model, outer


def _drop_wrappers(key: str) -> str:
    parts = key.split(".")
    kept = [p for p in parts[:-1] if p not in _WRAPPER_PARTS]
    return ".".join([*kept, parts[-1]])


def _ignored(key: str, ignore: Sequence[str]) -> bool:
    for pattern in ignore:
        stem = pattern.rstrip(".")
        if stem and (key == stem or key.startswith(stem + ".")):
            return True
    return False


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def _few(items: Sequence[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n})" if len(items) > n else "")
