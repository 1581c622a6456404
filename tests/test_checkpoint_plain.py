"""ssl_ft.checkpoint._plain on exact inputs: what each value becomes, and the exact message of
every refusal (found by mutation testing: the save/load tests only matched fragments)."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
from pathlib import PurePosixPath

import numpy as np
import pytest
import torch
from torch import nn

from ssl_ft.checkpoint._plain import plain_backbone, plain_extra, plain_meta, plain_tensor


def test_plain_tensor_copies_into_plain_contiguous_cpu_tensors():
    base = torch.arange(12.0).view(3, 4)
    out = plain_tensor(base.t(), "x")
    assert out.is_contiguous() and torch.equal(out, base.t())
    assert out.untyped_storage().data_ptr() != base.untyped_storage().data_ptr()
    param = plain_tensor(nn.Parameter(torch.ones(2)), "p")
    assert type(param) is torch.Tensor and not param.requires_grad
    z = torch.tensor([1 + 2j, 3 - 1j])
    conj = plain_tensor(z.conj(), "z")
    assert not conj.is_conj() and conj.tolist() == [1 - 2j, 3 + 1j]
    neg = plain_tensor(z.conj().imag, "n")  # a lazily negated view
    assert not neg.is_neg() and neg.tolist() == [-2.0, 1.0]
    sparse = torch.eye(3).to_sparse()
    kept = plain_tensor(sparse, "s")
    assert kept.layout == torch.sparse_coo and torch.equal(kept.to_dense(), torch.eye(3))
    assert kept.values().data_ptr() != sparse.values().data_ptr()
    with pytest.raises(TypeError) as err:
        plain_tensor(torch.empty(2, device="meta"), "backbone['w']")
    assert str(err.value) == "backbone['w'] is a tensor on the 'meta' device and holds no data"


def test_plain_backbone_reads_modules_and_strips_shared_wrappers_only():
    lin = nn.Linear(2, 1)
    assert set(plain_backbone(lin)) == {"weight", "bias"}
    t = torch.zeros(1)
    # wrappers in either order, repeated: stripped while every key has one
    assert set(plain_backbone({"_orig_mod.module.a": t, "_orig_mod.module.b": t})) == {"a", "b"}
    assert set(plain_backbone({"module.module.a": t})) == {"a"}
    # a prefix that not every key shares stays
    assert set(plain_backbone({"module.a": t, "b": t})) == {"module.a", "b"}
    assert set(plain_backbone({"module.a": t, "_orig_mod.b": t})) == {"module.a", "_orig_mod.b"}


@pytest.mark.parametrize(("backbone", "error", "message"), [
    ([1], TypeError, "backbone must be a mapping of str to torch.Tensor, got list"),
    ({1: torch.zeros(1)}, TypeError, "backbone key 1 is a int, not a str"),
    ({"w": [1.0]}, TypeError, "backbone['w'] is a list, not a torch.Tensor"),
    ({}, ValueError, "backbone is empty: a checkpoint needs at least one tensor"),
])
def test_plain_backbone_refusals(backbone, error, message):
    with pytest.raises(error) as err:
        plain_backbone(backbone)
    assert str(err.value) == message


def test_plain_meta_is_json():
    meta = {"a": (1, np.int64(2)), "b": {"c": np.float32(0.5)}, np.str_("k"): np.array([1, 2]),
            "d": [None, True, "s"], "e": np.array(["x", "y"])}
    out = plain_meta(meta)
    assert out == {"a": [1, 2], "b": {"c": 0.5}, "k": [1, 2], "d": [None, True, "s"],
                   "e": ["x", "y"]}
    assert type(out["a"][1]) is int and type(out["b"]["c"]) is float and type(out["k"][0]) is int
    assert all(type(k) is str for k in out)


class Colour(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Point:
    x: int


class Stateful:
    def state_dict(self):
        return {}


class Other:
    pass


_JSON = "dict, list, str, int, float, bool or None"
_EXTRA = ("dict, list, tuple, set, str, bytes, int, float, complex, bool, None, torch.Tensor, "
          "torch.dtype or torch.device")


@pytest.mark.parametrize(("value", "message"), [
    (PurePosixPath("/d"), f"meta['v'] is a pathlib.PurePosixPath, which checkpoint metadata "
                          f"cannot hold: use {_JSON}; use str(path)"),
    (Colour.RED, f"meta['v'] is a {__name__}.Colour, which checkpoint metadata cannot hold: "
                 f"use {_JSON}; use .value"),
    (Point(1), f"meta['v'] is a {__name__}.Point, which checkpoint metadata cannot hold: use "
               f"{_JSON}; convert it to a dict first"),
    (collections.namedtuple("P", "x")(1), f"meta['v'] is a {__name__}.P, which checkpoint "
                                          f"metadata cannot hold: use {_JSON}; convert it to a "
                                          "dict first"),
    (Stateful(), f"meta['v'] is a {__name__}.Stateful, which checkpoint metadata cannot hold: "
                 f"use {_JSON}; store its .state_dict() instead"),
    (datetime.date(2026, 1, 2), f"meta['v'] is a datetime.date, which checkpoint metadata "
                                f"cannot hold: use {_JSON}; use .isoformat()"),
    (datetime.time(1, 2), f"meta['v'] is a datetime.time, which checkpoint metadata cannot "
                          f"hold: use {_JSON}; use .isoformat()"),
    (b"raw", f"meta['v'] is a bytes, which checkpoint metadata cannot hold: use {_JSON}; put "
             "it in extra or convert it to str"),
    (torch.float32, f"meta['v'] is a torch.dtype, which checkpoint metadata cannot hold: use "
                    f"{_JSON}; put it in extra or convert it to str"),
    (Other(), f"meta['v'] is a {__name__}.Other, which checkpoint metadata cannot hold: use "
              f"{_JSON}"),
    (torch.Size([2]), f"meta['v'] is a torch.Size, which checkpoint metadata cannot hold: use "
                      f"{_JSON}"),
    (torch.zeros(1), "meta['v'] is a torch.Tensor; metadata must be JSON-like (use .tolist() or "
                     ".item(), or put tensors in extra)"),
    ({1, 2}, "meta['v'] is a set; metadata must be JSON-like (use a sorted list)"),
    ({2: "x"}, "meta['v'] has the key 2 of type int; metadata keys must be str"),
])
def test_plain_meta_refusals_name_the_key_and_the_fix(value, message):
    with pytest.raises(TypeError) as err:
        plain_meta({"v": value})
    assert str(err.value) == message


def test_plain_meta_and_extra_refuse_non_mappings():
    with pytest.raises(TypeError, match=r"^meta must be a mapping, got list$"):
        plain_meta([1])
    with pytest.raises(TypeError, match=r"^extra must be a mapping, got tuple$"):
        plain_extra((1,))


def test_plain_extra_keeps_what_the_weights_only_unpickler_reads():
    big_endian = np.arange(3, dtype=">i4")
    extra = {"t": (1, "a", b"b", 2j, torch.int8, torch.device("cpu"), torch.Size([2, 3])),
             "s": {np.int64(3), "x", (1, np.str_("y"))}, ("k", 1): [np.float64(0.25)],
             np.int32(5): "five", "arr": big_endian, "words": np.array(["p"]),
             "tensor": torch.arange(4)[1:3], "none": None}
    out = plain_extra(extra)
    assert out["t"] == (1, "a", b"b", 2j, torch.int8, torch.device("cpu"), torch.Size([2, 3]))
    assert type(out["t"]) is tuple and type(out["t"][6]) is torch.Size
    assert out["s"] == {3, "x", (1, "y")} and type(out["s"]) is set
    assert all(type(v) is not np.int64 for v in out["s"])
    assert out[("k", 1)] == [0.25] and out[5] == "five" and type(next(k for k in out if k == 5)) \
        is int
    assert out["arr"].dtype == torch.int32 and out["arr"].tolist() == [0, 1, 2]
    assert out["words"] == ["p"] and out["none"] is None
    assert out["tensor"].tolist() == [1, 2] and out["tensor"].untyped_storage().nbytes() == 16
    assert plain_extra(None) == {}


@pytest.mark.parametrize(("extra", "message"), [
    ({"a": {object: 1}}, "extra['a'] has the key <class 'object'> of type type, which a "
                         "checkpoint cannot hold safely"),
    ({"a": {("x", object): 1}}, "extra['a'] has the key <class 'object'> of type type, which a "
                                "checkpoint cannot hold safely"),
    ({"a": [Other()]}, f"extra['a'][0] is a {__name__}.Other, which checkpoint extra state "
                       f"cannot hold: use {_EXTRA}"),
    ({"a": [1, {"b": (2, Colour.RED)}]}, f"extra['a'][1]['b'][1] is a {__name__}.Colour, which "
                                         f"checkpoint extra state cannot hold: use {_EXTRA}; "
                                         "use .value"),
])
def test_plain_extra_refusals(extra, message):
    with pytest.raises(TypeError) as err:
        plain_extra(extra)
    assert str(err.value) == message


def test_a_container_seen_twice_is_not_a_cycle_but_one_inside_itself_is():
    shared = [1, 2]
    assert plain_extra({"a": shared, "b": [shared, shared]}) == {"a": [1, 2],
                                                                 "b": [[1, 2], [1, 2]]}
    loop: dict = {}
    loop["me"] = [loop]
    with pytest.raises(TypeError) as err:
        plain_meta({"x": loop})
    assert str(err.value) == "meta['x']['me'][0] contains itself (a reference cycle)"
