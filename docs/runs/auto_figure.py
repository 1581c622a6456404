"""docs/auto.md's figure: per row (data, labels, model) the mean test AUC of every fixed selection
(bars, the seeds as dots), end-to-end marked, and where auto lands (a line): its own runs'
mean. Usage: python docs/runs/auto_figure.py STUDY_OUT [STUDY_OUT ...] --out PNG

Several study folders are read as one (e.g. the auto study and the general-source one); a
row needs every fixed selection and auto.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from auto_rules import _load  # noqa: E402

FIXED = ["0-25", "25-50", "50-75", "75-100", "0-100", "50-100", "25-75", "0-75 t75"]
SHORT = {"pneumoniamnist": "PneumoniaMNIST", "breastmnist": "BreastMNIST",
         "ham10000_dermoscopy_unique_lesion_64": "HAM10000"}


def rows(folders: list[Path]) -> dict[tuple, dict[str, list[float]]]:
    out: dict[tuple, dict[str, list[float]]] = {}
    for folder in folders:
        for (data, frac, method, _seed), g in _load(folder).items():
            if "auto" not in g or not all(n in g for n in FIXED):
                continue
            row = out.setdefault((SHORT.get(data, data), frac, method), {})
            for n in [*FIXED, "auto"]:
                row.setdefault(n, []).append(g[n]["test"]["auc"])
    return dict(sorted(out.items()))


def plot(data: dict[tuple, dict[str, list[float]]], path: Path) -> None:
    n = len(data)
    cols = min(4, n)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(3.6 * cols,
                                                                   2.9 * ((n + cols - 1) // cols)),
                             squeeze=False)
    x = np.arange(len(FIXED))
    for ax, ((name, frac, method), r) in zip(axes.flat, data.items(), strict=False):
        means = [np.mean(r[f]) for f in FIXED]
        colours = ["tab:orange" if f == "0-100" else "tab:blue" for f in FIXED]
        ax.bar(x, means, color=colours, alpha=0.75)
        for i, f in enumerate(FIXED):
            ax.plot([i] * len(r[f]), r[f], "k.", ms=3)
        auto = float(np.mean(r["auto"]))
        ax.axhline(auto, color="tab:red", lw=1.5, label=f"auto {auto:.3f}")
        ax.axhline(max(means) - 0.005, color="grey", ls=":", lw=1, label="best - 0.005")
        lo = min(min(min(v) for v in r.values()), auto) - 0.01
        ax.set_ylim(lo, max(max(v) for v in r.values()) + 0.005)
        ax.set_xticks(x, FIXED, rotation=60, fontsize=7)
        ax.set_title(f"{name} {frac:.0%} {method} ({len(r['auto'])} seeds)", fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes[0][0].set_ylabel("test AUC (mean, seeds as dots)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path} ({n} rows)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    plot(rows(a.folders), a.out)


if __name__ == "__main__":
    main()
