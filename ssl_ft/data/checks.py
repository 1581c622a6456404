"""Checks that labelled data can be learnt from, each a one-line :class:`UserError`.

* :func:`check_labels_cover` (run by :func:`ssl_ft.data.load_data` on the full splits): every
  class that val or test holds has training images, and a file without declared class names
  (no ``manifest.json`` entry, no MedMNIST name) numbers its classes 0..K-1 without gaps, as
  the image-folder loader already requires of class folders.
* :func:`check_learnable` (run by fine-tuning, probes, fusion and pretraining's online
  evaluation): at least two classes, and at least two of them in the (subsampled) train split.
"""

from __future__ import annotations

import numpy as np

from ssl_ft.data.arrays import ArraySplits
from ssl_ft.errors import UserError

__all__ = ["check_labels_cover", "check_learnable"]


def _shown(values) -> str:
    values = sorted(int(v) for v in values)
    return ", ".join(map(str, values[:8])) + (", ..." if len(values) > 8 else "")


def check_labels_cover(labels: dict[str, np.ndarray], n_classes: int, source: object, *,
                       declared: bool) -> None:
    """Raise if a class of val/test has no training images or, without ``declared`` class
    names, if a class number in ``[0, n_classes)`` has no training images."""
    train = set(np.unique(labels["train"]).tolist())
    if not declared:
        missing = set(range(n_classes)) - train
        if missing:
            raise UserError(
                f"{source}: classes {_shown(missing)} have no training images (train labels: "
                f"{_shown(train)}); without a manifest.json entry the classes are numbered "
                f"0..{n_classes - 1}, so renumber them without gaps or declare their names")
    for split in ("val", "test"):
        extra = set(np.unique(labels[split]).tolist()) - train
        if extra:
            raise UserError(f"{source}: {split} holds class {_shown(extra)} that has no "
                            f"training images (train classes: {_shown(train)})")


def check_learnable(splits: ArraySplits, hint: str = "") -> None:
    """Raise unless there are two classes or more and the train split holds at least two;
    ``hint`` ends the message (what the user can do instead)."""
    info = splits.info
    hint = f"; {hint}" if hint else ""
    if info.num_classes < 2:
        raise UserError(f"data {info.name} ({info.source}) has one class only "
                        f"({', '.join(info.label_names)}); a classifier needs at least two{hint}")
    present = np.unique(splits.labels["train"])
    if len(present) < 2:
        names = ", ".join(repr(info.label_names[int(c)]) for c in present) or "no images"
        raise UserError(f"data {info.name}: the train split holds one class only ({names}, "
                        f"{len(splits.labels['train'])} images, after label_fraction/limit); a "
                        f"classifier needs at least two{hint}")
