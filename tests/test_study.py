"""Studies: grid expansion, resume after a kill, aggregation statistics, figures, the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from ssl_ft.errors import UserError
from ssl_ft.study import (
    Study,
    collect,
    expand,
    load_study,
    p_text,
    paired_tests,
    run_study,
    summarize,
    write_report,
)

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "study" / "tiny.yaml"


def _study(tmp_path, **kw) -> Path:
    data = {"name": "t", "out": str(tmp_path / "out"),
            "checkpoints": {"simclr": "runs/simclr_{data}/checkpoint.pt"},
            "pretrain": {"genesis": {"recipe": "recipes/pretrain/genesis_{data}.yaml",
                                     "overrides": ["train.epochs=1"]}},
            "finetune": {"base": {"epochs": 2},
                         "grid": {"data": ["pneumoniamnist", "breastmnist"],
                                  "checkpoint": ["simclr", "genesis"],
                                  "layers,truncate": [["0-25", 100], ["0-75", 75]],
                                  "seed": [0, 1, 2]},
                         "extra": [{"checkpoint": "none", "arch": "resnet18",
                                    "layers,truncate": ["0-100", 100]}]},
            "ensemble": {"grid": {"data": ["pneumoniamnist"],
                                  "checkpoints": [["simclr", "genesis"]], "seed": [0, 1]}}}
    data.update(kw)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_pretraining_cell_is_done_once_its_summary_is_written(tmp_path):
    """Found by tools/killtest.py: a study killed inside a pretraining cell's last write
    (summary.json, after checkpoint.pt) skipped the cell on restart and never wrote it."""
    from ssl_ft.study import is_done

    study = load_study(_study(tmp_path))
    cell = next(c for c in expand(study) if c.kind == "pretrain")
    folder = cell.folder(study.out)
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"")
    assert not is_done(cell, study.out)  # resumed: the run writes summary.json
    (folder / "summary.json").write_text("{}")
    assert is_done(cell, study.out)
    (folder / "checkpoint.pt").unlink()
    assert not is_done(cell, study.out)


def test_grid_expansion(tmp_path):
    study = load_study(_study(tmp_path))
    cells = expand(study)
    kinds = [c.kind for c in cells]
    # 2 datasets x 2 checkpoints x 2 selections x 3 seeds, + 2 x 3 from-scratch, + 2 fusions,
    # + the genesis pretraining of each dataset, which comes first
    assert kinds.count("finetune") == 24 + 6 and kinds.count("ensemble") == 2
    assert kinds[:2] == ["pretrain", "pretrain"] and kinds.count("pretrain") == 2
    ids = [c.id for c in cells]
    assert len(set(ids)) == len(ids) and ids == [c.id for c in expand(study)]  # stable
    cell = next(c for c in cells if c.labels.get("checkpoint") == "simclr"
                and c.labels["data"] == "breastmnist" and c.labels["layers"] == "0-75")
    assert cell.config["checkpoint"] == "runs/simclr_breastmnist/checkpoint.pt"
    assert cell.config["truncate"] == 75 and cell.config["epochs"] == 2
    gen = next(c for c in cells if c.labels.get("checkpoint") == "genesis")
    assert gen.needs and gen.config["checkpoint"].endswith(f"{gen.needs[0]}/checkpoint.pt")
    longer = load_study(_study(tmp_path), ["pretrain.genesis.overrides=[train.epochs=2]"])
    assert {c.id for c in expand(longer) if c.kind == "pretrain"}.isdisjoint(
        c.id for c in cells if c.kind == "pretrain")  # new pretraining, new cell
    scratch = [c for c in cells if c.labels.get("checkpoint") == "none"]
    assert {c.labels["layers"] for c in scratch} == {"0-100"} and len(scratch) == 6
    pre = cells[0]
    assert pre.config["overrides"][:2] == [f"data.name={pre.labels['data']}", "train.epochs=1"]
    fusion = [c for c in cells if c.kind == "ensemble"][0]
    assert fusion.config["checkpoints"][0] == "runs/simclr_pneumoniamnist/checkpoint.pt"


def test_a_cell_killed_after_its_last_file_loses_its_stale_lock_and_temp_files(tmp_path):
    from ssl_ft.runlock import LOCK_NAME
    from ssl_ft.study.grid import Cell
    from ssl_ft.study.runner import prune

    cell = Cell("finetune", "finetune/x", {}, {})
    folder = cell.folder(tmp_path)
    folder.mkdir(parents=True)
    for name in ("metrics.json", "model.pt", "last.pt", LOCK_NAME, ".best.pt.tmp-vm-1-0badf00d"):
        (folder / name).write_text("{}")
    prune(cell, tmp_path, "model")
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json", "model.pt"]


def test_a_section_of_extra_entries_only_has_no_default_cell(tmp_path):
    study = load_study(_study(tmp_path, ensemble=None, finetune={
        "base": {"epochs": 1}, "extra": [{"checkpoint": "none", "seed": 0},
                                         {"checkpoint": "none", "seed": 1}]}))
    assert [c.labels for c in expand(study)] == [{"checkpoint": "none", "seed": 0},
                                                 {"checkpoint": "none", "seed": 1}]


@pytest.mark.parametrize(("change", "needle"), [
    ({"finetune": {"grid": {"layers,truncate": [["0-25"]]}}}, "does not have 2 values"),
    ({"finetune": {"grid": {"seed": []}}}, "non-empty list"),
    ({"finetune": {"grid": {"strategy": ["nope"]}}}, "'nope'"),
    ({"finetune": {"grid": {"layers": ["abc"]}}}, "abc"),
    ({"workers": 0}, "workers"),
    ({"keep": "weights"}, "keep must be one of"),
    ({"colour": 1}, "colour"),
    ({"finetune": {"base": {"epochs": 1}}, "ensemble": None}, "finetune.grid is empty"),
    ({"ensemble": {"grid": {}}}, "ensemble.grid is empty"),
    ({"finetune": None, "ensemble": None}, "no finetune or ensemble section"),
])
def test_bad_study_recipes_name_the_problem(tmp_path, change, needle):
    with pytest.raises(UserError, match=needle):
        expand(load_study(_study(tmp_path, **change)))


def _tiny(tmp_path, *extra):
    return load_study(TINY, [f"out={tmp_path / 'tiny'}", "threads=1",
                             "finetune.grid.label_fraction=[1.0]", "finetune.grid.seed=[0]",
                             "ensemble.grid.seed=[0]", *extra])


def test_a_killed_study_resumes_where_it_stopped(data_root, tmp_path, monkeypatch):
    import ssl_ft.study.runner as runner

    monkeypatch.setenv("SSL_FT_DATA", str(data_root))
    study = _tiny(tmp_path)
    cells = expand(study)
    assert len(cells) == 5
    real, calls = runner.run_cell, []

    def dies_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "run_cell", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_study(study, cells, progress=False)
    monkeypatch.setattr(runner, "run_cell", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    assert run_study(study, cells, progress=False) == {}
    assert len(calls) == 5 and len(set(calls)) == 5  # the two finished cells were not re-run
    for cell in cells:  # keep: model (the default) drops the resume state of finished cells
        names = {f.name for f in cell.folder(study.out).iterdir()}
        assert "metrics.json" in names and not names & {"last.pt", "best.pt"}
        assert ("model.pt" in names) == (cell.kind == "finetune")
    df = collect(cells, study.out)
    assert len(df) == 4 + 4  # 4 fine-tuning runs; the fusion, the 2 models alone, late fusion
    files = write_report(df, study.out, study.name)
    names = {f.name for f in files}
    assert {"results.csv", "results.md", "heatmap.png", "strategies.png", "fusion.png"} <= names
    assert "label_fractions.png" not in names  # one label fraction: nothing to draw
    for f in files:
        if f.suffix == ".png":
            assert f.read_bytes()[:4] == b"\x89PNG"


def test_cli_runs_lists_and_reports(data_root, tmp_path, tool, capsys, monkeypatch):
    monkeypatch.setenv("SSL_FT_DATA", str(data_root))
    mod = tool("study")
    argv = [str(TINY), f"out={tmp_path / 's'}", "threads=1", "finetune.grid.seed=[0]",
            "finetune.grid.label_fraction=[1.0]", "finetune.grid.strategy=[ft]",
            "ensemble.grid.seed=[0]"]
    assert mod.run(mod.main, [*argv, "--list"]) == 0
    assert capsys.readouterr().out.count("todo ") == 3
    assert mod.run(mod.main, argv) == 0
    capsys.readouterr()
    assert mod.run(mod.main, [*argv, "--list"]) == 0
    assert capsys.readouterr().out.count("done ") == 3
    text = (tmp_path / "s" / "results.md").read_text()
    assert "## Fine-tuning" in text and "## Fusion" in text and "heatmap.png" in text


@pytest.mark.parametrize(("override", "needle"), [
    ("checkpoints.random=/nowhere/simclr.pt", "checkpoint not found: /nowhere/simclr.pt"),
    ("finetune.grid.data=[pneumoniamnist,nosuchdata]", "unknown dataset 'nosuchdata'"),
])
def test_missing_inputs_stop_the_study_before_any_cell(data_root, tmp_path, tool, capsys,
                                                       monkeypatch, override, needle):
    monkeypatch.setenv("SSL_FT_DATA", str(data_root))
    mod = tool("study")
    out = tmp_path / "s"
    assert mod.run(mod.main, [str(TINY), f"out={out}", override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "cell(s)" in err
    assert not (out / "cells").exists()  # nothing ran


def _df(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for strategy, aucs in values.items():
        for seed, auc in enumerate(aucs):
            rows.append({"kind": "finetune", "data": "d", "arch": "resnet18",
                         "label_fraction": 1.0, "model": "simclr", "selection": "0-100",
                         "strategy": strategy, "seed": seed, "test_auc": auc, "test_acc": 0.8,
                         "val_auc": 0.9, "val_acc": 0.9})
    return pd.DataFrame(rows)


def test_statistics_on_known_inputs():
    df = _df({"ft": [0.90, 0.92, 0.94], "lp-ft": [0.93, 0.94, 0.98]})
    s = summarize(df).set_index("strategy")
    assert s.loc["ft", "test_auc_mean"] == pytest.approx(0.92)
    assert s.loc["ft", "test_auc_std"] == pytest.approx(0.02)
    # 95 % CI half-width: t(0.975, 2) * sd / sqrt(3) = 4.303 * 0.02 / 1.732
    assert s.loc["ft", "test_auc_ci95"] == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-5)
    assert s.loc["ft", "n"] == 3
    t = paired_tests(df).iloc[0]
    assert t["strategy"] == "lp-ft" and t["test_auc_diff"] == pytest.approx(0.03)
    want = stats.ttest_rel([0.93, 0.94, 0.98], [0.90, 0.92, 0.94]).pvalue
    assert t["p"] == pytest.approx(want)
    assert np.isclose(want, 0.0351, atol=1e-3)  # t = 0.03 / (0.01 / sqrt 3) = 5.20, 2 df
    same = paired_tests(_df({"ft": [0.1, 0.2, 0.5], "lp": [0.2, 0.3, 0.6]})).iloc[0]
    assert math.isnan(same["p"]) and p_text(same["p"]) == ""  # +0.1 each (to float noise): no test
    assert p_text(want) == "0.0351"


def test_report_marks_the_best_and_draws(tmp_path):
    df = _df({"ft": [0.90, 0.92, 0.94], "lp-ft": [0.93, 0.94, 0.98], "lp": [0.8, 0.81, 0.79]})
    files = write_report(df, tmp_path, "known")
    text = (tmp_path / "results.md").read_text()
    assert "**0.950 ± 0.026" in text  # lp-ft, the best in its row
    assert "| 0-100 | lp | -0.1200 | 3 |" in text  # lp - ft over the 3 paired seeds
    assert "| lp | 1 | 0 | 1 | 0 | 1 | -0.1200 |" in text  # the tally: below ft, p < 0.05
    assert (tmp_path / "strategies.png") in files


def test_report_compares_selections_and_scratch_by_seed(tmp_path):
    rows = []
    for model, sel, aucs in [("simclr", "0-100", [0.90, 0.92, 0.94]),
                             ("simclr", "0-75 t75", [0.92, 0.93, 0.97]),
                             ("none", "0-100", [0.85, 0.90, 0.92])]:
        rows += [{**r, "model": model, "selection": sel}
                 for r in _df({"ft": aucs}).to_dict("records")]
    fewer = [{**r, "label_fraction": 0.1, "test_auc": r["test_auc"] - 0.05} for r in rows]
    files = write_report(pd.DataFrame(rows + fewer), tmp_path, "known")
    assert (tmp_path / "label_fractions.png") in files  # one panel (simclr), scratch dashed
    assert (tmp_path / "label_fractions.png").read_bytes()[:4] == b"\x89PNG"
    text = (tmp_path / "results.md").read_text()
    assert "## Layer selections against end-to-end fine-tuning (0-100)" in text
    p_sel = stats.ttest_rel([0.92, 0.93, 0.97], [0.90, 0.92, 0.94]).pvalue
    assert f"| simclr | 0-75 t75 | ft | +0.0200 | 3 | {p_sel:.3g} |" in text
    assert "## Pretrained models against training from scratch (none)" in text
    p_pre = stats.ttest_rel([0.90, 0.92, 0.94], [0.85, 0.90, 0.92]).pvalue
    assert f"| simclr | 0-100 | ft | +0.0300 | 3 | {p_pre:.3g} |" in text
    assert "Strategies against" not in text  # one strategy: nothing to compare


def test_strategy_study_draws_bars_per_dataset_not_a_one_column_heatmap(tmp_path, monkeypatch):
    """A Davila-like study: strategies x architectures x datasets, from scratch per arch."""
    import matplotlib.axes

    rows = []
    for data, fraction in (("xray", 0.1), ("ultrasound", 1.0)):
        for arch in ("resnet50", "vgg19_bn"):
            for model, strategies in ((f"simclr_{arch}", ("ft", "lp", "lp-ft")), ("none", ("ft",))):
                rows += [{**r, "data": data, "arch": arch, "model": model,
                          "label_fraction": fraction}
                         for r in _df({s: [0.8, 0.85, 0.9] for s in strategies}).to_dict("records")]
    import matplotlib.figure

    bars, lines, legends = [], [], []
    real_bar = matplotlib.axes.Axes.bar
    monkeypatch.setattr(matplotlib.axes.Axes, "bar",
                        lambda self, x, *a, **k: bars.append(k["label"]) or real_bar(self, x, *a, **k))
    real_legend = matplotlib.figure.Figure.legend
    monkeypatch.setattr(matplotlib.figure.Figure, "legend",
                        lambda self, h, lab, **k: legends.append(list(lab)) or real_legend(self, h, lab, **k))
    real_axhline = matplotlib.axes.Axes.axhline
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline",
                        lambda self, y=0, **k: lines.append(k["label"]) or real_axhline(self, y, **k))
    files = write_report(pd.DataFrame(rows), tmp_path, "strategies")
    names = {f.name for f in files}
    assert "strategies.png" in names and "heatmap.png" not in names  # one layer selection
    assert "label_fractions.png" not in names  # one label fraction per dataset: no curves
    # a panel per dataset; in each, one bar series per pretrained model, scratch as a line
    assert bars == ["resnet50 simclr_resnet50", "vgg19_bn simclr_vgg19_bn"] * 2
    assert lines == ["resnet50 from scratch", "vgg19_bn from scratch"] * 2
    # one legend beside the panels (inside the first one it hid bars), each entry once
    assert len(legends) == 1 and sorted(legends[0]) == [
        "resnet50 from scratch", "resnet50 simclr_resnet50",
        "vgg19_bn from scratch", "vgg19_bn simclr_vgg19_bn"]
    text = (tmp_path / "results.md").read_text()
    assert "| xray | vgg19_bn | 0.1 | simclr_vgg19_bn | 0-100 | ft | +0.0000 | 3 |" in text


def test_tally_counts_cases_above_and_below_the_reference():
    from ssl_ft.study.report import tally

    tests = pd.DataFrame({"strategy": ["lp-ft", "lp-ft", "lp-ft", "lp"],
                          "test_auc_diff": [0.02, 0.01, -0.03, 0.0],
                          "p": [0.01, 0.3, 0.04, float("nan")]})
    t = tally(tests).set_index("strategy")
    assert t.loc["lp-ft"].to_dict() == {"cases": 3, "above": 2, "below": 1, "above_sig": 1,
                                        "below_sig": 1, "mean_diff": pytest.approx(0.0)}
    assert t.loc["lp", "above"] == 0 and t.loc["lp", "below"] == 0


def test_fusion_experiments_that_share_a_model_stay_apart(tmp_path):
    from ssl_ft.study.report import metrics_rows

    def run(a: str, b: str, auc: float) -> dict:
        score = {"auc": auc, "acc": 0.8}
        return {"data": "d", "label_fraction": 1.0, "seed": 0, "strategy": "lp",
                "trainable_params": 10, "test": score, "val": score,
                "models": [{"name": a, "arch": "resnet18", "depth": 50},
                           {"name": b, "arch": "resnet18", "depth": 75}],
                "baselines": {a: {"test": score, "val": score},
                              b: {"test": {"auc": 0.7, "acc": 0.6}, "val": score},
                              "late_fusion": {"test": {"auc": auc - 0.01, "acc": 0.7},
                                              "val": score}}}
    df = pd.DataFrame(metrics_rows(run("simclr", "genesis", 0.95))
                      + metrics_rows(run("moco", "genesis", 0.90)))
    s = summarize(df).set_index(["selection", "model"])
    assert s.loc[("simclr+genesis at 50+75", "late fusion"), "test_auc_mean"] == 0.94
    assert s.loc[("moco+genesis at 50+75", "late fusion"), "test_auc_mean"] == 0.89
    assert (s["n"] == 1).all()  # the shared "genesis alone" is not counted twice
    write_report(df, tmp_path, "fusion")
    assert "| late fusion | 0.940 ± 0.000 (1) | 0.890 ± 0.000 (1) |" in (
        tmp_path / "results.md").read_text()


def test_empty_study_report(tmp_path):
    files = write_report(pd.DataFrame(), tmp_path, "nothing yet")
    assert "No finished runs yet" in files[1].read_text()


def test_study_defaults():
    assert Study().workers == 1


@pytest.mark.parametrize("name", ["tiny", "khan_fang", "davila", "auto"])
def test_shipped_study_recipes_expand(name):
    cells = expand(load_study(REPO / "recipes" / "study" / f"{name}.yaml"))
    assert cells and len({c.id for c in cells}) == len(cells)
    if name == "auto":  # 3 datasets x 2 fractions x 2 models x (auto + 8 fixed) x 3 seeds
        assert len(cells) == 324
        auto = [c for c in cells if c.config["layers"] == "auto"]
        assert len(auto) == 36 and all(c.config["truncate"] == "auto" for c in auto)
        tiny = [c for c in cells if c.config["data"] == "breastmnist"
                and c.config["label_fraction"] == 0.1]
        assert {(c.config["epochs"], c.config["batch_size"]) for c in tiny} == {(48, 16)}
    if name == "khan_fang":
        kinds = [c.kind for c in cells]
        assert kinds.count("finetune") == 3 * 6 * 3 * 3 + 3 * 3 and kinds.count("ensemble") == 18
        low = [c for c in cells if c.kind == "finetune" and c.config.get("label_fraction") == 0.01]
        assert low and all(c.config["epochs"] == 48 and c.config["batch_size"] == 16 for c in low)
    if name == "davila":  # 3 archs pretrained once on PneumoniaMNIST, 9 x 3 x 3 x 3 cells, scratch
        pre = [c for c in cells if c.kind == "pretrain"]
        assert [c.labels["data"] for c in pre] == ["pneumoniamnist"] * 3
        ssl = [c for c in cells if c.kind == "finetune" and c.needs]
        assert len(ssl) == 243
        scratch = [c for c in cells if c.kind == "finetune" and c.config["checkpoint"] == "none"]
        assert len(scratch) == 3 * 3 * 3 and {c.config["strategy"] for c in scratch} == {"ft"}
        derm = [c for c in ssl if c.config.get("data") == "ham10000_dermoscopy_unique_lesion_64"]
        assert len(derm) == 81 and all("_pneumoniamnist-" in c.needs[0]
                                       and c.config["limit"] == 500 for c in derm)


def _run_metrics(selection: str, seed: int, auc: float, wall: float,
                 auto: dict | None = None) -> dict:
    layers, _, cut = selection.partition(" t")
    m = {"data": "d", "label_fraction": 0.1, "seed": seed, "strategy": "ft",
         "source": {"method": "simclr", "kind": "ssl_ft", "arch": "resnet18"},
         "layers": layers, "truncate": float(cut or 100), "trainable_params": 1,
         "test": {"auc": auc, "acc": 0.8}, "val": {"auc": 0.9, "acc": 0.9},
         "wall_time_s": wall, "history": []}
    if auto is not None:
        m["auto"] = auto
    return m


def test_report_puts_auto_beside_the_fixed_selections(tmp_path):
    from ssl_ft.study.report import auto_label, auto_summary, metrics_rows

    rows = []
    for seed in (0, 1):
        rows += metrics_rows(_run_metrics("0-100", seed, 0.90, 100.0))
        rows += metrics_rows(_run_metrics("25-50", seed, 0.95 + 0.01 * seed, 60.0))
        rows += metrics_rows(_run_metrics("0-75 t75", seed, 0.92, 80.0))
        chose = "25-50" if seed == 0 else "0-75 t75"
        rec = {"requested": {"layers": "auto", "truncate": "auto"}, "wall_time_s": 12.0}
        rows += metrics_rows(_run_metrics(chose, seed, 0.95 if seed == 0 else 0.92, 72.0, rec),
                             model="simclr")
    df = pd.DataFrame(rows)
    assert set(df["selection"]) == {"0-100", "25-50", "0-75 t75", "auto"}
    a = auto_summary(df).iloc[0]
    assert (a["selection"], a["n"], a["best"], a["best_auc"]) == ("auto", 2, "25-50", 0.955)
    assert a["auc"] == pytest.approx(0.935) and a["vs_best"] == pytest.approx(-0.02)
    assert a["vs_e2e"] == pytest.approx(0.035)
    assert a["share"] == pytest.approx(144 / 480) and a["chooser_s"] == 12.0
    assert a["choices"] == "25-50 x1, 0-75 t75 x1" and not a["meets"]
    assert np.isnan(a["share_cpu"])  # no CPU times recorded
    df.loc[df["seed"] == 1, "cpu_time_s"] = 10.0  # ... or only for some runs of the row
    assert np.isnan(auto_summary(df).iloc[0]["share_cpu"])
    df["cpu_time_s"] = np.where(df["selection"] == "auto", 5.0, 20.0)
    assert auto_summary(df).iloc[0]["share_cpu"] == pytest.approx(10 / 120)
    df = df.drop(columns="cpu_time_s")
    write_report(df, tmp_path, "auto")
    text = (tmp_path / "results.md").read_text()
    assert "## Auto against the fixed selections" in text
    assert ("| d | resnet18 | 0.1 | simclr | ft | 0.935 ± 0.021 | 2 | 25-50 x1, 0-75 t75 x1 | "
            "25-50 0.955 | -0.0200 | 0.900 | +0.0350 | 30 % / n/a | 12 / 72 | missed |") in text
    assert auto_label({"layers": "auto", "truncate": 100}) == "auto t100"
    assert auto_label({"layers": "25-50", "truncate": "auto"}) == "25-50 tauto"


def test_auto_study_runs_two_cells(data_root, tmp_path, tool, monkeypatch):
    """recipes/study/auto.yaml cut down to one auto and one fixed cell on 100 images."""
    from ssl_ft.checkpoint import save_checkpoint
    from ssl_ft.models import create_backbone

    monkeypatch.setenv("SSL_FT_DATA", str(data_root))
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ck = tmp_path / "simclr.pt"
    save_checkpoint(ck, create_backbone("resnet18", in_chans=1).state_dict(), {
        "method": "simclr", "family": "contrastive", "arch": "resnet18", "in_chans": 1,
        "image_size": 28, "stem": "standard", "recipe": {}, "data_fingerprint": "x",
        "normalization": {"mean": [0.5], "std": [0.25], "max_value": 255}, "epoch": 1})
    mod = tool("study")
    argv = [str(REPO / "recipes" / "study" / "auto.yaml"), f"out={tmp_path / 's'}", "threads=1",
            f"checkpoints.simclr={ck}", "finetune.grid.checkpoint=[simclr]",
            "finetune.grid.seed=[0]", "finetune.base.limit=100",
            "finetune.grid.data,label_fraction,epochs,batch_size,size,channels="
            "[[breastmnist,1.0,2,32,null,null]]",
            "finetune.grid.layers,truncate=[[auto,auto],[0-100,100]]"]
    assert mod.run(mod.main, argv) == 0
    text = (tmp_path / "s" / "results.md").read_text()
    assert "## Auto against the fixed selections" in text
    line = next(x for x in text.splitlines() if x.startswith("| breastmnist | resnet18 | 1 |"))
    assert "| auto x1 |" not in line and " x1 | 0-100 " in line


def test_report_of_runs_that_cannot_be_paired_says_so_instead_of_failing(tmp_path):
    """A grid axis the pairing does not group by (two optimisers, say) leaves two runs per keys
    and seed: the report is still written, and says why its paired tables are missing."""
    df = _df({"ft": [0.90, 0.92, 0.94], "lp-ft": [0.93, 0.94, 0.98]})
    write_report(pd.concat([df, df.assign(test_auc=df.test_auc - 0.01)]), tmp_path, "twice")
    text = (tmp_path / "results.md").read_text()
    assert "Paired tests not made: 12 runs share their keys and seed (first: data=" in text
    assert "## Strategies against end-to-end fine-tuning (ft)" not in text
