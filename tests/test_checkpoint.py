"""Tests for ssl_ft.checkpoint: format, atomic writes, weights-only loading, key matching."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torchvision
from torch import nn

import ssl_ft.checkpoint as ck
from ssl_ft.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    REQUIRED_META,
    Checkpoint,
    MatchReport,
    export_safetensors,
    library_versions,
    load_checkpoint,
    match_state_dict,
    read_state_dict,
    save_checkpoint,
)
from ssl_ft.errors import UserError


def make_meta(**changes: object) -> dict:
    meta = {
        "method": "simclr",
        "arch": "resnet18",
        "in_chans": 3,
        "image_size": 32,
        "stem": "default",
        "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "recipe": {"method": "simclr", "optim": {"lr": 0.3, "momentum": 0.9}, "epochs": 2,
                   "augment": [["crop", 0.2], ["flip"]]},
        "data_fingerprint": "sha256:0123abcd",
        "epoch": 2,
    }
    meta.update(changes)
    return meta


def resnet18_backbone(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    sd = torchvision.models.resnet18(weights=None).state_dict()
    return {k: v for k, v in sd.items() if not k.startswith("fc.")}


def assert_same(a: object, b: object, where: str = "") -> None:
    """Recursive equality with bitwise tensor comparison."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict, dict]:
    """A resnet18 checkpoint with an SGD-momentum optimizer state after one step."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    backbone = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    extra = {
        "optimizer": opt.state_dict(),
        "queue": torch.randn(64, 16),
        "epoch": 2,
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
    }
    path = tmp_path_factory.mktemp("ckpt") / "run" / "checkpoint.pt"
    meta = make_meta()
    assert save_checkpoint(path, backbone, meta, extra) == path
    return path, backbone, meta, extra


# --------------------------------------------------------------------------- round trip


def test_round_trip(saved: tuple[Path, dict, dict, dict]) -> None:
    path, backbone, meta, extra = saved
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt, Checkpoint) and ckpt.path == path
    assert list(ckpt.backbone) == list(backbone)
    for k, v in backbone.items():
        assert ckpt.backbone[k].dtype == v.dtype and torch.equal(ckpt.backbone[k], v), k
        assert not ckpt.backbone[k].requires_grad
    assert {k: v for k, v in ckpt.meta.items() if k not in ("versions", "created")} == meta
    assert ckpt.meta["versions"]["torch"] == torch.__version__
    assert {"python", "torch", "torchvision", "ssl_ft", "numpy"} <= set(ckpt.meta["versions"])
    assert datetime.fromisoformat(ckpt.meta["created"]).tzinfo is not None
    opt = dict(extra["optimizer"])
    assert_same(ckpt.extra["optimizer"], opt, "optimizer")
    assert any("momentum_buffer" in s for s in ckpt.extra["optimizer"]["state"].values())
    assert_same(ckpt.extra["queue"], extra["queue"])
    assert ckpt.extra["epoch"] == 2
    assert ckpt.extra["rng"]["python"] == extra["rng"]["python"]  # tuples stay tuples in extra
    random.Random().setstate(ckpt.extra["rng"]["python"])
    assert "resnet18" in repr(ckpt) and "tensor(" not in repr(ckpt)

    raw = torch.load(path, weights_only=True)  # the file itself is weights-only loadable
    assert raw["format"] == FORMAT and raw["format_version"] == FORMAT_VERSION
    assert set(raw) == {"format", "format_version", "meta", "backbone", "extra"}
    assert set(REQUIRED_META) <= set(raw["meta"])


def test_plain_torchvision_model_loads_backbone(saved: tuple[Path, dict, dict, dict]) -> None:
    ckpt = load_checkpoint(saved[0])
    m = torchvision.models.resnet18(num_classes=5)
    missing, unexpected = m.load_state_dict(ckpt.backbone, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    assert torch.equal(m.conv1.weight, saved[1]["conv1.weight"])
    assert torch.equal(m.layer4[1].bn2.running_var, saved[1]["layer4.1.bn2.running_var"])


def test_tensors_are_compact_cpu_copies(tmp_path: Path) -> None:
    big = torch.arange(1_000_000, dtype=torch.float32)
    param = nn.Parameter(torch.randn(8, 4))
    backbone = {"view": big[10:20], "t": param.t(), "cl": torch.randn(2, 3, 4, 4).to(
        memory_format=torch.channels_last)}
    path = save_checkpoint(tmp_path / "c.pt", backbone, make_meta(), {"slice": big[:5]})
    assert path.stat().st_size < 50_000  # the view did not drag its 4 MB storage along
    ckpt = load_checkpoint(path)
    for k, v in backbone.items():
        assert ckpt.backbone[k].is_contiguous() and torch.equal(ckpt.backbone[k], v.detach()), k
    assert torch.equal(ckpt.extra["slice"], big[:5])
    big[10] = -1.0  # saved tensors were copies
    assert ckpt.backbone["view"][0] == 10.0


def test_ddp_and_compile_prefixes_are_stripped_on_save(tmp_path: Path) -> None:
    backbone = {f"module._orig_mod.{k}": v for k, v in resnet18_backbone().items()}
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "c.pt", backbone, make_meta()))
    assert "conv1.weight" in ckpt.backbone and not any(k.startswith("module") for k in ckpt.backbone)


def test_numpy_values_are_converted(tmp_path: Path) -> None:
    meta = make_meta(epoch=np.int64(3), image_size=(28, 28),
                     normalization={"mean": np.array([0.5], dtype=np.float32), "std": [np.float64(0.2)]})
    extra = {"np_rng": np.random.default_rng(0).bit_generator.state, "legacy": np.random.get_state(),
             "arr": np.arange(6, dtype=np.int16).reshape(2, 3), "flag": np.bool_(True)}
    path = save_checkpoint(tmp_path / "c.pt", resnet18_backbone(), meta, extra)
    ckpt = load_checkpoint(path)
    assert ckpt.meta["epoch"] == 3 and type(ckpt.meta["epoch"]) is int
    assert ckpt.meta["image_size"] == [28, 28]  # meta is JSON-like: tuples become lists
    assert ckpt.meta["normalization"] == {"mean": [0.5], "std": [0.2]}
    assert torch.equal(ckpt.extra["arr"], torch.arange(6, dtype=torch.int16).reshape(2, 3))
    assert ckpt.extra["flag"] is True
    assert ckpt.extra["legacy"][0] == "MT19937" and ckpt.extra["legacy"][1].dtype == torch.uint32
    json.dumps(ckpt.meta)


# --------------------------------------------------------------------------- atomic writes


@pytest.mark.parametrize(
    ("error", "raised"),
    [(RuntimeError("disk on fire"), RuntimeError), (KeyboardInterrupt(), KeyboardInterrupt),
     (OSError(28, "No space left on device"), UserError)],
)
def test_failed_write_keeps_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException, raised: type
) -> None:
    path = tmp_path / "checkpoint.pt"
    v1 = resnet18_backbone(seed=1)
    save_checkpoint(path, v1, make_meta(epoch=1))
    real_save = torch.save

    def half_save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        real_save(obj, f)  # write a whole checkpoint's worth of bytes, then fail
        if hasattr(f, "seek"):
            f.seek(f.tell() // 2)
            f.truncate()
        raise error

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(raised):
        save_checkpoint(path, resnet18_backbone(seed=2), make_meta(epoch=2))
    monkeypatch.undo()
    ckpt = load_checkpoint(path)
    assert ckpt.meta["epoch"] == 1
    assert all(torch.equal(ckpt.backbone[k], v) for k, v in v1.items())
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt"]  # no temp file left


def test_failed_first_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(obj: object, f: object, *args: object, **kwargs: object) -> None:
        f.write(b"PK\x03\x04 partial")  # type: ignore[attr-defined]
        raise RuntimeError("boom")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(tmp_path / "new" / "c.pt", resnet18_backbone(), make_meta())
    assert os.listdir(tmp_path / "new") == []


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from ssl_ft.checkpoint import save_checkpoint
    meta = dict(method="m", arch="a", in_chans=1, image_size=28, stem="default",
                normalization={}, recipe={}, data_fingerprint="x")
    big = torch.empty(3_000_000)
    i = 0
    while True:
        big.fill_(float(i))
        save_checkpoint(sys.argv[1], {"w": big, "b": torch.full((3,), float(i))},
                        dict(meta, epoch=i), {"epoch": i})
        print(i, flush=True)
        i += 1
    """
)


