"""The depth probe: how linearly separable are a backbone's features at every unit of its depth map?

One forward pass per image caches the globally pooled feature map after every unit
(:func:`~ssl_ft.features.extract_unit_features`, the ``forward_intermediates`` features
API); a logistic-regression probe with its regularisation ``C`` chosen on the validation AUC
(:func:`ssl_ft.features.probe_features`, the same probe as ``tools/probe.py``) is then fitted at
each depth. The curve of probe AUC against depth is Head2Toe's observation made visible (Evci et
al., "Head2Toe: Utilizing Intermediate Representations for Better Transfer Learning", ICML
2022: intermediate layers often transfer better than the last one), and it is the cheap
evidence that :mod:`ssl_ft.auto_layers` uses to choose where to cut a network.

    >>> result = probe_depths(["runs/simclr/checkpoint.pt", "none"], "pneumoniamnist",
    ...                       arch="resnet18", seeds=[0, 1])
    >>> write_probe_report(result, "runs/probe_depths")   # JSON, Markdown table, PNG curve

The probe at depth ``P`` equals ``tools/probe.py --truncate P`` (the units up to ``P`` kept,
their output pooled); only timm backbones differ at 100 % (the probe skips timm's final norm).
Features of a checkpoint are computed once and shared by every seed (the seed only draws the
labelled train subset); a random initialisation is drawn again for every seed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ssl_ft.data import ArraySplits, load_data
from ssl_ft.ensemble.members import peek_meta
from ssl_ft.errors import UserError
from ssl_ft.features import C_GRID, extract_unit_features, probe_features
from ssl_ft.finetune.model import build_backbone
from ssl_ft.models import check_input_size
from ssl_ft.models.depth import DepthMap, Unit, parse_percent

__all__ = ["FeatureCache", "model_label", "probe_backbone", "probe_depths", "probe_units",
           "write_probe_report"]


def model_label(source: dict[str, Any]) -> str:
    """A legend label from :func:`~ssl_ft.finetune.build_backbone`'s source description:
    ``simclr (contrastive)``, ``random init``, ``imagenet`` or the state dict's file name."""
    if source["kind"] == "none":
        return "random init"
    if source["kind"] == "imagenet":
        return "imagenet"
    if source.get("method"):
        return f"{source['method']} ({source['family']})" if source.get("family") else \
            str(source["method"])
    return Path(str(source["path"])).stem


def probe_units(depth_map: DepthMap, depths: Sequence[float] | None = None) -> list[Unit]:
    """The units to probe: every unit, or for each percentage ``P`` in ``depths`` the deepest
    unit at depth ``<= P`` (what ``truncate=P`` keeps last)."""
    if depths is None:
        return list(depth_map.units)
    chosen: dict[int, Unit] = {}
    for d in depths:
        p = parse_percent(d, "probe depth")
        kept = [u for u in depth_map.units if u.depth <= p]
        if not kept:
            raise UserError(f"probe depth {d:g} lies before the first unit of {depth_map.arch} "
                            f"(it ends at {float(depth_map.units[0].depth):.1f} %)")
        chosen[kept[-1].index] = kept[-1]
    return [chosen[i] for i in sorted(chosen)]


class FeatureCache:
    """Pooled features of one backbone at some units, per split and source image index.

    :meth:`get` runs the backbone only on images it has not seen (one pass for all units), so
    the seeds of a label fraction share the images they have in common."""

    def __init__(self, backbone: nn.Module, units: Sequence[int], *, max_value: int,
                 mean: Sequence[float], std: Sequence[float], device: torch.device,
                 precision: str = "fp32") -> None:
        self.backbone, self.units = backbone, sorted(units)
        self.kw = dict(max_value=max_value, mean=mean, std=std, device=device,
                       precision=precision)
        self.rows: dict[str, dict[int, int]] = {}
        self.store: dict[str, dict[int, list[np.ndarray]]] = {}
        self.seconds = 0.0
        self.images_seen = 0

    def get(self, splits: ArraySplits, names: Sequence[str]) -> dict[str, dict[int, np.ndarray]]:
        """``{split: {unit index: (N, channels) features}}`` of ``splits`` in their order."""
        out = {}
        for split in names:
            rows = self.rows.setdefault(split, {})
            store = self.store.setdefault(split, {u: [] for u in self.units})
            idx = splits.indices[split]
            new = [k for k, i in enumerate(idx) if int(i) not in rows]
            if new:
                t0 = time.perf_counter()
                feats = extract_unit_features(self.backbone, splits.images[split][new],
                                              self.units, **self.kw)
                self.seconds += time.perf_counter() - t0
                self.images_seen += len(new)
                start = sum(len(b) for b in store[self.units[0]])
                for j, k in enumerate(new):
                    rows[int(idx[k])] = start + j
                for u in self.units:
                    store[u].append(feats[u].numpy())
            at = np.array([rows[int(i)] for i in idx], dtype=np.int64)
            out[split] = {u: np.concatenate(store[u])[at] if len(at) else
                          np.zeros((0, 0), np.float32) for u in self.units}
        return out


