"""Loading and reading checkpoints, on files made by hand: every refusal's exact message (a
diverged run's NaN, missing metadata, bad layouts) and what each kind of file gives back. Found
by mutation testing (tools/mutation.py): each refusal could be dropped without a test noticing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ssl_ft.checkpoint import (
    FORMAT,
    REQUIRED_META,
    export_safetensors,
    load_checkpoint,
    read_state_dict,
)
from ssl_ft.errors import UserError

META = {"method": "simclr", "arch": "resnet18", "in_chans": 1, "image_size": 28,
        "stem": "default", "normalization": {"mean": [0.5], "std": [0.25]}, "recipe": {},
        "data_fingerprint": "sha256:00", "epoch": 1}


def _ours(path: Path, backbone=None, meta=None, extra=None, **top) -> Path:
    obj = {"format": FORMAT, "format_version": 1, "meta": dict(META) if meta is None else meta,
           "backbone": {"w": torch.ones(2)} if backbone is None else backbone,
           "extra": {} if extra is None else extra, **top}
    torch.save(obj, path)
    return path


def _safetensors(path: Path, tensors, meta=None) -> Path:
    save_file(tensors, str(path), metadata=None if meta is None else {"ssl_ft": json.dumps(meta)})
    return path


def _message(fn, *args) -> str:
    with pytest.raises(UserError) as err:
        fn(*args)
    return str(err.value)


def test_nan_and_inf_are_refused_in_every_kind_of_file(tmp_path):
    nan = {"w": torch.tensor([1.0, float("nan")])}
    inf = {"b": torch.tensor([float("inf")])}
    diverged = "from a diverged run and cannot be used"
    p = _ours(tmp_path / "a.pt", backbone=nan)
    for fn in (load_checkpoint, read_state_dict):
        assert _message(fn, p) == f"checkpoint {p} holds nan values in w: it comes {diverged}"
    p = _ours(tmp_path / "b.pt", extra={"queue": torch.tensor([float("-inf")])})
    assert _message(load_checkpoint, p) == (
        f"checkpoint {p} holds inf values in extra.queue: it comes {diverged}")
    p = _safetensors(tmp_path / "c.safetensors", inf, META)
    for fn in (load_checkpoint, read_state_dict):
        assert _message(fn, p) == f"checkpoint {p} holds inf values in b: it comes {diverged}"
    p = _safetensors(tmp_path / "d.safetensors", nan)  # plain weights, no ssl_ft metadata
    assert _message(read_state_dict, p) == f"checkpoint {p} holds nan values in w: it comes {diverged}"
    p = tmp_path / "e.pt"
    torch.save({"state_dict": nan}, p)  # a wrapped foreign state dict
    assert _message(read_state_dict, p) == f"checkpoint {p} holds nan values in w: it comes {diverged}"


@pytest.mark.parametrize("key", REQUIRED_META)
def test_missing_metadata_is_refused_on_load(tmp_path, key):
    meta = {k: v for k, v in META.items() if k != key}
    p = _ours(tmp_path / "a.pt", meta=meta)
    want = f"cannot read checkpoint {p}: its metadata lacks {key!r}"
    assert _message(load_checkpoint, p) == want and _message(read_state_dict, p) == want
    p = _safetensors(tmp_path / "a.safetensors", {"w": torch.ones(1)}, meta)
    assert _message(load_checkpoint, p) == f"cannot read checkpoint {p}: its metadata lacks {key!r}"


@pytest.mark.parametrize(("top", "message"), [
    ({"format_version": 0}, "cannot read checkpoint {p}: bad format_version 0"),
    ({"format_version": "1"}, "cannot read checkpoint {p}: bad format_version '1'"),
    ({"format_version": 2}, "checkpoint {p} has format version 2, newer than this ssl_ft reads "
                            "(1); upgrade ssl_ft"),
    ({"meta": [1]}, "cannot read checkpoint {p}: its 'meta' is missing or not a dict"),
    ({"backbone": {}}, "cannot read checkpoint {p}: its 'backbone' is not a str -> tensor dict"),
    ({"backbone": {"w": 1.0}}, "cannot read checkpoint {p}: its 'backbone' is not a str -> "
                               "tensor dict"),
    ({"extra": [1]}, "cannot read checkpoint {p}: its 'extra' is not a dict"),
])
def test_bad_layouts_are_refused_in_one_line(tmp_path, top, message):
    p = tmp_path / "a.pt"
    obj = {"format": FORMAT, "format_version": 1, "meta": dict(META),
           "backbone": {"w": torch.ones(2)}, "extra": {}, **top}
    torch.save(obj, p)
    assert _message(load_checkpoint, p) == message.format(p=p)


def test_a_version_1_checkpoint_without_extra_loads(tmp_path):
    p = tmp_path / "a.pt"
    torch.save({"format": FORMAT, "format_version": 1, "meta": dict(META),
                "backbone": {"w": torch.ones(2)}}, p)
    ckpt = load_checkpoint(p)
    assert ckpt.extra == {} and ckpt.meta == META and list(ckpt.backbone) == ["w"]


@pytest.mark.parametrize(("obj", "description"), [
    ({"a": torch.ones(1), "b": torch.ones(1)}, "it is a plain state dict of 2 tensors"),
    ({"epoch": 3, "state_dict": {"a": torch.ones(1)}}, "it holds a state dict under 'state_dict'"),
    ({"teacher": {"backbone": {"a": torch.ones(1)}}}, "it holds a state dict under 'teacher'"),
    ({f"k{i}": i for i in range(7)}, "top-level keys: 'k0', 'k1', 'k2', 'k3', 'k4', 'k5', ..."),
    ({f"k{i}": i for i in range(6)}, "top-level keys: 'k0', 'k1', 'k2', 'k3', 'k4', 'k5'"),
    ({}, "it is an empty dict"),
    ([torch.ones(1)], "it holds a list"),
])
def test_foreign_files_are_described(tmp_path, obj, description):
    p = tmp_path / "x.pt"
    torch.save(obj, p)
    assert _message(load_checkpoint, p) == (
        f"{p} is not an ssl_ft checkpoint ({description}); read_state_dict loads plain and "
        "wrapped state dicts")


def test_read_state_dict_finds_wrapped_weights_two_levels_deep(tmp_path):
    w = {"conv.weight": torch.ones(1)}
    for i, obj in enumerate([w, {"model": w}, {"student": {"module": w}},
                             {"net": {"x": 1}, "encoder": w}]):
        p = tmp_path / f"{i}.pt"
        torch.save(obj, p)
        state, meta = read_state_dict(p)
        assert state == w and meta is None
    p = tmp_path / "deep.pt"
    torch.save({"model": {"model": {"model": w}}}, p)  # three levels: not searched
    assert _message(read_state_dict, p) == (
        f"no state dict found in {p} (top-level keys: 'model')")
    p = _safetensors(tmp_path / "s.safetensors", {"a": torch.ones(1)}, META)
    state, meta = read_state_dict(p)
    assert list(state) == ["a"] and meta == META
    p = _safetensors(tmp_path / "plain.safetensors", {"a": torch.ones(1)})
    assert _message(load_checkpoint, p) == (
        f"{p} is not an ssl_ft checkpoint (a safetensors file without ssl_ft metadata); "
        "read_state_dict loads plain weights")


def test_export_safetensors_metadata_and_refusals(tmp_path):
    src = _ours(tmp_path / "a.pt")
    out = export_safetensors(src, tmp_path / "a.safetensors")
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "ssl_ft": json.dumps(META),
                                "ssl_ft_format_version": "1"}
    plain = tmp_path / "p.pt"
    torch.save({"w": torch.ones(1)}, plain)
    with safe_open(str(export_safetensors(plain, tmp_path / "p.safetensors")), "pt") as f:
        assert f.metadata() == {"format": "pt"}
    with pytest.raises(TypeError) as err:
        export_safetensors(3, tmp_path / "x.safetensors")
    assert str(err.value) == "export_safetensors takes a Checkpoint or a path, not int"