def test_sigkill_never_leaves_a_truncated_checkpoint(tmp_path: Path) -> None:
    """Two writers are SIGKILLed at random moments; each target still loads, old or new."""
    rng = random.Random()
    procs = []
    for n in range(2):
        path = tmp_path / f"w{n}" / "big.pt"
        proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(path)],
                                stdout=subprocess.PIPE, text=True)
        procs.append((path, proc))
    for path, proc in procs:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # one save completed
        assert first.strip() == "0", f"writer failed to start: {first!r}"
        delay = rng.uniform(0.0, 0.6)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # read on through the same text stream: readline() above may have buffered more lines
        # (the writer runs on while the other one is handled), which communicate() would skip
        rest = proc.stdout.read()
        proc.stdout.close()
        done = [int(x) for x in ([first] + rest.split()) if str(x).strip()]
        ckpt = load_checkpoint(path)  # never truncated
        epoch = ckpt.meta["epoch"]
        assert epoch in (done[-1], done[-1] + 1), (delay, epoch, done[-1])
        assert torch.equal(ckpt.backbone["w"], torch.full((3_000_000,), float(epoch)))
        assert ckpt.extra["epoch"] == epoch


# --------------------------------------------------------------------------- bad meta / extra


class Custom:
    pass


@pytest.mark.parametrize(
    ("meta_changes", "extra", "pattern"),
    [
        ({"recipe": {"data": {"root": Path("/data")}}}, None, r"meta\['recipe'\]\['data'\]\['root'\].*str\(path\)"),
        ({"stem": Custom()}, None, r"meta\['stem'\].*Custom"),
        ({"normalization": {"mean": torch.zeros(3)}}, None, r"meta\['normalization'\]\['mean'\].*Tensor"),
        ({"recipe": {1: "x"}}, None, r"meta\['recipe'\] has the key 1"),
        ({}, {"heads": [nn.Linear(2, 2)]}, r"extra\['heads'\]\[0\].*state_dict"),
        ({}, {"sched": {"fn": lambda e: e}}, r"extra\['sched'\]\['fn'\]"),
        ({}, {"obj": Custom()}, r"extra\['obj'\].*Custom"),
    ],
)
def test_non_plain_values_raise_type_error(
    tmp_path: Path, meta_changes: dict, extra: dict | None, pattern: str
) -> None:
    path = tmp_path / "c.pt"
    with pytest.raises(TypeError, match=pattern):
        save_checkpoint(path, resnet18_backbone(), make_meta(**meta_changes), extra)
    assert not path.exists()


