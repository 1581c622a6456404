"""Checkpoints: self-describing, atomically written, loaded without unpickling code.

* :func:`save_checkpoint` / :func:`load_checkpoint`: backbone weights (torchvision names) plus
  metadata (:data:`REQUIRED_META`, library versions, creation time) plus any weights-only-safe
  extra state (optimizer, scheduler, SSL heads, queues, RNG states).
* :func:`read_state_dict`: weights from ssl_ft checkpoints, plain torchvision/timm state dicts,
  Lightning and other wrapped checkpoints, and safetensors files.
* :func:`match_state_dict`: fit those weights to a model (prefixes, wrappers, ``nn.Sequential``
  layouts, shape checks) so that nobody strips prefixes by hand.
* :func:`export_safetensors`: backbone weights + metadata to a pickle-free ``.safetensors`` file.

Example:
    >>> save_checkpoint("run/checkpoint.pt", backbone.state_dict(), meta, {"optimizer": opt.state_dict()})
    >>> ckpt = load_checkpoint("run/checkpoint.pt")
    >>> state, meta = read_state_dict("lightning.ckpt")
    >>> matched, report = match_state_dict(state, model, ignore=("fc.",))
    >>> model.load_state_dict(matched, strict=False)
"""

from ssl_ft.checkpoint._files import write_json
from ssl_ft.checkpoint.core import (
    FORMAT,
    FORMAT_VERSION,
    REQUIRED_META,
    Checkpoint,
    export_safetensors,
    library_versions,
    load_checkpoint,
    read_state_dict,
    save_checkpoint,
)
from ssl_ft.checkpoint.match import MatchReport, match_state_dict

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "REQUIRED_META",
    "Checkpoint",
    "MatchReport",
    "export_safetensors",
    "library_versions",
    "load_checkpoint",
    "match_state_dict",
    "read_state_dict",
    "save_checkpoint",
    "write_json",
]
