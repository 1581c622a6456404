"""``train.precision: auto`` on a CPU with bf16 (ssl_ft.pretrain.precision): measured on a copy
of the run's method, bf16 only at >= 1.3x fp32, cached per machine and configuration, kept by a
resumed run, recorded in the run folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ssl_ft.pretrain.precision as P
from ssl_ft.benchmark import bench_method
from ssl_ft.runtime import Dist

REPO_QUICK = "recipes/quickstart.yaml"


@pytest.fixture
def method():
    images = np.random.default_rng(0).integers(0, 256, (8, 1, 28, 28), dtype=np.uint8)
    return bench_method("simclr", images, 28)


def test_the_measurement_leaves_the_method_and_the_random_state_alone(method):
    before = {k: v.clone() for k, v in method.state_dict().items()}
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    got = P.measure_bf16(method, 4, 1, 28, torch.device("cpu"))
    assert torch.equal(torch.rand(3), expected)  # the run's random stream is where it was
    assert all(torch.equal(before[k], v) for k, v in method.state_dict().items())
    assert got["fp32_images_per_s"] > 0 and got["bf16_images_per_s"] > 0
    # the median of one ratio per round, not the ratio of the totals
    assert len(got["round_speedups"]) == P.CHECK_ROUNDS == 3
    assert got["speedup"] == sorted(got["round_speedups"])[1]


def test_one_slow_step_does_not_decide_the_check(method, monkeypatch):
    """One step ten times slower swings a ratio of totals (here to 3.4x); the median of the
    rounds' ratios stays at the true 1.5x."""
    times = iter([0.0, 1.0, 1.0, 2.0,  # the warm-up steps, fp32 then bf16
                  # rounds of fp32, bf16, bf16, fp32 (each step: start, end)
                  0.0, 10.0, 0.0, 0.5, 0.0, 0.5, 0.0, 1.0,
                  0.0, 1.5, 0.0, 1.0, 0.0, 1.0, 0.0, 1.5,
                  0.0, 1.5, 0.0, 1.0, 0.0, 1.0, 0.0, 1.5])
    monkeypatch.setattr(P.time, "perf_counter", lambda: next(times))
    got = P.measure_bf16(method, 4, 1, 28, torch.device("cpu"))
    assert got["round_speedups"] == [11.0, 1.5, 1.5]
    assert got["speedup"] == 1.5
    assert got["fp32_images_per_s"] == pytest.approx(24 / 17.0)  # 2 x 4 images x 3 rounds


def _fake(monkeypatch, speedup: float) -> list[int]:
    calls: list[int] = []

    def measure(method, batch, channels, size, device, rounds=3):
        calls.append(batch)
        return {"fp32_images_per_s": 100.0, "bf16_images_per_s": 100.0 * speedup,
                "speedup": speedup}

    monkeypatch.setattr(P, "measure_bf16", measure)
    monkeypatch.setattr(P, "cpu_has_bf16", lambda: True)
    return calls


