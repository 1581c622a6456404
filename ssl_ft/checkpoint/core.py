"""Self-describing checkpoints: save, load, read foreign state dicts, export to safetensors.

A checkpoint file is ``torch.save`` of a plain dict::

    {"format": "ssl_ft.checkpoint", "format_version": 1,
     "meta": {"method": ..., "arch": ..., ..., "versions": {...}, "created": "2024-05-01T12:00:00+02:00"},
     "backbone": {"conv1.weight": Tensor, ...},   # torchvision names, no prefix
     "extra": {"optimizer": {...}, "queue": Tensor, ...}}

It holds only types that ``torch.load(path, weights_only=True)`` accepts, so loading never runs
code from the file, and a plain torchvision model loads the backbone directly::

    ckpt = load_checkpoint("run/checkpoint.pt")
    model = torchvision.models.resnet18(num_classes=2)
    model.load_state_dict(ckpt.backbone, strict=False)   # only fc.* missing
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from ssl_ft.checkpoint._files import (
    atomic_write,
    check_file,
    is_safetensors,
    load_safetensors,
    load_torch,
)
from ssl_ft.checkpoint._plain import plain_backbone, plain_extra, plain_meta
from ssl_ft.errors import UserError
from ssl_ft.finite import first_non_finite

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "REQUIRED_META",
    "Checkpoint",
    "export_safetensors",
    "library_versions",
    "load_checkpoint",
    "read_state_dict",
    "save_checkpoint",
]

FORMAT = "ssl_ft.checkpoint"
FORMAT_VERSION = 1
REQUIRED_META = (
    "method", "arch", "in_chans", "image_size", "stem", "normalization", "recipe",
    "data_fingerprint", "epoch",
)
# Where wrapped state dicts live: Lightning, timm/DeiT/MAE, DDP dumps, SSL repos (DINO, MoCo).
_WRAPPER_KEYS = (
    "state_dict", "model", "module", "net", "backbone", "teacher", "student",
    "model_state_dict", "encoder", "network", "state_dict_ema", "model_ema",
)
_LIBRARIES = ("torch", "torchvision", "ssl_ft", "lightly", "monai", "numpy", "timm")

PathLike = str | os.PathLike[str]


def library_versions() -> dict[str, str]:
    """Versions of Python and of the installed libraries that shape a checkpoint.

    Keys: ``python`` and those of ``torch, torchvision, ssl_ft, lightly, monai, numpy, timm`` that
    are installed. Nothing is imported to find them (lightly and MONAI take seconds to import).
    """
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None) if module is not None else None
        if version is None and importlib.util.find_spec(name) is not None:
            try:
                version = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                version = None
        if version is not None:
            versions[name] = str(version)
    return versions


@dataclass(repr=False)
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: the file it was read from.
        meta: JSON-like metadata: :data:`REQUIRED_META` plus ``versions`` and ``created``.
        backbone: torchvision-style state dict without prefix (``conv1.weight``, ...).
        extra: everything else that was saved (optimizer/scheduler states, SSL heads, queues,
            RNG states ...); empty for a checkpoint read from an exported safetensors file.
    """

    path: Path
    meta: dict[str, Any]
    backbone: dict[str, torch.Tensor]
    extra: dict[str, Any]

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={self.meta.get(k)!r}" for k in ("method", "arch", "epoch"))
        return (
            f"Checkpoint(path={str(self.path)!r}, {fields}, tensors={len(self.backbone)}, "
            f"extra={sorted(map(str, self.extra))})"
        )


