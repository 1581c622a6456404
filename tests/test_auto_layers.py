"""layers/truncate auto: the candidates, a constructed case with a known answer, the race, the
test split never read, every architecture, the CLI, resume, fusion depth auto."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import ssl_ft.auto_layers as auto_layers
from ssl_ft.auto_layers import AutoConfig, candidate_set, resolve_auto
from ssl_ft.checkpoint import save_checkpoint
from ssl_ft.cli import run
from ssl_ft.errors import UserError
from ssl_ft.finetune import FinetuneConfig, finetune
from ssl_ft.models import DepthMap, create_backbone


def _save(path: Path, bb, arch: str, size: int = 28, stem: str = "standard") -> Path:
    meta = {"method": "simclr", "family": "contrastive", "arch": arch, "in_chans": 1,
            "image_size": size, "stem": stem,
            "normalization": {"mean": [0.5], "std": [0.25], "max_value": 255},
            "recipe": {}, "data_fingerprint": "x", "epoch": 1}
    save_checkpoint(path, bb.state_dict(), meta)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    return _save(tmp_path_factory.mktemp("ck") / "simclr.pt",
                 create_backbone("resnet18", in_chans=1), "resnet18")


@pytest.fixture(scope="module")
def broken_top(tmp_path_factory) -> Path:
    """A resnet18 whose last quarter outputs a constant: every layer4 convolution and the
    last BatchNorm scale are zero, so only the units up to 75 % carry the signal."""
    torch.manual_seed(2)
    bb = create_backbone("resnet18", in_chans=1)
    with torch.no_grad():
        for name, p in bb.layer4.named_parameters():
            if "conv" in name or "downsample.0" in name or "bn" in name or "downsample.1" in name:
                p.zero_()
    return _save(tmp_path_factory.mktemp("ck") / "broken.pt", bb, "resnet18")


def _cfg(data_root, out, ckpt, **kw) -> FinetuneConfig:
    base = dict(checkpoint=str(ckpt), data="pneumoniamnist", data_root=str(data_root),
                limit=160, epochs=4, batch_size=32, threads=1, layers="auto",
                truncate="auto", out=str(out))
    return FinetuneConfig(**{**base, **kw})


def test_candidates_follow_what_is_fixed():
    dm = DepthMap.from_backbone(create_backbone("resnet18"))
    both = candidate_set(FinetuneConfig(layers="auto", truncate="auto"), AutoConfig(), dm)
    assert [c["name"] for c in both] == ["0-25", "25-50", "50-75", "75-100", "0-100", "50-100",
                                        "25-75", "0-75 t75"]
    assert both[0]["trained"] == [0, 1, 2] and both[-1]["kept"] == 7
    cut = candidate_set(FinetuneConfig(layers="auto", truncate=75), AutoConfig(), dm)
    # under a 75 % cut 75-100 trains nothing, 50-100 trains what 50-75 trains, and 0-100 and
    # 0-75 the same units: each set of trained units once
    assert [(c["name"], c["truncate"]) for c in cut] == [
        ("0-25 t75", 75), ("25-50 t75", 75), ("50-75 t75", 75), ("0-100 t75", 75),
        ("25-75 t75", 75)]
    fixed = candidate_set(FinetuneConfig(layers="25-50", truncate="auto"), AutoConfig(), dm)
    assert [c["name"] for c in fixed] == ["25-50 t75", "25-50"]
    with pytest.raises(UserError, match="is not 'A-B' or 'A-B tP'|layer range"):
        AutoConfig(candidates=["25-50 x"])


def test_shortlist_on_constructed_evidence():
    from ssl_ft.auto_layers import shortlist

    def cand(name, truncate, trained, probe, rgn):
        return {"name": name, "layers": name.split()[0], "truncate": truncate,
                "trained": trained, "probe_val_auc": probe, "rgn": rgn}

    cands = [cand("0-25", 100, [0, 1, 2], 0.90, 0.1), cand("25-50", 100, [3, 4], 0.90, 0.7),
             cand("0-100", 100, list(range(9)), 0.90, 0.3), cand("0-75 t75", 75, list(range(7)),
                                                                  0.905, 0.2)]
    picked, why = shortlist(cands, AutoConfig())  # the 75 probe is within the margin
    # by default the quarters at the cut are raced (ordered by Auto-RGN where measured)
    assert [c["name"] for c in picked] == ["25-50", "0-25"] and "cut 100" in why
    assert "raced 25-50, 0-25" in why
    rgn_only = AutoConfig(race_among=[])
    picked, why = shortlist(cands, rgn_only)
    assert [c["name"] for c in picked] == ["25-50"] and "raced" not in why
    picked, _ = shortlist(cands, AutoConfig(race_among=[], race=1, race_widest=True))
    assert [c["name"] for c in picked] == ["25-50", "0-100"]  # 0-100 is also the runner-up
    picked, _ = shortlist(cands, AutoConfig(race_among=[], race_widest=True))
    assert [c["name"] for c in picked] == ["25-50", "0-100"]
    picked, _ = shortlist(cands, AutoConfig(race_widest=True))
    assert [c["name"] for c in picked] == ["25-50", "0-25", "0-100"]
    picked, why = shortlist(cands, AutoConfig(cut_margin=0.001))
    assert [c["name"] for c in picked] == ["0-75 t75"] and "cut 75" in why
    # a single cut needs no probe; without Auto-RGN the race keeps race_among's order
    bare = [{k: v for k, v in c.items() if k not in ("probe_val_auc", "rgn")}
            for c in cands[:3]]
    picked, why = shortlist(bare, AutoConfig(race_among=["25-50", "0-25"]))
    assert [c["name"] for c in picked] == ["25-50", "0-25"] and why.startswith("cut 100;")


def test_the_race_halves_by_best_val_so_far(tmp_path, monkeypatch):
    """Successive halving on made-up val curves with a known answer: after 2 of 8 epochs the
    two best so far go on (not 25-50 alone, the leader after one epoch, and not 0-25, whose
    rise comes too late); after 4 the better of those two wins."""
    import ssl_ft.finetune.engine as engine
    from ssl_ft.auto_layers import _race

    curves = {"0-25": [0.70, 0.71, 0.99, 0.99], "25-50": [0.80, 0.81, 0.82, 0.83],
              "50-75": [0.60, 0.82, 0.84, 0.86], "75-100": [0.50, 0.55, 0.99, 0.99]}
    calls, closed = [], []

    class FakeRun:  # the race's view of a run: train to an epoch, its val curve, close
        def __init__(self, cfg, dist, device, *, resume, progress, splits=None):
            self.cfg, self.epoch, self.p = cfg, 0, SimpleNamespace(splits="the one load")
            assert resume and splits == (None if not calls else "the one load")

        def train_to(self, stop):
            calls.append((self.cfg.layers, stop))
            self.epoch = stop

        def val_curve(self):
            return curves[self.cfg.layers][:self.epoch]

        def close(self, test=True):
            closed.append((self.cfg.layers, test))

    monkeypatch.setattr(engine, "Run", FakeRun)
    picked = [{"name": n, "layers": n, "truncate": 100.0} for n in curves]
    winner, run = _race(FinetuneConfig(epochs=8), picked, AutoConfig(), tmp_path,
                        torch.device("cpu"))
    # each candidate is set up once and kept open between rungs; the stopped ones are closed
    # without a test evaluation, the winner is handed on open
    assert calls == [("0-25", 2), ("25-50", 2), ("50-75", 2), ("75-100", 2),
                     ("50-75", 4), ("25-50", 4)]
    assert winner["name"] == "50-75" and run.cfg.layers == "50-75"
    assert closed == [("0-25", False), ("75-100", False), ("25-50", False)]
    assert run.cfg.prefix_cache_gb == FinetuneConfig().prefix_cache_gb / 4
    assert [c.get("stopped_at") for c in picked] == [2, 4, None, 2]


def test_a_constant_last_quarter_is_cut_off(data_root, tmp_path, broken_top):
    """A constructed case with a known answer: the last quarter carries no signal (its output
    is constant), so the network must be cut at 75 %."""
    cfg = _cfg(data_root, tmp_path / "run", broken_top)
    chosen, record, _, _ = resolve_auto(cfg, dry_run=True)
    probe = {r["depth"]: r["val_auc"] for r in record["probe"]}
    assert probe[100] == pytest.approx(0.5) and probe[75] > 0.8
    assert (chosen.layers, chosen.truncate) == ("0-75", 75.0)
    assert "cut 75" in record["reason"]
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


def test_the_choice_follows_the_gradient_evidence(data_root, tmp_path, ckpt, monkeypatch):
    """With the evidence monkeypatched so that only layer3 (50-75) has a large relative
    gradient, the chooser must pick 50-75 when nothing is raced."""
    real = auto_layers.gradient_evidence

    def rigged(backbone, *a, **k):
        ev = real(backbone, *a, **k)
        for row in ev["units"]:
            row["grad_sq"] = row["weight_sq"] * (1.0 if row["unit"].startswith("layer3") else 1e-6)
        return ev

    monkeypatch.setattr(auto_layers, "gradient_evidence", rigged)
    cfg = _cfg(data_root, tmp_path / "run", ckpt,
               auto_args={"race_among": [], "cut_margin": 1.0})
    chosen, record, _, _ = resolve_auto(cfg, dry_run=True)
    assert (chosen.layers, chosen.truncate) == ("50-75", 100.0)
    # Auto-RGN is measured at the chosen cut only (the 0-75 t75 candidate has none)
    rgn = {c["name"]: c["rgn"] for c in record["candidates"] if "rgn" in c}
    assert "0-75 t75" not in rgn and len(rgn) == 7
    assert rgn["50-75"] == pytest.approx(1.0) and max(rgn, key=rgn.get) == "50-75"


def _poisoned_copy(data_root: Path, tmp_path: Path) -> Path:
    """pneumoniamnist.npz with its test images replaced by noise and its labels flipped."""
    with np.load(data_root / "pneumoniamnist.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    rng = np.random.default_rng(0)
    arrays["test_images"] = rng.integers(0, 256, arrays["test_images"].shape, dtype=np.uint8)
    arrays["test_labels"] = 1 - arrays["test_labels"]
    path = tmp_path / "pneumoniamnist_poisoned.npz"
    np.savez(path, **arrays)
    return path


def _strip(record: dict) -> dict:
    """The parts of a record that must not depend on the test split (no timings, folders)."""
    return {"chosen": record["chosen"], "probe": record.get("probe"),
            "candidates": [{k: v for k, v in c.items() if k != "folder"}
                           for c in record["candidates"]]}


def test_the_test_split_is_never_read(data_root, tmp_path, ckpt):
    poisoned = _poisoned_copy(data_root, tmp_path)
    args = dict(auto_args={"race": 1})
    clean = finetune(_cfg(data_root, tmp_path / "clean", ckpt, **args))
    bad = finetune(_cfg(data_root, tmp_path / "bad", ckpt, data=str(poisoned), **args))
    m_clean = json.loads((clean / "metrics.json").read_text())
    m_bad = json.loads((bad / "metrics.json").read_text())
    assert _strip(m_clean["auto"]) == _strip(m_bad["auto"])
    assert [h["val_auc"] for h in m_clean["history"]] == [h["val_auc"] for h in m_bad["history"]]
    assert m_clean["test"]["auc"] != m_bad["test"]["auc"]  # the poison did reach the test


@pytest.mark.parametrize(("arch", "size", "stem"), [("densenet121", 28, "standard"),
                                                    ("vgg11_bn", 28, "standard"),
                                                    ("timm:convnext_atto", 32, "standard")])
def test_every_architecture(data_root, tmp_path, arch, size, stem):
    torch.manual_seed(0)
    ck = _save(tmp_path / "ck.pt", create_backbone(arch, in_chans=1, stem=stem), arch, size,
               stem)
    cfg = _cfg(data_root, tmp_path / "run", ck, size=size, limit=96, epochs=2)
    chosen, record, _, _ = resolve_auto(cfg, dry_run=True)
    assert record["chosen"] == {"layers": chosen.layers, "truncate": chosen.truncate}
    names = {c["name"] for c in record["candidates"]}
    assert f"{chosen.layers}" + ("" if chosen.truncate == 100 else
                                 f" t{chosen.truncate:g}") in names
    # a dry run cannot race: the quarters at the cut are ordered by Auto-RGN (at the 75 %
    # cut there is one candidate, nothing to order)
    at_cut = [c for c in record["candidates"] if c["truncate"] == chosen.truncate]
    assert len(at_cut) == 1 or all(np.isfinite(c["rgn"]) and c["rgn"] > 0 for c in at_cut)
    assert {r["depth"] for r in record["probe"]} == {75.0, 100.0}


def test_random_init_trains_everything_without_evidence(data_root, tmp_path, monkeypatch):
    monkeypatch.setattr(auto_layers, "gather_evidence", lambda *a, **k: pytest.fail("ran"))
    cfg = _cfg(data_root, tmp_path / "run", "none", arch="resnet18", truncate=75)
    chosen, record, _, _ = resolve_auto(cfg, dry_run=True)
    assert (chosen.layers, chosen.truncate) == ("0-100", 75.0)
    assert "random initialisation" in record["reason"]


def _tool_run(tool, argv):
    return run(tool("finetune").main, argv)


def test_cli_layers_auto_as_a_user_runs_it(data_root, tmp_path, tool, ckpt, capsys):
    out = tmp_path / "cli"
    argv = ["--checkpoint", str(ckpt), "--data", "pneumoniamnist", "--data-root",
            str(data_root), "--limit", "300", "--batch-size", "32", "--epochs", "4",
            "auto_args.cut_margin=1.0",  # the full network: the quarters race
            "--layers", "auto", "--truncate", "auto", "--out", str(out), "threads=1"]
    assert _tool_run(tool, argv) == 0
    err = capsys.readouterr().err
    assert "auto chose layers" in err
    m = json.loads((out / "metrics.json").read_text())
    a = m["auto"]
    assert a["requested"] == {"layers": "auto", "truncate": "auto"}
    assert (m["layers"], m["truncate"]) == (a["chosen"]["layers"], a["chosen"]["truncate"])
    assert len(a["candidates"]) == 8 and all("probe_val_auc" in c for c in a["candidates"])
    raced = [c for c in a["candidates"] if c["shortlisted"]]
    # the four quarters raced (no Auto-RGN measured: nothing needs it), the winner ran on
    assert a["chosen"]["truncate"] == 100
    assert [c["name"] for c in raced] == ["0-25", "25-50", "50-75", "75-100"]
    assert "raced 0-25, 25-50, 50-75, 75-100" in a["reason"]
    assert not any("rgn" in c for c in a["candidates"])
    assert sorted(len(c["race"]) for c in raced if "stopped_at" in c) == [1, 1, 2]  # 4, 2, 1
    winner = next(c for c in raced if "stopped_at" not in c)
    assert winner["name"] == a["chosen"]["layers"]
    assert [h["val_auc"] for h in m["history"][:2]] == winner["race"]  # the same run, continued
    assert 0 < a["wall_time_s"] < m["wall_time_s"]
    assert m["recipe"]["layers"] == m["layers"]  # the run itself is an ordinary fixed run
    assert len(m["history"]) == 4 and json.loads((out / "auto.json").read_text()) == a
    assert not list((out / "auto_race").glob("*/*.pt"))  # the stopped runs' checkpoints pruned
    # the winner, trained in stretches between the other runs of the race and handed on in
    # memory, is bitwise the fixed run of its selection (what docs/runs/auto_rules.py replays)
    fixed = tmp_path / "fixed"
    assert _tool_run(tool, [*argv[:-5], "--layers", a["chosen"]["layers"], "--truncate",
                            str(a["chosen"]["truncate"]), "--out", str(fixed), "threads=1"]) == 0
    f = json.loads((fixed / "metrics.json").read_text())
    assert [h["val_auc"] for h in f["history"]] == [h["val_auc"] for h in m["history"]]
    assert f["test"]["auc"] == m["test"]["auc"]
    assert set(a["race_profile_s"]) >= {"setup", "train", "validate"}
    # a fixed range and an auto cut; the dry run chooses and prints, but trains nothing
    assert _tool_run(tool, [*argv[:-5], "--layers", "25-50", "--truncate", "auto",
                            "--out", str(tmp_path / "dry"), "--dry-run", "threads=1"]) == 0
    captured = capsys.readouterr()
    assert "auto chose layers 25-50" in captured.err and "trainable backbone" in captured.out
    assert not (tmp_path / "dry").exists()


def test_cli_bad_auto_input(data_root, tmp_path, tool, ckpt, capsys):
    base = ["--checkpoint", str(ckpt), "--data", "pneumoniamnist", "--data-root",
            str(data_root), "--limit", "64", "--out", str(tmp_path / "x"), "threads=1"]
    assert _tool_run(tool, [*base, "--layers", "auto", "auto_args.race_rung=2"]) == 2
    assert "race_rung" in capsys.readouterr().err
    assert _tool_run(tool, [*base, "--truncate", "half"]) == 2
    assert "'half'" in capsys.readouterr().err
    assert _tool_run(tool, [*base, "--layers", "auto", "auto_args.nope=1"]) == 2
    assert "auto_args.nope" in capsys.readouterr().err


def test_a_paused_auto_run_resumes_without_choosing_again(data_root, tmp_path, ckpt,
                                                         monkeypatch):
    cfg = _cfg(data_root, tmp_path / "run", ckpt, auto_args={"race": 0})
    finetune(cfg, stop_after=2)
    assert (tmp_path / "run" / "auto.json").is_file()
    assert not (tmp_path / "run" / "metrics.json").exists()
    chosen = json.loads((tmp_path / "run" / "auto.json").read_text())["chosen"]
    monkeypatch.setattr(auto_layers, "_choose", lambda *a, **k: pytest.fail("chose again"))
    with pytest.raises(UserError, match="already holds last.pt"):
        finetune(cfg)
    finetune(cfg, resume=True)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["auto"]["chosen"] == chosen and len(m["history"]) == 4


def test_fusion_depth_auto(data_root, tmp_path, tool, ckpt, broken_top):
    out = tmp_path / "fusion"
    argv = ["--checkpoint", str(ckpt), "--checkpoint", str(broken_top), "--depth", "auto",
            "--data", "pneumoniamnist", "--data-root", str(data_root), "--limit", "160",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "threads=1"]
    assert run(tool("ensemble").main, argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    for model, depth in zip(m["models"], m["truncate"], strict=True):
        rows = model["depth_auto"]["candidates"]
        assert [r["depth"] for r in rows] == [25, 50, 75, 100]
        assert depth == max(rows, key=lambda r: (r["val_auc"], -r["depth"]))["depth"]
    assert m["truncate"][1] != 100  # the broken model's constant last quarter is never chosen
    # a bad flag value: status 2, one line naming the value
    assert run(tool("ensemble").main, [*argv[:4], "--depth", "deep", *argv[6:]]) == 2


def test_auto_refuses_several_processes(data_root, tmp_path, ckpt, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="runs in one process"):
        resolve_auto(_cfg(data_root, tmp_path / "run", ckpt))
    monkeypatch.setenv("WORLD_SIZE", "1")
    cfg = FinetuneConfig(layers="25-50", truncate=75)
    assert resolve_auto(cfg) == (cfg, None, False, None)  # nothing auto: nothing done