def test_bf16_only_where_it_pays_and_each_configuration_measured_once(method, monkeypatch,
                                                                      tmp_path):
    monkeypatch.setenv("SSL_FT_CACHE", str(tmp_path))
    cpu, kw = torch.device("cpu"), dict(channels=1, size=28, channels_last=True, dist=Dist())
    calls = _fake(monkeypatch, 1.5)
    prec, how = P.auto_precision("auto", cpu, method, batch=16, **kw)
    assert prec == "bf16" and how["source"] == "measured" and how["threshold"] == 1.3
    assert calls == [16]
    prec, how = P.auto_precision("auto", cpu, method, batch=16, **kw)  # the same configuration
    assert (prec, how["source"], calls) == ("bf16", "cache", [16])
    _fake(monkeypatch, 1.2)  # another batch size is another configuration
    prec, how = P.auto_precision("auto", cpu, method, batch=32, **kw)
    assert prec == "fp32" and how["speedup"] == 1.2
    table = json.loads((tmp_path / "precision.json").read_text())
    assert sorted(r["choice"] for r in table.values()) == ["bf16", "fp32"]
    # a resumed run keeps its precision; explicit values and CPUs without bf16: no measuring
    calls = _fake(monkeypatch, 2.0)
    assert P.auto_precision("auto", cpu, method, batch=64, resumed=("fp32", None), **kw) == (
        "fp32", {"source": "last.pt", "choice": "fp32"})  # a checkpoint without a record
    kept = {"choice": "bf16", "speedup": 1.4, "source": "measured"}
    assert P.auto_precision("auto", cpu, method, batch=64, resumed=("bf16", kept), **kw) == (
        "bf16", kept)
    assert P.auto_precision("fp32", cpu, method, batch=64, **kw) == ("fp32", None)
    monkeypatch.setattr(P, "cpu_has_bf16", lambda: False)
    assert P.auto_precision("auto", cpu, method, batch=64, **kw) == ("fp32", None)
    assert calls == []


def test_the_cache_is_outside_the_runs_write_log_and_an_unwritable_one_is_skipped(
        method, monkeypatch, tmp_path):
    from ssl_ft.checkpoint import _files as F

    log = tmp_path / "writes.log"
    monkeypatch.setenv(F.WRITE_LOG_ENV, str(log))
    monkeypatch.setenv("SSL_FT_CACHE", str(tmp_path / "cache"))
    cpu, kw = torch.device("cpu"), dict(channels=1, size=28, channels_last=True, dist=Dist())
    calls = _fake(monkeypatch, 1.5)
    assert P.auto_precision("auto", cpu, method, batch=16, **kw)[0] == "bf16"
    assert len(json.loads((tmp_path / "cache" / "precision.json").read_text())) == 1
    assert not log.exists()  # written, but not as one of the run's files
    (tmp_path / "blocked").write_text("a file where the cache folder should be")
    monkeypatch.setenv("SSL_FT_CACHE", str(tmp_path / "blocked"))
    for _ in range(2):  # nothing cached, so measured each time, and no error
        assert P.auto_precision("auto", cpu, method, batch=16, **kw)[1]["source"] == "measured"
    assert calls == [16, 16, 16]


def test_pretraining_records_the_choice_and_a_resumed_run_keeps_it(data_root, tmp_path, tool,
                                                                   monkeypatch, capsys):
    import ssl_ft.pretrain.engine as engine
    from ssl_ft.checkpoint import load_checkpoint
    from ssl_ft.cli import run

    monkeypatch.setenv("SSL_FT_CACHE", str(tmp_path / "cache"))
    _fake(monkeypatch, 1.6)
    out = tmp_path / "r"
    argv = [REPO_QUICK, f"data.root={data_root}", f"out={out}", "data.limit=64",
            "train.batch_size=32", "train.threads=1", "train.epochs=2", "eval.every=0"]
    real = engine._end_of_epoch

    def killed_after_first(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "_end_of_epoch", killed_after_first)
    assert run(tool("pretrain").main, argv) == 130
    assert "bf16 (auto: bf16 1.60x fp32 >= 1.3, measured)" in capsys.readouterr().err
    assert load_checkpoint(out / "last.pt").meta["precision_auto"]["source"] == "measured"
    monkeypatch.setattr(engine, "_end_of_epoch", real)
    calls = _fake(monkeypatch, 1.0)  # the machine now says fp32: the resumed run stays bf16
    assert run(tool("pretrain").main, [*argv, "--resume"]) == 0
    assert calls == [] and "bf16 (auto: as the run being resumed)" in capsys.readouterr().err
    runtime = json.loads((out / "summary.json").read_text())["runtime"]
    # the record of how the run chose, as an uninterrupted run would have it
    assert runtime["precision"] == "bf16" and runtime["precision_auto"]["speedup"] == 1.6
