"""Cheap evidence for choosing which layers to fine-tune (:mod:`ssl_ft.auto_layers`).

Everything here reads the **train and validation splits only**: :func:`without_test` removes
the test split from the data before any of it runs, so no test image or label can reach the
choice.

* :func:`probe_evidence`: the validation AUC of a linear probe after each probed unit (the depth
  probe of :mod:`ssl_ft.depth_probe`; Head2Toe, Evci et al., ICML 2022, on why intermediate
  features matter).
* :func:`choose_depth`: the depth to cut a frozen model at for fusion (``ensemble --depth
  auto``), by the same probe.
* :func:`gradient_evidence`: per unit, the relative gradient norm ``||g|| / ||w||`` (Auto-RGN)
  and the gradient signal-to-noise ratio ``||mean g||^2 / mean ||g - mean g||^2`` (Auto-SNR) of
  the loss of the pretrained backbone with the probe's head, over a few train batches. Lee et
  al., "Surgical Fine-Tuning Improves Adaptation to Distribution Shifts" (ICLR 2023) use both to
  find the layers a new task wants to change.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ssl_ft.data import ArraySplits
from ssl_ft.data.subsample import subsample
from ssl_ft.depth_probe import FeatureCache, probe_backbone, probe_units
from ssl_ft.features import C_GRID, fit_linear_head
from ssl_ft.finetune.model import FinetuneModel
from ssl_ft.models.depth import DepthMap, Unit

__all__ = ["choose_depth", "gradient_evidence", "probe_evidence", "range_statistics", "subset_train",
           "without_test"]


def without_test(splits: ArraySplits) -> ArraySplits:
    """The same data without its test split (the key is gone: reading it raises KeyError)."""
    keep = ("train", "val")
    return ArraySplits(info=splits.info, images={s: splits.images[s] for s in keep},
                       labels={s: splits.labels[s] for s in keep},
                       indices={s: splits.indices[s] for s in keep})


def subset_train(splits: ArraySplits, limit: int | None, seed: int) -> ArraySplits:
    """At most ``limit`` train images (stratified, seeded); val unchanged."""
    if limit is None or len(splits.labels["train"]) <= limit:
        return splits
    idx = subsample(splits.labels["train"], limit=limit, seed=seed)
    out = without_test(splits)
    out.images["train"] = splits.images["train"][idx]
    out.labels["train"] = splits.labels["train"][idx]
    out.indices["train"] = splits.indices["train"][idx]
    return out


def probe_evidence(backbone: nn.Module, splits: ArraySplits, depth_map: DepthMap,
                   units: Sequence[Unit], source: dict[str, Any], *, device: torch.device,
                   c_grid: Sequence[float] = C_GRID) -> dict[str, Any]:
    """Validation AUC of the probe after each of ``units`` (one backbone pass per image) and
    the seconds it took. ``splits`` must not hold a test split."""
    t0 = time.perf_counter()
    cache = FeatureCache(backbone.to(device), [u.index for u in units],
                         max_value=splits.info.max_value, mean=source["mean"],
                         std=source["std"], device=device)
    rows = probe_backbone(cache, splits, depth_map, units, test=False, c_grid=c_grid)
    return {"units": rows, "seconds": time.perf_counter() - t0,
            "n_train": len(splits.labels["train"])}


def gradient_evidence(backbone: nn.Module, splits: ArraySplits, source: dict[str, Any], *,
                      batches: int = 4, batch_size: int = 64, seed: int = 0,
                      c_grid: Sequence[float] = C_GRID, device: torch.device) -> dict[str, Any]:
    """Auto-RGN and Auto-SNR of every unit of ``backbone`` (which it changes: BatchNorm
    statistics move; pass a throw-away copy), from ``batches`` seeded train mini-batches with
    the head fitted as a linear probe first (a random head would send random gradients;
    ``c_grid``: its regularisation, e.g. the one value the depth probe chose)."""
    t0 = time.perf_counter()
    info = splits.info
    model = FinetuneModel(backbone, info.num_classes, tuple(source["mean"]),
                          tuple(source["std"])).to(device)
    fit_linear_head(model.backbone, model.head, splits, mean=source["mean"], std=source["std"],
                    device=device, c_grid=c_grid)
    units = backbone.units
    params = [[p for _, p in backbone.unit_parameters(u)] for u in units]
    total = [[torch.zeros_like(p) for p in ps] for ps in params]
    sq = np.zeros(len(units))
    x_all = torch.from_numpy(splits.images["train"].astype(np.float32)) / info.max_value
    y_all = torch.from_numpy(splits.labels["train"])
    order = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(seed))
    batch = min(batch_size, len(x_all))
    model.train()
    for b in range(batches):
        idx = order[(b * batch) % max(1, len(order) - batch + 1):][:batch]
        model.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x_all[idx].to(device)), y_all[idx].to(device))
        loss.backward()
        for k, ps in enumerate(params):
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ps]
            sq[k] += sum(float(g.pow(2).sum()) for g in grads)
            for acc, g in zip(total[k], grads, strict=True):
                acc += g
    rows = []
    for k, u in enumerate(units):
        mean_sq = sum(float((acc / batches).pow(2).sum()) for acc in total[k])
        w = sum(float(p.detach().pow(2).sum()) for p in params[k]) ** 0.5
        noise = sq[k] / batches - mean_sq
        rows.append({"unit": u.name, "index": k, "rgn": mean_sq ** 0.5 / w if w > 0 else 0.0,
                     "snr": mean_sq / noise if noise > 1e-30 else float("inf"),
                     "grad_sq": mean_sq, "weight_sq": w * w, "noise_sq": max(noise, 0.0)})
    model.zero_grad(set_to_none=True)
    return {"units": rows, "seconds": time.perf_counter() - t0, "batches": batches,
            "batch_size": batch}


def range_statistics(rows: Sequence[dict[str, Any]], indices: Sequence[int]) -> dict[str, float]:
    """Auto-RGN and Auto-SNR of a set of units (a candidate layer range) from
    :func:`gradient_evidence` rows: ``||g|| / ||w||`` and ``||mean g||^2 / noise`` over all
    their parameters together (per-unit means would let a small unit, e.g. a stem whose
    BatchNorm has few weights, dominate)."""
    picked = [rows[i] for i in indices]
    g = sum(r["grad_sq"] for r in picked)
    w = sum(r["weight_sq"] for r in picked)
    noise = sum(r["noise_sq"] for r in picked)
    return {"rgn": (g / w) ** 0.5 if w > 0 else 0.0,
            "snr": g / noise if noise > 1e-30 else float("inf")}


def choose_depth(backbone: torch.nn.Module, splits: ArraySplits, depth_map: DepthMap,
                 source: dict[str, Any], *, candidates: Sequence[float] = (25, 50, 75, 100),
                 limit: int | None = 2000, seed: int = 0,
                 device: torch.device | None = None) -> tuple[float, dict[str, Any]]:
    """The depth to cut a frozen model at for fusion (``ensemble --depth auto``): the
    candidate whose linear probe on the pooled features has the best validation AUC (ties: the
    shallower). Reads only the train and val splits. Returns the depth and its evidence."""
    t0 = time.perf_counter()
    device = device or torch.device("cpu")
    data = subset_train(without_test(splits), limit, seed)
    units = {float(p): probe_units(depth_map, [p])[0] for p in candidates}
    ev = probe_evidence(backbone, data, depth_map, list({u.index: u for u in units.values()}
                                                        .values()), source, device=device)
    by_unit = {r["index"]: r for r in ev["units"]}
    rows = [{"depth": p, "unit": u.name, "val_auc": by_unit[u.index]["val_auc"],
             "C": by_unit[u.index]["C"]} for p, u in sorted(units.items())]
    best = max(rows, key=lambda r: (r["val_auc"], -r["depth"]))
    print(f"depth auto ({source['method'] or source['kind']}): " + ", ".join(
        f"{r['depth']:g} % val probe AUC {r['val_auc']:.4f}" for r in rows)
        + f" -> {best['depth']:g} %", file=sys.stderr)
    return best["depth"], {"candidates": rows, "chosen": best["depth"],
                           "seconds": time.perf_counter() - t0}
