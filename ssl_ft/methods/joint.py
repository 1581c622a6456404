"""Small helpers shared by the joint-embedding methods (BYOL, VICReg, Barlow Twins, DINO).

* argument checks for the methods' ``Config`` dataclasses, raising ``ValueError`` that names the
  field and the bad value (as lightly does);
* :func:`distributed`: whether a process group is up (losses then gather across ranks);
* :func:`embedding_std`: the collapse indicator of Chen & He, "Exploring Simple Siamese
  Representation Learning", CVPR 2021 (SimSiam, Sec. 4.1): the per-dimension standard
  deviation over the batch of the l2-normalised embeddings, averaged over dimensions. Here it
  is multiplied by ``sqrt(dim)``, so that it is about 1 for embeddings spread like an isotropic
  gaussian and 0 when every image maps to the same point (lightly's
  ``lightly.utils.debug.std_of_l2_normalized`` without the scaling, and without that module's
  matplotlib import).

Example::

    >>> z = torch.randn(256, 128)
    >>> embedding_std(z)        # about 1.0; embedding_std(z[:1].expand(256, -1)) is 0.0
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["check_bool", "check_int", "check_number", "distributed", "embedding_std"]


def check_int(cfg: object, *names: str, minimum: int = 1) -> None:
    """Each field in ``names`` must be an integer (not a bool) ``>= minimum``."""
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_number(cfg: object, name: str, low: float, high: float = math.inf, *,
                 low_open: bool = False, high_open: bool = False) -> None:
    """Field ``name`` must be a finite number in the interval from ``low`` to ``high``
    (open at an end if ``low_open``/``high_open``)."""
    value = getattr(cfg, name)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (
            value < high if high_open else value <= high)
    if not ok:
        interval = (f"{'(' if low_open else '['}{low:g}, "
                    f"{high:g}{')' if high_open or math.isinf(high) else ']'}")
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")


def check_bool(cfg: object, *names: str) -> None:
    """Each field in ``names`` must be ``True`` or ``False``."""
    for name in names:
        if not isinstance(getattr(cfg, name), bool):
            raise ValueError(f"{name} must be true or false, got {getattr(cfg, name)!r}")


def distributed() -> bool:
    """True inside an initialised ``torch.distributed`` process group."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


@torch.no_grad()
def embedding_std(z: Tensor) -> Tensor:
    """``sqrt(dim) *`` mean per-dimension std of the l2-normalised rows of ``z`` ``(N, dim)``:
    about 1 for well spread embeddings, 0 for collapsed ones (SimSiam's indicator)."""
    if z.ndim != 2 or len(z) < 2:
        raise ValueError(f"embedding_std needs (N >= 2, dim) embeddings, got {tuple(z.shape)}")
    return F.normalize(z.float(), dim=1).std(dim=0).mean() * math.sqrt(z.shape[1])
