"""Study figures, drawn from the per-cell summary (:func:`ssl_ft.study.report.summarize`):

* ``heatmap.png``: mean test AUC of each layer selection (columns) x SSL model (rows), one panel
  per dataset / architecture / label fraction (Khan & Fang's question: which quarter?);
* ``strategies.png``: mean test AUC (± std) per strategy, one panel per dataset, one bar
  colour per architecture / model, from scratch dashed (Davila et al.'s question: which
  strategy?);
* ``label_fractions.png``: mean test AUC against the share of labels, one line per model and
  selection, one panel per dataset;
* ``fusion.png``: fusion against each model alone and late fusion.

A figure is drawn only when the study varies what it shows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ssl_ft.errors import writing

__all__ = ["draw_figures"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(n: int, w: float = 4.6, h: float = 3.6):
    plt = _plt()
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return plt, fig, list(axes.flat)


def draw_figures(s: pd.DataFrame, out: Path) -> list[Path]:
    files = []
    ft = s[s["kind"] == "finetune"]
    if not ft.empty:
        main_strategy = ft["strategy"].mode().iloc[0]
        heat = ft[ft["strategy"] == main_strategy]
        if heat["selection"].nunique() > 1:  # (one selection: the strategy bars show it all)
            files.append(_heatmap(heat, out / "heatmap.png", main_strategy))
        if ft["strategy"].nunique() > 1:
            files.append(_strategies(ft, out / "strategies.png"))
        if ft.groupby("data")["label_fraction"].nunique().max() > 1:  # (not one per dataset)
            files.append(_fractions(ft, out / "label_fractions.png"))
    fu = s[s["kind"] == "ensemble"]
    if not fu.empty:
        files.append(_fusion(fu, out / "fusion.png"))
    return files


def _scratch_split(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the from-scratch rows, model ``none``, drawn as baselines; the other rows). A study of
    from-scratch cells only has no baseline to draw: all its rows are the other rows."""
    none = df["model"] == "none"
    return (df.iloc[:0], df) if none.all() else (df[none], df[~none])