def test_reference_cycle_raises(tmp_path: Path) -> None:
    loop: list = []
    loop.append(loop)
    with pytest.raises(TypeError, match=r"extra\['loop'\].*cycle"):
        save_checkpoint(tmp_path / "c.pt", resnet18_backbone(), make_meta(), {"loop": loop})


@pytest.mark.parametrize("key", REQUIRED_META)
def test_missing_required_meta_raises_value_error(tmp_path: Path, key: str) -> None:
    meta = make_meta()
    del meta[key]
    with pytest.raises(ValueError, match=repr(key)) as info:
        save_checkpoint(tmp_path / "c.pt", resnet18_backbone(), meta)
    assert not isinstance(info.value, UserError)


def test_bad_backbone_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        save_checkpoint(tmp_path / "c.pt", {}, make_meta())
    with pytest.raises(TypeError, match="conv1.weight"):
        save_checkpoint(tmp_path / "c.pt", {"conv1.weight": [1.0]}, make_meta())  # type: ignore[dict-item]


def test_symlink_at_path_is_replaced_not_followed(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "epoch1.pt", resnet18_backbone(), make_meta(epoch=1))
    (tmp_path / "last.pt").symlink_to("epoch1.pt")
    save_checkpoint(tmp_path / "last.pt", resnet18_backbone(), make_meta(epoch=2))
    assert not (tmp_path / "last.pt").is_symlink()
    assert load_checkpoint(tmp_path / "last.pt").meta["epoch"] == 2
    assert load_checkpoint(tmp_path / "epoch1.pt").meta["epoch"] == 1


def test_saving_onto_a_directory_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=str(tmp_path)):
        save_checkpoint(tmp_path, resnet18_backbone(), make_meta())


# --------------------------------------------------------------------------- load errors


