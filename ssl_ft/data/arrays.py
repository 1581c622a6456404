"""In-memory datasets: :class:`DataInfo`, :class:`ArraySplits` and :class:`ImageArrayDataset`.

Every data source (MedMNIST file, any MedMNIST-layout ``.npz``, a folder of images) ends up as an
:class:`ArraySplits`: ``uint8``/``uint16`` image stacks in ``(N, C, H, W)`` layout and ``int64``
labels per split, plus a :class:`DataInfo` that describes them (task, label names, channels, size,
train-split statistics and a fingerprint of the files read).

Example:
    >>> from ssl_ft.data import load_data
    >>> splits = load_data("pneumoniamnist")                       # doctest: +SKIP
    >>> train = splits.dataset("train")                            # doctest: +SKIP
    >>> x, y = train[0]            # float32 (1, 28, 28), normalised with the train mean/std
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from ssl_ft.errors import UserError

__all__ = ["SPLITS", "ArraySplits", "DataInfo", "ImageArrayDataset", "SourceArrays"]

#: The split names, in order.
SPLITS: tuple[str, str, str] = ("train", "val", "test")


@dataclass(frozen=True)
class DataInfo:
    """What a loaded dataset is and how its arrays look.

    Attributes:
        name: ``"pneumoniamnist"``, the ``.npz`` stem (``"chest_xray_kermany_64"``) or the folder
            name.
        kind: ``"medmnist"``, ``"npz"`` or ``"folder"``.
        source: absolute path of the file or folder that was read.
        task: ``"binary-class"`` or ``"multi-class"`` (MedMNIST's words; ordinal regression
            counts as multi-class).
        label_names: class names in label order.
        n_channels: channels of the delivered arrays (after any ``channels=`` conversion).
        image_size: height == width of the delivered arrays.
        max_value: 255 for ``uint8`` arrays, 65535 for ``uint16`` arrays.
        mean: per-channel mean of the *full* train split (before any label fraction or limit),
            scaled to [0, 1].
        std: per-channel population standard deviation, likewise (1.0 for a constant channel).
        fingerprint: SHA-256 hex digest of the data read: for an ``.npz`` the file's bytes; for a
            folder the digest over the sorted ``relative/path<NUL>file-sha256<LF>`` lines of the
            image files read.
    """

    name: str
    kind: str
    source: str
    task: str
    label_names: tuple[str, ...]
    n_channels: int
    image_size: int
    max_value: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fingerprint: str

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(label_names)``)."""
        return len(self.label_names)


@dataclass(frozen=True)
class SourceArrays:
    """Full splits of one source as read (internal hand-over between readers and ``load_data``).

    ``images``/``labels`` are read-only and may be shared with a cache: copy before changing.
    """

    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    max_value: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fingerprint: str


class ImageArrayDataset(Dataset):
    """A map-style dataset over an ``(N, C, H, W)`` integer image stack.

    ``dataset[i]`` returns ``(x, label)``: ``x = image / max_value`` as a ``float32`` tensor in
    [0, 1]; then ``x = transform(x)`` if a transform is given (it receives and returns a tensor);
    then ``x = (x - mean) / std`` if ``normalize``. ``label`` is a Python ``int``.

    Args:
        images: ``(N, C, H, W)`` ``uint8`` or ``uint16`` array (or any real dtype).
        labels: ``(N,)`` integer labels.
        max_value: the value that maps to 1.0 (255 or 65535).
        mean: per-channel mean in [0, 1] units (length C, or 1 to broadcast).
        std: per-channel standard deviation in [0, 1] units (same length as ``mean``).
        normalize: apply ``(x - mean) / std``.
        transform: optional callable on the scaled ``(C, H, W)`` tensor (augmentations).
        num_classes: number of classes; defaults to ``max(labels) + 1``.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        max_value: int,
        mean: Sequence[float],
        std: Sequence[float],
        normalize: bool = True,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        num_classes: int | None = None,
    ) -> None:
        images = np.asarray(images)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {images.shape}")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if max_value <= 0:
            raise ValueError(f"max_value must be positive, got {max_value}")
        mean_t = torch.as_tensor(tuple(mean), dtype=torch.float32).reshape(-1, 1, 1)
        std_t = torch.as_tensor(tuple(std), dtype=torch.float32).reshape(-1, 1, 1)
        channels = images.shape[1]
        if mean_t.shape[0] not in (1, channels) or std_t.shape != mean_t.shape:
            raise ValueError(
                f"mean/std need 1 or {channels} values, got {len(mean_t)} and {len(std_t)}"
            )
        if bool((std_t <= 0).any()):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.images = images
        self.labels = labels
        self.max_value = int(max_value)
        self.mean = mean_t
        self.std = std_t
        self.normalize = bool(normalize)
        self.transform = transform
        self.num_classes = (
            int(num_classes)
            if num_classes is not None
            else (int(labels.max()) + 1 if len(labels) else 0)
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.images[index].astype(np.float32)).div_(self.max_value)
        if self.transform is not None:
            x = self.transform(x)
        if self.normalize:
            x = (x - self.mean) / self.std
        return x, int(self.labels[index])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images as one ``float32`` ``(N, C, H, W)`` tensor (scaled, normalised if
        ``normalize``, *no* transform) and the labels as an ``int64`` tensor."""
        x = torch.from_numpy(self.images.astype(np.float32)).div_(self.max_value)
        if self.normalize:
            x.sub_(self.mean).div_(self.std)
        return x, torch.from_numpy(self.labels.copy())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={len(self)}, shape={tuple(self.images.shape[1:])}, "
            f"num_classes={self.num_classes}, normalize={self.normalize})"
        )


@dataclass
class ArraySplits:
    """Train/val/test arrays of one dataset.

    Attributes:
        info: the :class:`DataInfo` of the dataset.
        images: split -> ``(N, C, H, W)`` ``uint8``/``uint16`` C-contiguous array (a private,
            writable copy).
        labels: split -> ``(N,)`` ``int64`` labels.
        indices: split -> sorted indices into the full source split that were kept (after
            ``label_fraction`` / ``limit``).
    """

    info: DataInfo
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    indices: dict[str, np.ndarray]

    def dataset(
        self,
        split: str,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        normalize: bool = True,
    ) -> ImageArrayDataset:
        """An :class:`ImageArrayDataset` over ``split`` using this dataset's mean/std."""
        if split not in self.images:
            raise UserError(f"unknown split {split!r}; valid: {', '.join(self.images)}")
        return ImageArrayDataset(
            self.images[split],
            self.labels[split],
            max_value=self.info.max_value,
            mean=self.info.mean,
            std=self.info.std,
            normalize=normalize,
            transform=transform,
            num_classes=self.info.num_classes,
        )

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(v)}" for s, v in self.labels.items())
        return f"ArraySplits({self.info.name!r}, {sizes}, classes={self.info.num_classes})"
