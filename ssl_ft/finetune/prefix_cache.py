"""Fine-tuning pays only for what it trains: the frozen prefix's activations, computed once.

When no augmentation touches the input (``augment: none``) and frozen units keep their BatchNorm
statistics (``freeze_bn: true``), the units before the first one that trains in *any* epoch map
each image to the same activations in every epoch. :func:`cacheable_prefix` finds how many
leading units that is (for ``--layers 75-100`` on a resnet18: the stem and layer1-3; for ``lp``
the whole backbone), :func:`prefix_activations` computes them once for the train and val images
(the same code path, eval mode, no autograd, the run's precision), and the model then starts
from unit ``k`` (``FinetuneModel.input_unit``). The last evaluation, on val and test, still runs
the saved model end to end on the images.

Off when the activations would take more than ``limit_gb`` (``prefix_cache_gb``), for backbones
that are not a :class:`~ssl_ft.models.SplittableBackbone` (timm's: no ``forward_units``), and
with ``prefix_cache: off``.
"""

from __future__ import annotations

import numpy as np
import torch

from ssl_ft.finetune.model import FinetuneModel
from ssl_ft.models import SplittableBackbone
from ssl_ft.runtime import autocast

__all__ = ["cacheable_prefix", "prefix_activations", "prefix_bytes"]


def cacheable_prefix(model: FinetuneModel, strategy, epochs: int, *, augment: str,
                     freeze_bn: bool) -> int:
    """How many leading units are frozen (and deterministic) in every epoch; 0: no cache."""
    if augment != "none" or not freeze_bn or not isinstance(model.backbone, SplittableBackbone):
        return 0
    n = len(model.backbone.units)
    firsts = [min(t) if (t := strategy.trained_units(e)) else n for e in range(epochs)]
    return min(firsts) if firsts else 0


def prefix_bytes(model: FinetuneModel, k: int, n_images: int, image_size: int) -> int:
    """Bytes that ``n_images`` float32 activations after unit ``k - 1`` take."""
    was = model.training
    model.eval()
    with torch.no_grad():
        x = torch.zeros(1, model.backbone.in_chans, image_size, image_size)
        x = (x - model.mean) / model.std
        out = model.backbone.forward_units(x, 0, k)
    model.train(was)
    return int(out.numel()) * 4 * n_images


@torch.no_grad()
def prefix_activations(model: FinetuneModel, images: np.ndarray, k: int, *, max_value: int,
                       device: torch.device, precision: str, batch_size: int = 256
                       ) -> torch.Tensor:
    """Activations after unit ``k - 1`` (float32, on ``device``) of ``(N, C, H, W)`` images,
    with the model's input normalisation, frozen units in eval mode."""
    was = model.training
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.asarray(images[i:i + batch_size], dtype=np.float32))
        x = (x.to(device) / max_value - model.mean) / model.std
        with autocast(device, precision):
            out.append(model.backbone.forward_units(x, 0, k).float())
    model.train(was)
    return torch.cat(out)