def _write_bad_files(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    data = good.read_bytes()
    cases = {
        "missing": (tmp_path / "nope.pt", "not found"),
        "garbage": (tmp_path / "garbage.pt", "not a PyTorch or safetensors file"),
        "empty": (tmp_path / "empty.pt", "empty"),
        "truncated": (tmp_path / "truncated.pt", "truncated"),
        "truncated_tiny": (tmp_path / "tiny.pt", "truncated"),
        "plain": (tmp_path / "plain.pt", "not an ssl_ft checkpoint.*read_state_dict"),
        "pickled_module": (tmp_path / "module.pt", r"torch.nn.modules.conv.Conv2d.*state_dict"),
        "numpy_pickle": (tmp_path / "np.pt", "numpy"),
        "newer": (tmp_path / "newer.pt", "format version 99.*upgrade"),
        "directory": (tmp_path, "directory"),
    }
    cases["garbage"][0].write_bytes(b"this is not a checkpoint\n" * 40)
    cases["empty"][0].write_bytes(b"")
    cases["truncated"][0].write_bytes(data[: len(data) // 2])
    cases["truncated_tiny"][0].write_bytes(data[:100])
    torch.save(resnet18_backbone(), cases["plain"][0])
    torch.save(nn.Conv2d(1, 1, 1), cases["pickled_module"][0])
    torch.save({"a": np.zeros(3)}, cases["numpy_pickle"][0])
    raw = torch.load(good, weights_only=True)
    torch.save({**raw, "format_version": 99}, cases["newer"][0])
    return cases


def test_load_errors_are_one_line_user_errors(tmp_path: Path, saved: tuple[Path, dict, dict, dict]) -> None:
    cases = _write_bad_files(tmp_path, saved[0])
    for name, (path, pattern) in cases.items():
        with pytest.raises(UserError, match=pattern) as info:
            load_checkpoint(path)
        message = str(info.value)
        assert str(path) in message, name
        assert "\n" not in message and len(message) < 400, (name, message)
        if name in ("truncated", "garbage", "empty"):
            assert message.startswith(f"cannot read checkpoint {path}: "), message


def test_read_state_dict_errors(tmp_path: Path, saved: tuple[Path, dict, dict, dict]) -> None:
    cases = _write_bad_files(tmp_path, saved[0])
    for name in ("missing", "garbage", "truncated", "pickled_module", "newer"):
        path, pattern = cases[name]
        with pytest.raises(UserError, match=pattern):
            read_state_dict(path)
    torch.save({"epoch": 3, "lr": [0.1]}, tmp_path / "nostate.pt")
    with pytest.raises(UserError, match=r"no state dict found in .*nostate.pt.*'epoch'"):
        read_state_dict(tmp_path / "nostate.pt")


# --------------------------------------------------------------------------- read_state_dict


def test_read_state_dict_formats(tmp_path: Path, saved: tuple[Path, dict, dict, dict]) -> None:
    path, backbone, meta, _ = saved
    state, got_meta = read_state_dict(path)
    assert list(state) == list(backbone) and got_meta is not None and got_meta["arch"] == "resnet18"

    tv = torchvision.models.resnet18().state_dict()
    torch.save(tv, tmp_path / "tv.pth")
    state, got_meta = read_state_dict(tmp_path / "tv.pth")
    assert got_meta is None and list(state) == list(tv)
    assert torch.equal(state["conv1.weight"], tv["conv1.weight"])

    lightning = {"state_dict": {f"model.backbone.{k}": v for k, v in backbone.items()},
                 "epoch": 3, "global_step": 10, "hyper_parameters": {"lr": 0.1},
                 "optimizer_states": [{"state": {}, "param_groups": []}]}
    torch.save(lightning, tmp_path / "last.ckpt")
    state, got_meta = read_state_dict(tmp_path / "last.ckpt")
    assert got_meta is None and next(iter(state)) == "model.backbone.conv1.weight"

    dino = {"teacher": {"backbone.conv1.weight": torch.ones(1)},
            "student": {"module.backbone.conv1.weight": torch.zeros(1)}, "epoch": 1}
    torch.save(dino, tmp_path / "dino.pth")
    state, _ = read_state_dict(tmp_path / "dino.pth")
    assert list(state) == ["backbone.conv1.weight"]

    safetensors.torch.save_file({"conv1.weight": backbone["conv1.weight"]}, tmp_path / "w.safetensors",
                                metadata={"ssl_ft": json.dumps(meta)})
    state, got_meta = read_state_dict(tmp_path / "w.safetensors")
    assert torch.equal(state["conv1.weight"], backbone["conv1.weight"]) and got_meta == meta
    safetensors.torch.save_file({"x": torch.ones(2)}, tmp_path / "plain.bin")  # sniffed by content
    state, got_meta = read_state_dict(tmp_path / "plain.bin")
    assert got_meta is None and torch.equal(state["x"], torch.ones(2))
    with pytest.raises(UserError, match="not an ssl_ft checkpoint.*read_state_dict"):
        load_checkpoint(tmp_path / "plain.bin")


# --------------------------------------------------------------------------- match_state_dict


@pytest.fixture(scope="module")
def r18() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).state_dict()


@pytest.mark.parametrize("prefix", ["", "module.", "backbone.", "model.encoder.", "module._orig_mod.backbone.",
                                    "_orig_mod.model."])
def test_match_strips_prefixes(r18: dict[str, torch.Tensor], prefix: str) -> None:
    source = {prefix + k: v for k, v in r18.items()}
    source[prefix.replace("backbone.", "") + "head.weight" if prefix else "head.weight"] = torch.ones(2)
    model = torchvision.models.resnet18(num_classes=10)
    matched, report = match_state_dict(source, model)
    assert isinstance(report, MatchReport)
    assert report.prefix == prefix.replace("_orig_mod.", "")
    assert report.missing == [] and report.ignored == [] and len(report.unexpected) == 1
    assert report.matched == len(r18) and list(matched) == list(r18)
    model.load_state_dict(matched)  # strict
    assert torch.equal(model.layer3[0].downsample[0].weight, r18["layer3.0.downsample.0.weight"])
    assert "\n" not in report.summary() and f"matched {len(r18)}/{len(r18)}" in report.summary()


def test_match_lightly_sequential_layout(r18: dict[str, torch.Tensor]) -> None:
    torch.manual_seed(1)
    resnet = torchvision.models.resnet18()

    class SimCLR(nn.Module):  # as in the lightly examples
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(*list(resnet.children())[:-1])
            self.projection_head = nn.Sequential(nn.Linear(512, 128), nn.ReLU(), nn.Linear(128, 64))

    source = SimCLR().state_dict()
    assert "backbone.4.0.conv1.weight" in source and "backbone.1.running_mean" in source
    model = torchvision.models.resnet18(num_classes=3)
    matched, report = match_state_dict(source, model, ignore=("fc.",))
    assert report.prefix == "backbone."
    assert report.child_map == {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3",
                                "7": "layer4"}
    assert report.missing == [] and sorted(report.unexpected) == sorted(
        k for k in source if k.startswith("projection_head."))
    missing, unexpected = model.load_state_dict(matched, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    assert torch.equal(model.layer1[0].conv1.weight, resnet.layer1[0].conv1.weight)
    assert torch.equal(model.bn1.running_mean, resnet.bn1.running_mean)


def test_match_ignore_drops_classifier(r18: dict[str, torch.Tensor]) -> None:
    model = torchvision.models.resnet18(num_classes=2)  # fc is 2x512, the source has 10x512
    with pytest.raises(UserError, match=r"fc\.weight has shape \(10, 512\), the model expects \(2, 512\)"):
        match_state_dict(r18, model)
    source = {f"module.{k}": v for k, v in r18.items()}
    matched, report = match_state_dict(source, model, ignore=("fc",))
    assert report.ignored == ["module.fc.weight", "module.fc.bias"] and report.missing == []
    assert "fc.weight" not in matched and report.unexpected == []
    assert "2 ignored (module.fc.weight, module.fc.bias)" in report.summary()


def test_match_wrong_architecture_names_key_and_shapes() -> None:
    r50 = torchvision.models.resnet50().state_dict()
    with pytest.raises(UserError) as info:
        match_state_dict(r50, torchvision.models.resnet18(), ignore=("fc.",), source="r50.pth")
    message = str(info.value)
    assert message == (
        "checkpoint r50.pth does not fit the architecture (ResNet): layer1.0.conv1.weight has "
        "shape (64, 64, 1, 1), the model expects (64, 64, 3, 3)"
    )


def test_match_unrelated_dict_does_not_fit() -> None:
    source = {"encoder.embed.weight": torch.zeros(10, 4), "decoder.out.bias": torch.zeros(3)}
    with pytest.raises(UserError, match=r"does not fit.*0 of the model's .* 'conv1.weight'.*'encoder.embed.weight'"):
        match_state_dict(source, torchvision.models.resnet18())
    with pytest.raises(UserError, match="empty"):
        match_state_dict({}, torchvision.models.resnet18())


def test_match_partial_fit_reports_missing(r18: dict[str, torch.Tensor]) -> None:
    source = {k: v for k, v in r18.items() if not k.startswith("layer4.")}
    _, report = match_state_dict(source, torchvision.models.resnet18(num_classes=10))
    assert report.missing and all(k.startswith("layer4.") for k in report.missing)


def test_match_into_wrapped_models(r18: dict[str, torch.Tensor]) -> None:
    wrapped = nn.DataParallel(torchvision.models.resnet18(num_classes=10))
    matched, report = match_state_dict({f"backbone.{k}": v for k, v in r18.items()}, wrapped)
    assert report.prefix == "backbone." and next(iter(matched)) == "module.conv1.weight"
    wrapped.load_state_dict(matched)

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(*list(torchvision.models.resnet18().children())[:-2])

    # the target is itself a Sequential: its indices are its names, nothing is remapped
    model = Classifier().features
    source = {f"0.{k}": v for k, v in Classifier().features.state_dict().items()}
    matched, report = match_state_dict(source, model)
    assert report.prefix == "0." and report.child_map == {} and report.missing == []


# --------------------------------------------------------------------------- safetensors export


def test_export_safetensors(tmp_path: Path, saved: tuple[Path, dict, dict, dict]) -> None:
    path, backbone, _, _ = saved
    out = export_safetensors(path, tmp_path / "export" / "backbone.safetensors")
    assert out == tmp_path / "export" / "backbone.safetensors"
    assert os.listdir(out.parent) == ["backbone.safetensors"]
    loaded = safetensors.torch.load_file(out)
    assert set(loaded) == set(backbone)
    for k, v in backbone.items():
        assert torch.equal(loaded[k], v), k
    with safetensors.safe_open(str(out), framework="pt") as f:
        header = f.metadata()
    ckpt = load_checkpoint(path)
    assert json.loads(header["ssl_ft"]) == ckpt.meta and header["format"] == "pt"

    again = load_checkpoint(out)  # an exported file is a (weights-only) checkpoint too
    assert again.meta == ckpt.meta and again.extra == {}
    assert all(torch.equal(again.backbone[k], v) for k, v in backbone.items())
    m = torchvision.models.resnet18()
    matched, report = match_state_dict(read_state_dict(out)[0], m, ignore=("fc.",))
    assert report.missing == [] and report.unexpected == []


def test_export_safetensors_takes_a_checkpoint_object_as_documented(
        tmp_path: Path, saved: tuple[Path, dict, dict, dict]) -> None:
    path = saved[0]
    ckpt = load_checkpoint(path)
    from_object = export_safetensors(ckpt, tmp_path / "obj.safetensors")  # docs/checkpoints.md
    from_path = export_safetensors(path, tmp_path / "path.safetensors")
    a, b = load_checkpoint(from_object), load_checkpoint(from_path)
    assert a.meta == b.meta == ckpt.meta
    assert a.backbone.keys() == b.backbone.keys()
    assert all(torch.equal(a.backbone[k], b.backbone[k]) for k in a.backbone)
    with pytest.raises(TypeError, match="takes a Checkpoint or a path, not dict"):
        export_safetensors(ckpt.backbone, tmp_path / "x.safetensors")


def test_export_plain_state_dict_with_shared_tensors(tmp_path: Path) -> None:
    w = torch.randn(4, 4)
    torch.save({"a": w, "b": w, "c": w[1]}, tmp_path / "tied.pt")  # shared storage
    out = export_safetensors(tmp_path / "tied.pt", tmp_path / "tied.safetensors")
    loaded = safetensors.torch.load_file(out)
    assert torch.equal(loaded["b"], w) and torch.equal(loaded["c"], w[1])
    with safetensors.safe_open(str(out), framework="pt") as f:
        assert "ssl_ft" not in (f.metadata() or {})


def test_library_versions() -> None:
    versions = library_versions()
    assert versions["torch"] == torch.__version__ and versions["ssl_ft"]
    assert all(isinstance(v, str) for v in versions.values())
    assert set(versions) <= {"python", "torch", "torchvision", "ssl_ft", "lightly", "monai", "numpy", "timm"}
    assert ck.__all__ and all(hasattr(ck, name) for name in ck.__all__)
