"""Aggregate a study: ``results.csv`` (one row a run), ``results.md`` (mean ± std and 95 % CI per
cell, best per row in bold, each strategy against end-to-end ``ft`` by a paired t-test over
seeds) and PNG figures (layer range x SSL method heatmap, strategy bars, label-fraction curves).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ssl_ft.errors import UserError
from ssl_ft.study.grid import Cell

__all__ = ["auto_label", "auto_summary", "collect", "metrics_rows", "p_text", "paired_differences", "paired_tests",
           "summarize", "tally", "write_report"]

METRICS = ("test_auc", "test_acc", "val_auc", "val_acc")


def _selection(layers: Any, truncate: Any) -> str:
    t = float(truncate)
    return f"{layers}" + (f" t{t:g}" if t < 100 else "")


def auto_label(requested: dict[str, Any]) -> str:
    """The selection name of an auto run: ``auto`` (range and cut chosen), ``auto t100`` (range
    chosen, cut fixed), ``25-50 tauto`` (cut chosen)."""
    layers, truncate = requested["layers"], requested["truncate"]
    if layers == "auto" and truncate == "auto":
        return "auto"
    return f"{layers} t{truncate if truncate == 'auto' else f'{float(truncate):g}'}"


def metrics_rows(m: dict[str, Any], model: str | None = None) -> list[dict[str, Any]]:
    """The rows of one ``metrics.json``: one for a fine-tuning run (``model``: the given name,
    else the checkpoint's method or kind), one per variant for a fusion run (the fusion, each
    model alone, late fusion). Also used by ``tools/summarize.py``."""
    base = {"data": m.get("data"), "label_fraction": m["label_fraction"], "seed": m["seed"],
            "strategy": m["strategy"]}
    if "baselines" not in m:
        src = m["source"]
        speed = max((h.get("images_per_s", 0.0) for h in m.get("history", [])), default=None)
        auto = m.get("auto")
        return [{**base, "kind": "finetune", "model": str(model or src.get("method")
                                                           or src["kind"]),
                 "arch": src["arch"], "layers": m["layers"], "truncate": m["truncate"],
                 "selection": _selection(m["layers"], m["truncate"]) if auto is None
                 else auto_label(auto["requested"]),
                 "auto_choice": None if auto is None else _selection(m["layers"], m["truncate"]),
                 "wall_time_s": m.get("wall_time_s"), "cpu_time_s": m.get("cpu_time_s"),
                 "chooser_s": None if auto is None else auto["wall_time_s"],
                 "trainable_params": m["trainable_params"], "peak_images_per_s": speed,
                 **_scores(m)}]
    names = [x["name"] for x in m["models"]]
    depths = "+".join(f"{x['depth']:g}" for x in m["models"])
    common = {**base, "kind": "ensemble", "arch": "+".join(sorted({x["arch"]
                                                                   for x in m["models"]})),
              "selection": "+".join(names) + f" at {depths}"}  # one fusion experiment
    rows = [{**common, "model": "fusion(" + "+".join(names) + ")",
             "trainable_params": m["trainable_params"], **_scores(m)}]
    for variant, res in m["baselines"].items():
        label = "late fusion" if variant == "late_fusion" else f"{variant} alone"
        rows.append({**common, "model": label, "trainable_params": None, **_scores(res)})
    return rows


def collect(cells: list[Cell], out: str | Path) -> pd.DataFrame:
    """One row per finished run (a fusion cell gives one row per variant: the fusion, each
    model alone, late fusion)."""
    from ssl_ft.study.tuning_report import budget_columns, tune_columns

    rows = []
    for cell in cells:
        path = cell.folder(out) / "metrics.json"
        if cell.kind == "pretrain" or cell.trial is not None or not path.is_file():
            continue  # (tuning trials go to tuning.csv)
        m = json.loads(path.read_text())
        name = cell.labels.get("checkpoint")
        extra = {**budget_columns(m), **tune_columns(cell, m, out)} if cell.kind == "finetune" \
            else {}
        rows += [{"cell": cell.id, **r, **extra} for r in metrics_rows(m, None if name is None
                                                                       else str(name))]
    return pd.DataFrame(rows)


def _scores(m: dict) -> dict[str, float]:
    return {f"{s}_{k}": float(m[s][k]) for s in ("test", "val") for k in ("auc", "acc")}


GROUP = ["kind", "data", "arch", "label_fraction", "model", "selection", "strategy"]


def summarize(df: pd.DataFrame, by: list[str] = GROUP) -> pd.DataFrame:
    """Mean, std, 95 % CI half-width (t distribution) and n over seeds, per group of ``by``."""
    from scipy import stats

    rows = []
    for key, g in df.groupby(list(by), sort=False, dropna=False):
        row = dict(zip(by, key, strict=True))
        row["n"] = len(g)
        for metric in METRICS:
            v = g[metric].to_numpy(float)
            sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
            row[f"{metric}_mean"], row[f"{metric}_std"] = float(v.mean()), sd
            row[f"{metric}_ci95"] = (float(stats.t.ppf(0.975, len(v) - 1) * sd / math.sqrt(len(v)))
                                     if len(v) > 1 else float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


def paired_differences(df: pd.DataFrame, by: list[str], reference: dict[str, Any],
                       metric: str = "test_auc") -> pd.DataFrame:
    """Each group of ``by`` against the group that has the ``reference`` values and equals it
    on the other keys, paired by seed: the per-seed differences (group - reference), their
    mean and the two-sided paired t-test p-value. Rows are paired by (keys, seed), whatever
    ``df``'s index (e.g. frames concatenated without ``ignore_index``); two rows with the same
    keys and seed are refused (:class:`UserError`): they cannot be paired, and which one to keep
    is not ours to guess (add the key that tells them apart to ``by``)."""
    from scipy import stats

    df = df.reset_index(drop=True)  # a repeated label would select the rows of other groups
    _refuse_duplicates(df, [*by, "seed"])
    rest = [k for k in by if k not in reference]
    is_ref = pd.Series(np.logical_and.reduce([_equals(df[k], v) for k, v in reference.items()]),
                       index=df.index)
    rows = []
    for key, g in (df.groupby(rest, sort=False) if rest else [((), df)]):
        key = key if isinstance(key, tuple) else (key,)
        mask = is_ref.loc[g.index]
        ref = g[mask].set_index("seed")[metric]
        for other_key, h in g[~mask].groupby(list(reference), sort=False):
            other = h.set_index("seed")[metric]
            seeds = sorted(set(ref.index) & set(other.index))
            if not seeds:
                continue
            a, b = other.loc[seeds].to_numpy(float), ref.loc[seeds].to_numpy(float)
            # constant differences (e.g. seeds that coincide) leave the t statistic undefined
            testable = len(seeds) > 1 and np.ptp(a - b) > 1e-12  # (float noise is not spread)
            other_key = other_key if isinstance(other_key, tuple) else (other_key,)
            rows.append({**dict(zip(rest, key, strict=True)),
                         **dict(zip(reference, other_key, strict=True)),
                         f"{metric}_diff": float((a - b).mean()), "n": len(seeds),
                         "p": float(stats.ttest_rel(a, b).pvalue) if testable else float("nan"),
                         "per_seed": [round(float(d), 4) for d in a - b]})
    return pd.DataFrame(rows)


def _refuse_duplicates(df: pd.DataFrame, keys: list[str]) -> None:
    dup = df.duplicated(keys, keep=False)
    if dup.any():
        first = df[dup].iloc[0]
        shown = ", ".join(f"{k}={first[k]}" for k in keys)
        raise UserError(f"{int(dup.sum())} runs share their keys and seed (first: {shown}); "
                        "they cannot be paired: group by the key that tells them apart")


def tally(tests: pd.DataFrame, key: str = "strategy", alpha: float = 0.05) -> pd.DataFrame:
    """Per value of ``key`` in :func:`paired_differences` rows: in how many cases (rows) its mean
    is above / below the reference, how many of those at p < ``alpha``, and the mean difference
    over the cases (Davila et al. count "LP-FT beats FT in most cases" this way)."""
    diff = next(c for c in tests.columns if c.endswith("_diff"))
    rows = []
    for value, g in tests.groupby(key, sort=False):
        sig = g["p"] < alpha  # (NaN p-values compare False)
        rows.append({key: value, "cases": len(g), "above": int((g[diff] > 0).sum()),
                     "below": int((g[diff] < 0).sum()),
                     "above_sig": int((sig & (g[diff] > 0)).sum()),
                     "below_sig": int((sig & (g[diff] < 0)).sum()),
                     "mean_diff": float(g[diff].mean())})
    return pd.DataFrame(rows)


def p_text(p: float) -> str:
    """A paired test's p-value for a table: 3 significant digits, blank when undefined (the
    differences were constant, e.g. seeds that coincide)."""
    return "" if math.isnan(p) else f"{p:.3g}"


def _equals(column: pd.Series, value: Any) -> pd.Series:
    """``column == value`` as text, or as numbers when both read as numbers (100 == "100.0")."""
    same = column.astype(str) == str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return same
    return same | (pd.to_numeric(column, errors="coerce") == number)


def paired_tests(df: pd.DataFrame, metric: str = "test_auc", reference: str = "ft") -> pd.DataFrame:
    """Each strategy against ``reference`` on the same data/arch/labels/model/selection, paired
    by seed: mean difference and the two-sided paired t-test p-value."""
    ft = df[df["kind"] == "finetune"]
    keys = ["data", "arch", "label_fraction", "model", "selection", "strategy"]
    return paired_differences(ft, keys, {"strategy": reference}, metric)


AUTO_KEYS = ["data", "arch", "label_fraction", "model", "strategy"]


def auto_summary(df: pd.DataFrame, tolerance: float = 0.005) -> pd.DataFrame:
    """Each ``auto`` selection against the fixed ones of the same data / arch / labels / model /
    strategy: its mean test AUC and choices, the best fixed selection in hindsight (highest
    mean test AUC), end-to-end (``0-100``), and its compute share: the wall time of the auto
    runs (chooser included) over that of every fixed run of the group, all seeds."""
    if "auto_choice" not in df or df["auto_choice"].isna().all():
        return pd.DataFrame()
    ft = df[df["kind"] == "finetune"]
    rows = []
    for key, g in ft.groupby(AUTO_KEYS, sort=False):
        fixed = g[g["auto_choice"].isna()]
        means = fixed.groupby("selection")["test_auc"].mean()
        for label, a in g[g["auto_choice"].notna()].groupby("selection", sort=False):
            row = dict(zip(AUTO_KEYS, key, strict=True))
            counts = a["auto_choice"].value_counts()
            row.update(selection=label, n=len(a), auc=float(a["test_auc"].mean()),
                       std=float(a["test_auc"].std(ddof=1)) if len(a) > 1 else 0.0,
                       choices=", ".join(f"{c} x{k}" for c, k in counts.items()),
                       chooser_s=float(a["chooser_s"].mean()),
                       run_s=float(a["wall_time_s"].mean()))
            if not means.empty:
                best = means.idxmax()
                row.update(best=best, best_auc=float(means.max()),
                           vs_best=row["auc"] - float(means.max()))
            if "0-100" in means:
                row.update(e2e_auc=float(means["0-100"]), vs_e2e=row["auc"] - means["0-100"])
            for col, name in (("wall_time_s", "share"), ("cpu_time_s", "share_cpu")):
                known = col in g and g[col].notna().all()  # (a share of part of a row misleads)
                row[name] = float(a[col].sum() / fixed[col].sum()) if known else float("nan")
            row["meets"] = bool(abs(row.get("vs_best", np.nan)) <= tolerance
                                and row.get("vs_e2e", np.nan) >= -tolerance
                                and row["share"] <= 0.2)
            rows.append(row)
    return pd.DataFrame(rows)


def _pct(share: float) -> str:
    return "n/a" if math.isnan(share) else f"{100 * share:.0f} %"


def _auto_md(a: pd.DataFrame) -> list[str]:
    if a.empty:
        return []
    lines = ["", "## Auto against the fixed selections", "",
             "Mean test AUC over seeds of the `auto` runs (what each seed chose), of the best "
             "fixed selection in hindsight (the highest mean test AUC: chosen on test, so an "
             "optimistic target) and of end-to-end fine-tuning (0-100). Compute: the auto runs' "
             "wall time (chooser included) as a share of the wall time of every fixed run of "
             "the row (and the same for the CPU time of the processes, fairer on a shared "
             "machine), and the chooser's own wall seconds per run. Target (issue 15): within "
             "0.005 of the best fixed, at most 0.005 below end-to-end, at <= 20 % of the wall "
             "time.", "",
             "| data | arch | labels | model | strategy | auto | n | chose | best fixed | "
             "Δ best | end-to-end | Δ e2e | compute share (wall / CPU) | chooser s / run s | "
             "target |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in a.to_dict("records"):
        best = f"{r['best']} {r['best_auc']:.3f}" if "best" in r and pd.notna(r["best"]) else ""
        e2e = f"{r['e2e_auc']:.3f}" if pd.notna(r.get("e2e_auc", np.nan)) else ""
        lines.append(
            f"| {r['data']} | {r['arch']} | {r['label_fraction']:g} | {r['model']} | "
            f"{r['strategy']} | {r['auc']:.3f} ± {r['std']:.3f} | {r['n']} | {r['choices']} | "
            f"{best} | {r.get('vs_best', np.nan):+.4f} | {e2e} | {r.get('vs_e2e', np.nan):+.4f} "
            f"| {_pct(r['share'])} / {_pct(r['share_cpu'])} | {r['chooser_s']:.0f} / "
            f"{r['run_s']:.0f} | "
            f"{'met' if r['meets'] else 'missed'} |")
    return lines


def _fmt(mean: float, std: float, ci: float) -> str:
    ci_text = "" if math.isnan(ci) else f" [±{ci:.3f}]"
    return f"{mean:.3f} ± {std:.3f}{ci_text}"


def _pivot_md(s: pd.DataFrame, metric: str, column: str, bold: bool = True) -> list[str]:
    lines = []
    for key, g in s.groupby(["kind", "data", "arch", "label_fraction"], sort=False):
        cols = list(dict.fromkeys(g[column]))
        lines += [f"\n**{key[1]}**, {key[2]}, label fraction {key[3]:g} ({key[0]}): test "
                  f"{metric.split('_')[1].upper()}, mean ± std [95 % CI] over seeds (n)\n",
                  "| model | " + " | ".join(map(str, cols)) + " |",
                  "|---|" + "---|" * len(cols)]
        for model, h in g.groupby("model", sort=False):
            best = h[f"{metric}_mean"].max()
            cells = []
            for c in cols:
                r = h[h[column] == c]
                if r.empty:
                    cells.append("")
                    continue
                r = r.iloc[0]
                text = _fmt(r[f"{metric}_mean"], r[f"{metric}_std"], r[f"{metric}_ci95"])
                text += f" ({r['n']})"
                top = bold and r[f"{metric}_mean"] == best and len(h) > 1
                cells.append(f"**{text}**" if top else text)
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def _paired_md(title: str, tests: pd.DataFrame, what: str) -> list[str]:
    """A table of paired differences (:func:`paired_differences` rows); empty if none."""
    if tests.empty:
        return []
    lines = ["", f"## {title}", "",
             f"Paired over seeds: mean test-AUC difference ({what}) and the two-sided paired "
             "t-test p-value (none when the differences are constant).", "",
             "| data | arch | labels | model | layers | strategy | ΔAUC | n | p |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in tests.itertuples():
        lines.append(f"| {r.data} | {r.arch} | {r.label_fraction:g} | {r.model} | "
                     f"{r.selection} | {r.strategy} | {r.test_auc_diff:+.4f} | {r.n} | "
                     f"{p_text(r.p)} |")
    return lines


def write_report(df: pd.DataFrame, out: str | Path, title: str,
                 tuning: pd.DataFrame | None = None) -> list[Path]:
    """results.csv, results.md and the figures that the data supports; with ``tuning`` (the
    trials, :func:`~ssl_ft.study.tuning_report.tuning_table`) also tuning.csv and a tuning
    section. Returns the files."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.csv", out / "results.md"]
    _write_text(written[0], df.to_csv(index=False))
    if tuning is not None and not tuning.empty:
        _write_text(out / "tuning.csv", tuning.to_csv(index=False))
        written.append(out / "tuning.csv")
    lines = [f"# {title}", "", f"{len(df)} rows (a fusion run gives one per variant). Bold: the "
             "best fine-tuning mean in its row. Fusion tables: one column per fusion "
             "experiment (its models and depths), with each model alone and late fusion."]
    if df.empty:
        _write_text(written[1], "\n".join(lines + ["", "No finished runs yet."]) + "\n")
        return written
    s = summarize(df)
    _write_text(out / "summary.csv", s.to_csv(index=False))
    written.append(out / "summary.csv")
    for kind in ("finetune", "ensemble"):
        part = s[s["kind"] == kind].copy()
        if part.empty:
            continue
        column = "strategy" if part["strategy"].nunique() > 1 else "selection"
        if kind == "finetune" and column == "strategy":
            part["strategy"] = part["selection"] + " " + part["strategy"]
        lines += ["", f"## {'Fine-tuning' if kind == 'finetune' else 'Fusion'}"]
        for metric in ("test_auc", "test_acc"):
            lines += _pivot_md(part, metric, column, bold=kind == "finetune")
    ft = df[df["kind"] == "finetune"]
    if tuning is not None and not tuning.empty:
        from ssl_ft.study.tuning_report import tuning_md

        lines += tuning_md(df, tuning)
    lines += _auto_md(auto_summary(df))
    tests, note = _or_note(lambda: paired_tests(df))
    lines += note or _paired_md("Strategies against end-to-end fine-tuning (ft)", tests,
                                "strategy - ft")
    if not tests.empty:
        lines += ["", "How often each strategy's mean is above / below ft over the cases above "
                  "(data x arch x labels x model x layers), and how often at p < 0.05 (uncorrected "
                  "for the number of tests):", "",
                  "| strategy | cases | above ft | below ft | above, p < 0.05 | below, p < 0.05 "
                  "| mean ΔAUC |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r.strategy} | {r.cases} | {r.above} | {r.below} | {r.above_sig} | "
                  f"{r.below_sig} | {r.mean_diff:+.4f} |" for r in tally(tests).itertuples()]
    if ft["selection"].nunique() > 1 and (ft["selection"] == "0-100").any():
        keys = ["data", "arch", "label_fraction", "model", "strategy", "selection"]
        sel, note = _or_note(lambda: paired_differences(ft, keys, {"selection": "0-100"}))
        lines += note or _paired_md("Layer selections against end-to-end fine-tuning (0-100)",
                                    sel, "selection - 0-100")
    if ft["model"].nunique() > 1 and (ft["model"] == "none").any():
        keys = ["data", "arch", "label_fraction", "selection", "strategy", "model"]
        vs, note = _or_note(lambda: paired_differences(ft, keys, {"model": "none"}))
        lines += note or _paired_md("Pretrained models against training from scratch (none)",
                                    vs, "model - none")
    from ssl_ft.study.figures import draw_figures

    figures = draw_figures(s, out)
    lines += [""] + [f"![{f.stem}]({f.name})" for f in figures]
    _write_text(written[1], "\n".join(lines) + "\n")
    return written + figures


def _or_note(make) -> tuple[pd.DataFrame, list[str]]:
    """``make()``'s paired table, or an empty one and a note: a grid that varies a key the
    pairing does not group by (e.g. ``optimizer``) has runs that cannot be paired by seed, and
    the report says so instead of failing after every cell has run."""
    try:
        return make(), []
    except UserError as err:
        return pd.DataFrame(), ["", f"Paired tests not made: {err}."]


def _write_text(path: Path, text: str) -> None:
    """Atomically (a study killed while it reports never leaves half a results.csv)."""
    from ssl_ft.checkpoint._files import atomic_write

    atomic_write(path, lambda file: file.write(text.encode()))