def _heatmap(df: pd.DataFrame, path: Path, strategy: str) -> Path:
    groups = list(df.groupby(["data", "arch", "label_fraction"], sort=False))
    plt, fig, axes = _panels(len(groups), w=5.2, h=0.9 + 0.55 * df["model"].nunique())
    for ax, (key, g) in zip(axes, groups, strict=False):
        table = g.pivot_table(index="model", columns="selection", values="test_auc_mean",
                              sort=False)
        im = ax.imshow(table.to_numpy(), cmap="viridis", aspect="auto")
        ax.set_xticks(range(table.shape[1]), table.columns, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(table.shape[0]), table.index, fontsize=8)
        vals = table.to_numpy()
        for (i, j), v in np.ndenumerate(vals):
            if np.isfinite(v):
                best = v == np.nanmax(vals[i])
                ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=8,
                        color="black" if v > np.nanmean(vals) else "white",
                        fontweight="bold" if best else "normal")
        ax.set_title(f"{key[0]} {key[1]} labels {key[2]:g}: test AUC", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.04)
    fig.suptitle(f"layer selection x model ({strategy}); bold: best in the row", fontsize=10)
    fig.tight_layout()
    with writing(path):  # a full disk: one line naming the figure
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _strategies(df: pd.DataFrame, path: Path) -> Path:
    """One panel per dataset and label fraction, one bar group per strategy, one colour per
    architecture / model (and layer selection when the study varies it); the from-scratch cells
    (model ``none``) as a dashed line in their architecture's colour."""
    groups = list(df.groupby(["data", "label_fraction"], sort=False))
    scratch, models = _scratch_split(df)
    keys = ["arch", "model"] + (["selection"] if models["selection"].nunique() > 1 else [])
    hues = list(dict.fromkeys(models[keys].astype(str).agg(" ".join, axis=1)))
    arch_colour = {a: f"C{hues.index(next(h for h in hues if h.startswith(a + ' '))) % 10}"
                   for a in dict.fromkeys(models["arch"])}
    plt, fig, axes = _panels(len(groups), w=max(5.0, 0.5 * models["strategy"].nunique() + 1.5))
    for ax, (key, g) in zip(axes, groups, strict=False):
        m = g[g.index.isin(models.index)]
        label = m[keys].astype(str).agg(" ".join, axis=1)
        strategies = list(dict.fromkeys(m["strategy"]))
        width = 0.8 / len(hues)
        for j, hue in enumerate(hues):
            h = m[label == hue].set_index("strategy").reindex(strategies)
            ax.bar(np.arange(len(strategies)) + (j - (len(hues) - 1) / 2) * width,
                   h["test_auc_mean"], width, yerr=h["test_auc_std"], capsize=1.5, label=hue,
                   color=f"C{j % 10}")
        for r in g[g.index.isin(scratch.index)].itertuples():
            ax.axhline(r.test_auc_mean, color=arch_colour.get(r.arch, "black"),
                       linestyle="--", linewidth=1, label=f"{r.arch} from scratch")
        ax.set_xticks(range(len(strategies)), strategies, rotation=30, ha="right", fontsize=8)
        low = np.nanmin(g["test_auc_mean"] - g["test_auc_std"].fillna(0))
        ax.set_ylim(max(0.0, low - 0.02), 1.0)
        ax.set_ylabel("test AUC (mean ± std)")
        ax.set_title(f"{key[0]}, labels {key[1]:g}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    legend = {}  # one entry per label over all panels, outside them (it hid bars inside)
    for ax in axes:
        legend.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    legend_w = 2.4  # inches added on the right for the legend
    fig.set_figwidth(fig.get_figwidth() + legend_w)
    fig.legend(legend.values(), legend.keys(), fontsize=7, loc="center right")
    fig.suptitle("test AUC per fine-tuning strategy; dashed: the same training from scratch",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - legend_w / fig.get_figwidth(), 1))
    with writing(path):  # a full disk: one line naming the figure
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _fractions(df: pd.DataFrame, path: Path) -> Path:
    """One panel per dataset / architecture / pretrained model, one line per layer selection
    (and strategy), the same colour for the same selection in every panel; the from-scratch
    cells (model ``none``) as a dashed black line in each panel of their dataset."""
    scratch, models = _scratch_split(df)
    groups = list(models.groupby(["data", "arch", "model"], sort=False))
    lines = list(dict.fromkeys(zip(models["selection"], models["strategy"], strict=True)))
    plt, fig, axes = _panels(len(groups), w=4.2, h=3.4)
    fractions = sorted(df["label_fraction"].unique())
    for ax, (key, g) in zip(axes, groups, strict=False):
        for j, line in enumerate(lines):
            h = g[(g["selection"] == line[0]) & (g["strategy"] == line[1])]
            if h.empty:
                continue
            h = h.sort_values("label_fraction")
            ax.errorbar(h["label_fraction"], h["test_auc_mean"], yerr=h["test_auc_std"],
                        marker="o", capsize=2, color=f"C{j % 10}",
                        label=line[0] if models["strategy"].nunique() == 1 else " ".join(line))
        base = scratch[(scratch["data"] == key[0]) & (scratch["arch"] == key[1])]
        if len(base):
            base = base.sort_values("label_fraction")
            ax.errorbar(base["label_fraction"], base["test_auc_mean"], yerr=base["test_auc_std"],
                        color="black", linestyle="--", marker="s", capsize=2,
                        label="from scratch")
        ax.set_xscale("log")
        ax.set_xticks(fractions, [f"{f:.0%}" for f in fractions])
        ax.minorticks_off()
        ax.set_xlabel("share of the training labels")
        ax.set_ylabel("test AUC (mean ± std)")
        ax.set_title(" ".join(map(str, key)), fontsize=9)
        ax.grid(alpha=0.3)
    low = np.nanmin(df["test_auc_mean"] - df["test_auc_std"].fillna(0))
    high = np.nanmax(df["test_auc_mean"] + df["test_auc_std"].fillna(0))
    for ax in axes[:len(groups)]:  # one scale, so panels compare at a glance
        ax.set_ylim(low - 0.005, min(1.0, high + 0.005))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    with writing(path):  # a full disk: one line naming the figure
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _fusion(df: pd.DataFrame, path: Path) -> Path:
    groups = list(df.groupby(["data", "label_fraction", "selection"], sort=False))
    plt, fig, axes = _panels(len(groups))
    for ax, (key, g) in zip(axes, groups, strict=False):
        ax.bar(range(len(g)), g["test_auc_mean"], yerr=g["test_auc_std"], capsize=3,
               color=[f"C{i}" for i in range(len(g))])
        ax.set_xticks(range(len(g)), g["model"], rotation=30, ha="right", fontsize=8)
        low = np.nanmin(g["test_auc_mean"] - g["test_auc_std"])
        ax.set_ylim(max(0.0, low - 0.03), 1.0)
        ax.set_ylabel("test AUC (mean ± std)")
        ax.set_title(f"{key[0]}, labels {key[1]:g}\n{key[2]}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with writing(path):  # a full disk: one line naming the figure
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
