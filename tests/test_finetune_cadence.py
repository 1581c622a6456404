"""When a fine-tuning run writes best.pt and last.pt (``checkpoint_every_s``,
:class:`ssl_ft.finetune.outputs.Cadence`): every that many seconds and when the run ends, the
best model held in memory between writes, never the state of an epoch under way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import ssl_ft.finetune.engine as engine
import ssl_ft.finetune.outputs as outputs
from ssl_ft.checkpoint import load_checkpoint, save_checkpoint
from ssl_ft.finetune import FinetuneConfig, finetune
from ssl_ft.models import create_backbone
from ssl_ft.runtime import distributed
from tests.conftest import grey_meta


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(4)
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    save_checkpoint(path, create_backbone("resnet18", in_chans=1).state_dict(), grey_meta())
    return path


def _cfg(data_root, ckpt, out, **kw) -> FinetuneConfig:
    return FinetuneConfig(**{"checkpoint": str(ckpt), "data": "pneumoniamnist",
                             "data_root": str(data_root), "limit": 48, "batch_size": 16,
                             "epochs": 5, "layers": "50-100", "optimizer": "sgd", "lr": 0.05,
                             "seed": 1, "out": str(out), "threads": 1, "device": "cpu", **kw})


def _written(monkeypatch) -> list[int]:
    """The epochs of every last.pt written from now on."""
    real, epochs = engine.save_last, []

    def spy(p, out, epoch, *args, **kwargs):
        epochs.append(epoch)
        return real(p, out, epoch, *args, **kwargs)

    monkeypatch.setattr(engine, "save_last", spy)
    return epochs


def _clock(monkeypatch, tick: float) -> None:
    """A clock that moves ``tick`` seconds each time the cadence reads it."""
    now = [0.0]

    def perf_counter() -> float:
        now[0] += tick
        return now[0]

    monkeypatch.setattr(outputs, "_clock", perf_counter)


def test_every_epoch_with_zero_and_only_at_the_end_with_a_long_interval(data_root, tmp_path,
                                                                         ckpt, monkeypatch):
    written = _written(monkeypatch)
    finetune(_cfg(data_root, ckpt, tmp_path / "a", checkpoint_every_s=0), progress=False)
    assert written == [1, 2, 3, 4, 5]
    written.clear()
    finetune(_cfg(data_root, ckpt, tmp_path / "b", checkpoint_every_s=3600), progress=False)
    assert written == [5]  # once, when the run ends
    # the same run either way, and best.pt is the best epoch's model, not the last one's
    ma, mb = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("a", "b"))
    assert ma["test"] == mb["test"] and ma["best_epoch"] == mb["best_epoch"]
    best = load_checkpoint(tmp_path / "b" / "best.pt")
    assert best.meta["epoch"] == mb["best_epoch"]
    a_best = load_checkpoint(tmp_path / "a" / "best.pt")
    for key in a_best.backbone:
        assert torch.equal(a_best.backbone[key], best.backbone[key]), key
    model = load_checkpoint(tmp_path / "b" / "model.pt")
    assert torch.equal(model.extra["head"]["weight"], best.extra["head"]["weight"])


def test_written_once_the_interval_has_passed(data_root, tmp_path, ckpt, monkeypatch):
    # the cadence reads the clock at the start, after every epoch and after every write: with
    # 10 s a reading and a 15 s interval, every other epoch is due, and the end is written too
    _clock(monkeypatch, 10.0)
    written = _written(monkeypatch)
    finetune(_cfg(data_root, ckpt, tmp_path / "c", checkpoint_every_s=15), progress=False)
    assert written == [2, 4, 5]


def test_a_failure_inside_an_epoch_leaves_the_last_finished_epoch(data_root, tmp_path, ckpt,
                                                                  monkeypatch):
    """``close`` after a failure (the race closes every run so) writes the last finished
    epoch, not the weights of the epoch that failed half-way."""
    with distributed("cpu") as (dist, device):
        run = engine.Run(_cfg(data_root, ckpt, tmp_path / "d", checkpoint_every_s=3600),
                         dist, device, resume=False, progress=False)
        run.train_to(2)
        real = engine.train_one_epoch

        def fails_half_way(net, *args, **kwargs):
            real(net, *args, **kwargs)  # the weights move, then the epoch fails
            raise RuntimeError("a failure inside epoch 3")

        monkeypatch.setattr(engine, "train_one_epoch", fails_half_way)
        with pytest.raises(RuntimeError, match="inside epoch 3"):
            run.train_to(3)
        run.close(test=False)
        assert not (tmp_path / "d" / "last.pt").exists()  # epoch 2's state is gone: nothing
        monkeypatch.setattr(engine, "train_one_epoch", real)
        run = engine.Run(_cfg(data_root, ckpt, tmp_path / "e", checkpoint_every_s=3600),
                         dist, device, resume=False, progress=False)
        run.train_to(2)
        try:
            raise KeyboardInterrupt  # stopped between epochs: the finished epoch is written
        except KeyboardInterrupt:
            run.close(test=False)
    last = load_checkpoint(tmp_path / "e" / "last.pt")
    assert last.meta["epoch"] == 2 and not (tmp_path / "e" / "metrics.json").exists()
    finetune(_cfg(data_root, ckpt, tmp_path / "e", checkpoint_every_s=3600), resume=True,
             progress=False)
    finetune(_cfg(data_root, ckpt, tmp_path / "f", checkpoint_every_s=0), progress=False)
    me, mf = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("e", "f"))
    assert me["test"] == mf["test"]  # resumed from epoch 2: the uninterrupted run


def test_a_negative_interval_is_refused():
    with pytest.raises(ValueError, match="checkpoint_every_s must be >= 0, got -1"):
        FinetuneConfig(checkpoint_every_s=-1)