def save_checkpoint(
    path: PathLike,
    backbone: Mapping[str, torch.Tensor] | torch.nn.Module,
    meta: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically and return its path.

    Args:
        path: target file; parent directories are created. A previous file there stays intact
            until the new one is complete (temp file + fsync + rename + directory fsync).
        backbone: the backbone's state dict (or the module itself) with torchvision key names;
            a ``module.`` / ``_orig_mod.`` prefix shared by all keys (DDP, torch.compile) is
            stripped. Tensors are detached and copied to contiguous CPU storage.
        meta: must contain every key of :data:`REQUIRED_META`; JSON-like values only (tuples are
            stored as lists, numpy scalars/arrays as Python numbers/lists). ``versions`` and
            ``created`` are set here.
        extra: optional weights-only-safe state: dicts, lists, tuples, sets, str, bytes, numbers,
            bool, None, tensors, dtypes, devices (numpy arrays become tensors).

    Raises:
        ValueError: ``meta`` lacks a required key (a programming error), or ``backbone`` is empty.
        TypeError: a value that ``torch.load(weights_only=True)`` could not read; the message
            names its key path, e.g. ``meta['recipe']['root']``.
        UserError: the file cannot be written (a directory, no space, no permission).

    Example:
        >>> save_checkpoint("run/last.pt", model.backbone.state_dict(),
        ...                 {**meta, "epoch": epoch}, {"optimizer": opt.state_dict()})
    """
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a mapping, got {type(meta).__name__}")
    for key in REQUIRED_META:
        if key not in meta:
            raise ValueError(f"checkpoint meta lacks the required key {key!r} (required: {', '.join(REQUIRED_META)})")
    stored_meta = plain_meta(meta)
    stored_meta["versions"] = library_versions()
    stored_meta["created"] = datetime.now().astimezone().isoformat(timespec="seconds")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": stored_meta,
        "backbone": plain_backbone(backbone),
        "extra": plain_extra(extra),
    }
    return atomic_write(path, lambda file: torch.save(payload, file))


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> Checkpoint:
    """Load an ssl_ft checkpoint (or a safetensors file exported from one) without unpickling code.

    Raises:
        UserError: the file is missing, unreadable, truncated, not an ssl_ft checkpoint (use
            :func:`read_state_dict` for plain state dicts), from a newer ssl_ft, or holds a NaN
            or infinity in any tensor (the message names the tensor).
    """
    p = check_file(path)
    if is_safetensors(p):
        tensors, meta = load_safetensors(p, map_location)
        if meta is None:
            raise UserError(
                f"{p} is not an ssl_ft checkpoint (a safetensors file without ssl_ft metadata); "
                "read_state_dict loads plain weights"
            )
        _check_meta(meta, p)
        _check_finite(tensors, p)
        return Checkpoint(path=p, meta=meta, backbone=tensors, extra={})
    obj = load_torch(p, map_location)
    if not _is_ours(obj):
        raise UserError(
            f"{p} is not an ssl_ft checkpoint ({_describe(obj)}); "
            "read_state_dict loads plain and wrapped state dicts"
        )
    meta, backbone, extra = _unpack(obj, p)
    return Checkpoint(path=p, meta=meta, backbone=backbone, extra=extra)


def read_state_dict(
    path: PathLike, map_location: Any = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Weights from any common checkpoint file, and the ssl_ft metadata if there is one.

    Accepts an ssl_ft checkpoint (returns its backbone and meta); a plain state dict saved with
    ``torch.save`` (torchvision, timm); a dict wrapping one under ``state_dict`` (Lightning),
    ``model``, ``module``, ``net``, ``backbone``, ``teacher``, ``student`` (and a few more; the
    first that is a str -> Tensor mapping wins, one level of nesting is searched); a
    ``.safetensors`` file (meta from its ``ssl_ft`` metadata, else ``None``). Keys are returned
    as stored: :func:`ssl_ft.checkpoint.match_state_dict` resolves prefixes.
    Always ``weights_only=True``; errors are :class:`UserError` as in :func:`load_checkpoint`.
    """
    p = check_file(path)
    if is_safetensors(p):
        tensors, meta = load_safetensors(p, map_location)
        _check_finite(tensors, p)
        return tensors, meta
    obj = load_torch(p, map_location)
    if _is_ours(obj):
        meta, backbone, _ = _unpack(obj, p)
        return backbone, meta
    found = _find_state_dict(obj)
    if found is None:
        raise UserError(f"no state dict found in {p} ({_describe(obj)})")
    _check_finite(found, p)
    return found, None


def export_safetensors(checkpoint: Checkpoint | PathLike, out_path: PathLike) -> Path:
    """Write the backbone weights of a checkpoint to a ``.safetensors`` file, atomically.

    ``checkpoint`` is a loaded :class:`Checkpoint` (``export_safetensors(load_checkpoint(p),
    out)``) or the path of any file :func:`read_state_dict` accepts (one without ssl_ft meta gets
    no ``"ssl_ft"`` entry). The meta goes as JSON into the safetensors metadata under
    ``"ssl_ft"`` (``"format": "pt"`` is set too, as Hugging Face tools expect). Returns
    ``out_path``.
    """
    from safetensors.torch import save as safetensors_bytes

    if isinstance(checkpoint, Checkpoint):
        state, meta = checkpoint.backbone, checkpoint.meta
    elif isinstance(checkpoint, str | os.PathLike):
        state, meta = read_state_dict(checkpoint)
    else:
        raise TypeError(f"export_safetensors takes a Checkpoint or a path, not "
                        f"{type(checkpoint).__name__}")
    tensors = {
        key: value.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        for key, value in state.items()
    }
    metadata = {"format": "pt"}
    if meta is not None:
        metadata["ssl_ft"] = json.dumps(meta)
        metadata["ssl_ft_format_version"] = str(FORMAT_VERSION)
    data = safetensors_bytes(tensors, metadata=metadata)
    return atomic_write(out_path, lambda file: file.write(data))


def _is_ours(obj: Any) -> bool:
    return isinstance(obj, Mapping) and obj.get("format") == FORMAT


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(type(k) is str and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _find_state_dict(obj: Any, depth: int = 0) -> dict[str, torch.Tensor] | None:
    if _is_state_dict(obj):
        return obj if isinstance(obj, dict) else dict(obj)
    if isinstance(obj, Mapping) and depth < 2:
        for key in _WRAPPER_KEYS:
            if key in obj:
                found = _find_state_dict(obj[key], depth + 1)
                if found is not None:
                    return found
    return None


def _describe(obj: Any) -> str:
    """What a loaded object looks like, for error messages."""
    if _is_state_dict(obj):
        return f"it is a plain state dict of {len(obj)} tensors"
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if key in obj and _find_state_dict(obj[key], 1) is not None:
                return f"it holds a state dict under {key!r}"
        keys = [repr(k) for k in list(obj)[:6]]
        more = ", ..." if len(obj) > 6 else ""
        return f"top-level keys: {', '.join(keys)}{more}" if keys else "it is an empty dict"
    return f"it holds a {type(obj).__name__}"


def _unpack(obj: Mapping[str, Any], path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    version = obj.get("format_version")
    if type(version) is not int or version < 1:
        raise UserError(f"cannot read checkpoint {path}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise UserError(
            f"checkpoint {path} has format version {version}, newer than this ssl_ft reads "
            f"({FORMAT_VERSION}); upgrade ssl_ft"
        )
    meta, backbone, extra = obj.get("meta"), obj.get("backbone"), obj.get("extra", {})
    if not isinstance(meta, dict):
        raise UserError(f"cannot read checkpoint {path}: its 'meta' is missing or not a dict")
    if not _is_state_dict(backbone):
        raise UserError(f"cannot read checkpoint {path}: its 'backbone' is not a str -> tensor dict")
    if not isinstance(extra, dict):
        raise UserError(f"cannot read checkpoint {path}: its 'extra' is not a dict")
    _check_meta(meta, path)
    _check_finite(backbone, path)
    _check_finite(extra, path, "extra.")
    return meta, dict(backbone), extra


def _check_finite(tensors: Any, path: Path, prefix: str = "") -> None:
    """Refuse a checkpoint that holds a NaN or infinity (a diverged run's weights)."""
    found = first_non_finite(tensors, prefix)
    if found is not None:
        raise UserError(f"checkpoint {path} holds {found[1]} values in {found[0]}: it comes "
                        "from a diverged run and cannot be used")


def _check_meta(meta: Mapping[str, Any], path: Path) -> None:
    for key in REQUIRED_META:
        if key not in meta:
            raise UserError(f"cannot read checkpoint {path}: its metadata lacks {key!r}")
