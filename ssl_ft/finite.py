"""The NaN/inf policy: stop at the first non-finite number, before it is written anywhere.

Training (pretraining, fine-tuning, fusion) checks

* the loss of every step, before ``backward`` (:func:`check_loss`);
* the gradients of every step, before the optimiser uses them (:func:`check_gradients`);
* every parameter and buffer (BatchNorm running statistics, momentum encoders, queues) at the
  end of every epoch, before the epoch's metrics and checkpoints are written
  (:func:`check_state`);
* the features and probabilities of every evaluation (:func:`check_tensor`).

The first non-finite value raises :class:`NonFiniteError`; the tools print its one-line message
and exit with status :data:`EXIT_NONFINITE` (3), so the last checkpoint on disk is the last
good one (finite, loadable, resumable). Checkpoints holding a non-finite tensor are refused on
load (:func:`first_non_finite`, used by :func:`ssl_ft.checkpoint.load_checkpoint` and
:func:`~ssl_ft.checkpoint.read_state_dict`): a :class:`~ssl_ft.errors.UserError` (exit 2) names
the tensor.

A finite loss can still run away (Adam at ``lr 1e6`` trains at a loss of ~1e14):
:func:`warn_if_diverging` prints one warning line when an epoch's mean loss first exceeds
:data:`DIVERGE_FACTOR` times a reference (the chance-level loss of a classifier, ``log C``, or
the first epoch's loss) and the run goes on (the numbers are still numbers; the user decides).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["DIVERGE_FACTOR", "EXIT_NONFINITE", "NonFiniteError", "check_gradients",
           "chance_loss", "check_loss", "check_state", "check_tensor", "first_non_finite",
           "warn_if_diverging"]

#: Exit status of a tool stopped by a non-finite loss, gradient, statistic or feature.
EXIT_NONFINITE = 3
#: An epoch's loss above this many times the reference is reported as diverging.
DIVERGE_FACTOR = 100.0
_HINT = "the run stopped before writing anything non-finite; lower the learning rate (or use fp32)"


class NonFiniteError(RuntimeError):
    """A NaN or infinity in training or evaluation; the message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def _bad_value(t: torch.Tensor) -> str:
    t = t.detach()
    return "nan" if bool(torch.isnan(t).any()) else "inf"


def check_loss(loss: torch.Tensor, where: str) -> None:
    """Raise :class:`NonFiniteError` if the (scalar) loss is NaN or infinite."""
    if not bool(torch.isfinite(loss.detach()).all()):
        raise NonFiniteError(f"the loss is {_bad_value(loss)} at {where}; {_HINT}")


def check_gradients(params: nn.Module | Iterable[nn.Parameter], where: str) -> None:
    """Raise if any gradient is non-finite (one reduction per tensor, one sync per call)."""
    named = (params.named_parameters() if isinstance(params, nn.Module)
             else ((str(i), p) for i, p in enumerate(params)))
    grads = [(n, p.grad) for n, p in named if p.grad is not None]
    if not grads:
        return
    peaks = torch.stack([g.detach().abs().amax().float() for _, g in grads])
    if bool(torch.isfinite(peaks).all()):
        return
    name, grad = next((n, g) for (n, g), ok in zip(grads, torch.isfinite(peaks), strict=True)
                      if not ok)
    raise NonFiniteError(f"the gradient of {name} is {_bad_value(grad)} at {where}; {_HINT}")


def check_state(module: nn.Module, where: str) -> None:
    """Raise if a floating-point parameter or buffer of ``module`` is non-finite."""
    found = first_non_finite(dict(module.state_dict(keep_vars=False)))
    if found is not None:
        name, value = found
        raise NonFiniteError(f"{name} is {value} at {where}; {_HINT}")


def check_tensor(t: torch.Tensor, what: str, where: str = "evaluation") -> None:
    """Raise if ``t`` (features, probabilities) holds a NaN or infinity."""
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise NonFiniteError(f"the {what} hold {_bad_value(t)} values at {where}; {_HINT}")


def first_non_finite(tree: Any, prefix: str = "") -> tuple[str, str] | None:
    """``(dotted name, "nan" | "inf")`` of the first non-finite floating tensor in nested dicts
    and lists of tensors (a state dict, a checkpoint's ``extra``), else ``None``."""
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() and not bool(torch.isfinite(tree).all()):
            return prefix.rstrip(".") or "tensor", _bad_value(tree)
        return None
    if isinstance(tree, Mapping):
        items: Iterable = tree.items()
    elif isinstance(tree, list | tuple):
        items = enumerate(tree)
    else:
        return None
    for key, value in items:
        found = first_non_finite(value, f"{prefix}{key}.")
        if found is not None:
            return found
    return None


def warn_if_diverging(history: Sequence[Mapping[str, Any]], key: str,
                      reference: float | None = None, what: str = "") -> bool:
    """Print one warning when the last epoch's ``key`` first exceeds :data:`DIVERGE_FACTOR`
    times ``reference`` (default: the first epoch's value); returns whether it did."""
    values = [float(h[key]) for h in history if key in h]
    if not values:
        return False
    ref = reference if reference is not None else values[0]
    if not ref > 0:
        return False
    limit = DIVERGE_FACTOR * ref
    if values[-1] > limit and (len(values) < 2 or values[-2] <= limit):
        shown = what or f"{'the first epoch' if reference is None else 'the reference'} {ref:.4g}"
        print(f"warning: {key} {values[-1]:.4g} at epoch {len(values)} is over "
              f"{DIVERGE_FACTOR:g}x {shown}: training diverges; lower the learning rate",
              file=sys.stderr)
        return True
    return False


def chance_loss(num_classes: int) -> float:
    """The cross-entropy of a classifier that predicts uniform probabilities: ``log C``."""
    return math.log(max(2, int(num_classes)))