def probe_backbone(cache: FeatureCache, splits: ArraySplits, depth_map: DepthMap,
                   units: Sequence[Unit], *, test: bool = True,
                   c_grid: Sequence[float] = C_GRID) -> list[dict[str, Any]]:
    """One probe per unit on ``splits`` (train fits, val chooses ``C``; test is only scored
    when ``test``, and never read otherwise). One row per unit: its name, index, depth, width,
    ``C``, val (and test) AUC/ACC, whether the fit converged."""
    info = splits.info
    names = ("train", "val", "test") if test else ("train", "val")
    feats = cache.get(splits, names)
    rows = []
    for u in units:
        res = probe_features({s: feats[s][u.index] for s in names}, splits.labels,
                             task=info.task, num_classes=info.num_classes,
                             label_names=list(info.label_names), c_grid=c_grid)
        row = {"unit": u.name, "index": u.index, "depth": float(u.depth),
               "dim": int(feats["train"][u.index].shape[1]), "C": res["C"],
               "val_auc": float(res["val"]["auc"]), "val_acc": float(res["val"]["acc"]),
               "converged": res["converged"]}
        if test:
            row.update(test_auc=float(res["test"]["auc"]), test_acc=float(res["test"]["acc"]))
        rows.append(row)
    return rows


def _aggregate(per_seed: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for unit_rows in zip(*per_seed, strict=True):
        row = {k: unit_rows[0][k] for k in ("unit", "index", "depth", "dim")}
        for key in ("val_auc", "test_auc", "val_acc", "test_acc", "C", "converged"):
            if key in unit_rows[0]:
                row[key] = [r[key] for r in unit_rows]
        for key in ("val_auc", "test_auc"):
            if key in row:
                v = np.array(row[key], float)
                row[f"{key}_mean"] = float(v.mean())
                row[f"{key}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        rows.append(row)
    return rows


def probe_depths(checkpoints: Sequence[str | None], data: str, *, arch: str | None = None,
                 stem: str | None = None, labels: Sequence[str] = (),
                 data_root: str | None = None, label_fraction: float = 1.0,
                 seeds: Sequence[int] = (0,), limit: int | None = None,
                 size: int | None = None, channels: int | None = None,
                 depths: Sequence[float] | None = None, depth_unit: str | None = None,
                 c_grid: Sequence[float] = C_GRID, device: str = "cpu") -> dict[str, Any]:
    """Probe every checkpoint (``None``/``"none"``: a random ``arch``, drawn per seed) at every
    unit (or at ``depths``) on ``data``; returns the JSON-able result (one entry per model, the
    per-seed and mean val/test AUC at each unit, timings). ``labels`` name the models in the
    plot (default: the checkpoint's method and family, e.g. ``simclr (contrastive)``)."""
    if not checkpoints:
        raise UserError("probe_depths needs at least one checkpoint (or 'none')")
    if labels and len(labels) != len(checkpoints):
        raise UserError(f"{len(labels)} labels for {len(checkpoints)} checkpoints")
    seeds = list(seeds) or [0]
    load = dict(data=data, data_root=data_root, label_fraction=label_fraction, limit=limit,
                size=size, channels=channels)
    probe = dict(depths=depths, depth_unit=depth_unit, c_grid=c_grid, device=torch.device(device))
    models = [_probe_model("none" if ck in (None, "none") else str(ck),
                           labels[k] if labels else None, seeds, load, probe, arch, stem)
              for k, ck in enumerate(checkpoints)]
    info = [m.pop("info") for m in models][0]  # (one dataset: the same for every model)
    return {"data": info.name, "label_fraction": label_fraction, "limit": limit,
            "seeds": seeds, "image_size": info.image_size, "channels": info.n_channels,
            "task": info.task, "c_grid": list(c_grid), "models": models}


def _probe_model(ck: str, label: str | None, seeds: list[int], load: dict[str, Any],
                 probe: dict[str, Any], arch: str | None, stem: str | None) -> dict[str, Any]:
    """One model of :func:`probe_depths`, every seed."""
    meta = peek_meta(ck)
    if not meta and arch is None:
        raise UserError(f"checkpoint {ck!r} says no architecture; pass arch (--arch)")
    per_seed, cache, model = [], None, None
    for seed in seeds:
        splits = load_data(**{**load, "seed": seed,
                              "channels": load["channels"] or meta.get("in_chans")})
        info = splits.info
        if cache is None or ck == "none":  # a random init is drawn again per seed
            torch.manual_seed(seed)
            backbone, source = build_backbone(ck, info, arch=None if meta else arch, stem=stem)
            check_input_size(backbone, info.image_size)
            dm = DepthMap.from_backbone(backbone, probe["depth_unit"])
            units = probe_units(dm, probe["depths"])
            cache = FeatureCache(backbone.to(probe["device"]), [u.index for u in units],
                                 max_value=info.max_value, mean=source["mean"],
                                 std=source["std"], device=probe["device"])
            model = model or {"label": label or model_label(source), "checkpoint": ck,
                              "method": source["method"], "family": source["family"],
                              "arch": source["arch"], "rule": dm.rule, "feature_seconds": 0.0,
                              "probe_seconds": 0.0, "images_forwarded": 0, "n_train": []}
        seen, t_feat, t0 = cache.images_seen, cache.seconds, time.perf_counter()
        per_seed.append(probe_backbone(cache, splits, dm, units, c_grid=probe["c_grid"]))
        model["feature_seconds"] += cache.seconds - t_feat
        model["probe_seconds"] += time.perf_counter() - t0 - (cache.seconds - t_feat)
        model["images_forwarded"] += cache.images_seen - seen
        model["n_train"].append(len(splits.labels["train"]))
        print(f"{model['label']} seed {seed}: " + ", ".join(
            f"{r['depth']:.0f}%:{r['val_auc']:.3f}" for r in per_seed[-1]) + " (val AUC)",
            file=sys.stderr)
    model["units"] = _aggregate(per_seed)
    best = max(model["units"], key=lambda r: r["val_auc_mean"])
    model["best_val"] = {"unit": best["unit"], "depth": best["depth"],
                         "val_auc_mean": best["val_auc_mean"],
                         "test_auc_mean": best["test_auc_mean"]}
    model["info"] = info
    return model


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curve(result: dict[str, Any], path: Path) -> Path:
    """Val (solid) and test (dashed) probe AUC against depth, one colour per model, a band of
    one standard deviation over seeds."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, m in enumerate(result["models"]):
        colour = f"C{k}"
        x = [r["depth"] for r in m["units"]]
        for split, style in (("val", "-"), ("test", "--")):
            mean = np.array([r[f"{split}_auc_mean"] for r in m["units"]])
            std = np.array([r[f"{split}_auc_std"] for r in m["units"]])
            ax.plot(x, mean, style, color=colour, marker="o" if split == "val" else None,
                    ms=3, label=f"{m['label']} ({split})")
            if len(result["seeds"]) > 1:
                ax.fill_between(x, mean - std, mean + std, color=colour, alpha=0.12, lw=0)
    for q in (25, 50, 75):
        ax.axvline(q, color="0.85", lw=0.8, zorder=0)
    ax.set_xlim(0, 100)
    ax.set_xlabel("depth % (probe on the pooled output of the units up to here)")
    ax.set_ylabel("linear probe AUC")
    ax.set_title(f"{result['data']}, {result['label_fraction']:g} of the train labels, "
                 f"{len(result['seeds'])} seed(s)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _table(result: dict[str, Any]) -> str:
    lines = [f"# Depth probe: {result['data']}", "",
             f"Linear probe (logistic regression, C chosen on val AUC from "
             f"{', '.join(f'{c:g}' for c in result['c_grid'])}) on the pooled features after "
             f"each unit; label fraction {result['label_fraction']:g}, seeds "
             f"{', '.join(map(str, result['seeds']))}; AUC mean ± std over seeds. Bold: the "
             "best val AUC of the model."]
    for m in result["models"]:
        lines += ["", f"## {m['label']}: {m['arch']}, depth by {m['rule']}",
                  f"checkpoint `{m['checkpoint']}`; features {m['feature_seconds']:.1f} s "
                  f"({m['images_forwarded']} images, one pass each), probes "
                  f"{m['probe_seconds']:.1f} s", "",
                  "| unit | depth % | dim | C | val AUC | test AUC |", "|---|---|---|---|---|---|"]
        for r in m["units"]:
            val = f"{r['val_auc_mean']:.4f} ± {r['val_auc_std']:.4f}"
            if r["unit"] == m["best_val"]["unit"]:
                val = f"**{val}**"
            cs = "/".join(f"{c:g}" for c in r["C"])
            lines.append(f"| {r['unit']} | {r['depth']:.1f} | {r['dim']} | {cs} | {val} | "
                         f"{r['test_auc_mean']:.4f} ± {r['test_auc_std']:.4f} |")
        if not all(all(r["converged"]) for r in m["units"]):
            lines += ["", "Some fits stopped at the iteration limit (not converged)."]
    return "\n".join(lines) + "\n"


def write_probe_report(result: dict[str, Any], out: str | Path) -> list[Path]:
    """``out/probe_depths.json``, ``probe_depths.md`` (a table per model) and
    ``probe_depths.png`` (the curves); returns the files."""
    from ssl_ft.checkpoint import write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "probe_depths.json", result)
    (out / "probe_depths.md").write_text(_table(result))
    return [out / "probe_depths.json", out / "probe_depths.md",
            _curve(result, out / "probe_depths.png")]
