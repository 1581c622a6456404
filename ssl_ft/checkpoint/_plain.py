"""Turn checkpoint contents into types that ``torch.load(weights_only=True)`` reads back.

``meta`` must be JSON-like (it is also written as JSON into exported safetensors files);
``extra`` may hold everything the weights-only unpickler accepts (tensors, tuples, sets, bytes,
dtypes, devices, ...). numpy scalars and arrays are converted; anything else raises ``TypeError``
naming the key path, e.g. ``meta['recipe']['root']``.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import numpy as np
import torch

__all__ = ["plain_backbone", "plain_extra", "plain_meta", "plain_tensor"]

_JSON_SCALARS = (str, int, float, bool, type(None))
# Types, beyond JSON's, that the weights-only unpickler accepts (checked against torch 2.x).
_EXTRA_SCALARS = (bytes, complex, torch.dtype, torch.device)
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def plain_tensor(tensor: torch.Tensor, where: str) -> torch.Tensor:
    """Detach ``tensor``, move it to the CPU and copy it into its own contiguous storage.

    Copying means a view (``big[:10]``) saves 10 numbers, not the storage behind it.
    """
    if tensor.device.type == "meta":
        raise TypeError(f"{where} is a tensor on the 'meta' device and holds no data")
    out = tensor.detach()
    if type(out) is not torch.Tensor:  # Parameter subclasses and other tensor subclasses
        out = out.as_subclass(torch.Tensor)
    if out.layout != torch.strided:  # sparse: no "contiguous"; keep layout, own the storage
        return out.to("cpu").clone()
    out = out.resolve_conj().resolve_neg()
    if out.device.type == "cpu":
        return out.clone(memory_format=torch.contiguous_format)
    return out.to("cpu").contiguous()


def plain_backbone(backbone: Mapping[str, torch.Tensor] | torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copy a backbone state dict to CPU tensors; strip DDP/compile wrappers shared by all keys."""
    if isinstance(backbone, torch.nn.Module):
        backbone = backbone.state_dict()
    if not isinstance(backbone, Mapping):
        raise TypeError(f"backbone must be a mapping of str to torch.Tensor, got {type(backbone).__name__}")
    out: dict[str, torch.Tensor] = {}
    for key, value in backbone.items():
        if type(key) is not str:
            raise TypeError(f"backbone key {key!r} is a {type(key).__name__}, not a str")
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"backbone[{key!r}] is a {type(value).__name__}, not a torch.Tensor")
        out[key] = plain_tensor(value, f"backbone[{key!r}]")
    if not out:
        raise ValueError("backbone is empty: a checkpoint needs at least one tensor")
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) and len(k) > len(prefix) for k in out):
                out = {k[len(prefix):]: v for k, v in out.items()}
                stripped = True
    return out


def plain_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Copy ``meta`` into JSON types (tuples become lists, numpy values become Python values)."""
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a mapping, got {type(meta).__name__}")
    return _convert(meta, "meta", json_only=True, active=set())


def plain_extra(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """Copy ``extra`` into weights-only-loadable types; tensors go through :func:`plain_tensor`."""
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise TypeError(f"extra must be a mapping, got {type(extra).__name__}")
    return _convert(extra, "extra", json_only=False, active=set())


def _convert(obj: Any, where: str, *, json_only: bool, active: set[int]) -> Any:
    kind = type(obj)
    if kind in _JSON_SCALARS:
        return obj
    if isinstance(obj, np.generic):
        return _convert(obj.item(), where, json_only=json_only, active=active)
    if not json_only and (kind in _EXTRA_SCALARS or kind is torch.Size):
        return obj
    if isinstance(obj, torch.Tensor):
        if json_only:
            raise TypeError(
                f"{where} is a torch.Tensor; metadata must be JSON-like "
                "(use .tolist() or .item(), or put tensors in extra)"
            )
        return plain_tensor(obj, where)
    if isinstance(obj, np.ndarray):
        if json_only or obj.dtype.kind not in "biufc":
            return _convert(obj.tolist(), where, json_only=json_only, active=active)
        return torch.from_numpy(np.array(obj, dtype=obj.dtype.newbyteorder("="), order="C"))
    if isinstance(obj, (Mapping, list)) or kind in (tuple, set):
        if id(obj) in active:
            raise TypeError(f"{where} contains itself (a reference cycle)")
        active.add(id(obj))
        try:
            return _convert_container(obj, where, json_only=json_only, active=active)
        finally:
            active.discard(id(obj))
    raise TypeError(_reject_message(obj, where, json_only))


def _convert_container(obj: Any, where: str, *, json_only: bool, active: set[int]) -> Any:
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = {}
        for key, value in obj.items():
            if json_only:
                key = key.item() if isinstance(key, np.generic) else key
                if type(key) is not str:
                    raise TypeError(
                        f"{where} has the key {key!r} of type {type(key).__name__}; "
                        "metadata keys must be str"
                    )
            else:
                key = _convert_key(key, where)
            out[key] = _convert(value, f"{where}[{key!r}]", json_only=json_only, active=active)
        return out
    if isinstance(obj, set):
        if json_only:
            raise TypeError(f"{where} is a set; metadata must be JSON-like (use a sorted list)")
        return {_convert_key(item, where) for item in obj}
    items = [
        _convert(item, f"{where}[{i}]", json_only=json_only, active=active)
        for i, item in enumerate(obj)
    ]
    return tuple(items) if isinstance(obj, tuple) and not json_only else items


def _convert_key(key: Any, where: str) -> Any:
    if isinstance(key, np.generic):
        key = key.item()
    if type(key) in _JSON_SCALARS or type(key) in _EXTRA_SCALARS:
        return key
    if type(key) is tuple:
        return tuple(_convert_key(part, where) for part in key)
    raise TypeError(
        f"{where} has the key {key!r} of type {type(key).__name__}, "
        "which a checkpoint cannot hold safely"
    )


def _reject_message(obj: Any, where: str, json_only: bool) -> str:
    name = type(obj).__qualname__
    module = type(obj).__module__
    if module not in ("builtins", "__main__"):
        name = f"{module}.{name}"
    allowed = (
        "dict, list, str, int, float, bool or None"
        if json_only
        else "dict, list, tuple, set, str, bytes, int, float, complex, bool, None, torch.Tensor, "
        "torch.dtype or torch.device"
    )
    if isinstance(obj, PurePath):
        hint = "; use str(path)"
    elif isinstance(obj, enum.Enum):
        hint = "; use .value"
    elif dataclasses.is_dataclass(obj) or (isinstance(obj, tuple) and hasattr(obj, "_asdict")):
        hint = "; convert it to a dict first"
    elif callable(getattr(obj, "state_dict", None)):
        hint = "; store its .state_dict() instead"
    elif isinstance(obj, (datetime.date, datetime.time)):
        hint = "; use .isoformat()"
    elif json_only and isinstance(obj, _EXTRA_SCALARS):
        hint = "; put it in extra or convert it to str"
    else:
        hint = ""
    section = "metadata" if json_only else "extra state"
    return f"{where} is a {name}, which checkpoint {section} cannot hold: use {allowed}{hint}"
