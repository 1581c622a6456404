"""Checkpoint details found by mutation testing: the match report's summary line and the
fsyncs that make an atomic write durable."""

from __future__ import annotations

import os

import pytest

from ssl_ft.checkpoint import MatchReport
from ssl_ft.checkpoint._files import atomic_write
from ssl_ft.errors import UserError


def test_match_report_summary_is_exact():
    report = MatchReport(prefix="module.", missing=["fc.bias"], unexpected=["x", "y", "z", "w"],
                         ignored=[], child_map={"0": "conv1", "4": "layer1"}, matched=3)
    assert report.summary() == (
        "matched 3/4 model tensors; stripped prefix 'module.'; mapped Sequential children "
        "0->conv1, 4->layer1; 1 missing (fc.bias); 4 unexpected (x, y, z, ... (+1)); 0 ignored")
    assert MatchReport("", [], [], [], matched=2).summary() == (
        "matched 2/2 model tensors; 0 missing; 0 unexpected; 0 ignored")


def test_atomic_write_fsyncs_the_file_and_its_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    target = tmp_path / "sub" / "last.pt"
    atomic_write(target, lambda f: f.write(b"data"))
    assert target.read_bytes() == b"data"
    assert len(synced) == 2
    assert synced[0].startswith(str(tmp_path / "sub" / ".last.pt.tmp-"))  # the data, before
    assert synced[1] == str(tmp_path / "sub")  # the rename, made durable


def test_a_wrapper_prefix_is_stripped_only_when_every_key_has_more_after_it():
    import torch

    from ssl_ft.checkpoint._plain import plain_backbone

    t = torch.zeros(1)
    assert set(plain_backbone({"module.a": t, "module.b": t})) == {"a", "b"}
    assert set(plain_backbone({"module._orig_mod.a": t})) == {"a"}
    kept = plain_backbone({"module.": t, "module.a": t})  # "" would not be a key
    assert set(kept) == {"module.", "module.a"}


def test_library_versions_reads_installed_libraries_without_importing_them(monkeypatch):
    import importlib.metadata
    import sys

    from ssl_ft.checkpoint import core

    monkeypatch.delitem(sys.modules, "numpy")  # installed, not imported (as seen from here)
    monkeypatch.setattr(core, "_LIBRARIES", ("numpy", "torch", "no_such_library_x"))
    versions = core.library_versions()
    assert versions == {"python": sys.version.split()[0],
                        "numpy": importlib.metadata.version("numpy"),
                        "torch": sys.modules["torch"].__version__}
    assert "numpy" not in sys.modules  # found from the package metadata, not by importing it


def test_sequential_layout_keeps_keys_that_are_not_child_indices_as_unexpected():
    import torch
    from torch import nn

    from ssl_ft.checkpoint import match_state_dict

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Linear(2, 1)

    src = Net()
    state = {f"{i}.{k}": v for i, m in enumerate((src.conv, src.bn))
             for k, v in m.state_dict().items()}
    extra = {"head.weight": torch.zeros(1), "7.weight": torch.zeros(1), "3.weight": torch.zeros(1),
             "1": torch.zeros(1)}  # Net has 3 children: index 3 is past the last one
    matched, report = match_state_dict({**state, **extra}, Net(), ignore=("fc",))
    assert report.child_map == {"0": "conv", "1": "bn"} and report.prefix == ""
    assert report.unexpected == ["head.weight", "7.weight", "3.weight", "1"]
    assert report.missing == []
    assert sorted(matched) == sorted(f"{n}.{k}" for n, m in (("conv", src.conv), ("bn", src.bn))
                                     for k in m.state_dict())


def test_atomic_write_creates_missing_parent_folders(tmp_path):
    target = tmp_path / "a" / "b" / "c.pt"
    assert atomic_write(target, lambda f: f.write(b"x")) == target
    assert target.read_bytes() == b"x"


def test_atomic_write_flushes_before_it_fsyncs(tmp_path, monkeypatch):
    sizes = []
    real = os.fsync

    def spy(fd):
        sizes.append(os.fstat(fd).st_size)
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write(tmp_path / "d.pt", lambda f: f.write(b"data"))  # fits Python's write buffer
    assert sizes[0] == 4  # the bytes reached the OS before the fsync that makes them durable


def test_the_layout_that_fits_more_keys_wins_and_a_tie_goes_to_plain_names():
    from torch import nn

    from ssl_ft.checkpoint import match_state_dict

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)

    target = Net().state_dict()
    # 3 keys fit by name, 2 by child index: names win, the index keys are unexpected
    state = {k: target[k] for k in ("conv.weight", "conv.bias", "bn.weight")}
    state |= {"1.running_mean": target["bn.running_mean"], "1.running_var": target["bn.running_var"]}
    _, report = match_state_dict(state, Net(), ignore=("bn.bias", "bn.num_batches_tracked"))
    assert report.child_map == {} and report.unexpected == ["1.running_mean", "1.running_var"]
    # 2 and 2: a tie, still names
    tie = {k: target[k] for k in ("conv.weight", "conv.bias")}
    tie |= {"1.weight": target["bn.weight"], "1.bias": target["bn.bias"]}
    with pytest.raises(UserError, match="only 2 of the model's 7 tensors"):
        match_state_dict(tie, Net())
    _, report = match_state_dict(tie, Net(), ignore=("bn.running_mean", "bn.running_var",
                                                     "bn.num_batches_tracked"))
    assert report.child_map == {} and report.unexpected == ["1.weight", "1.bias"]
    # 2 by index, 1 by name: the index layout, whose plain-named keys still fit
    more = {"conv.weight": target["conv.weight"], "0.bias": target["conv.bias"],
            "1.weight": target["bn.weight"]}
    matched, report = match_state_dict(more, Net(), ignore=("bn.running", "bn.num", "bn.bias"))
    assert report.child_map == {"0": "conv", "1": "bn"} and report.unexpected == []
    assert sorted(matched) == ["bn.weight", "conv.bias", "conv.weight"]


def test_a_compiled_model_is_looked_through_by_its_class_name():
    from torch import nn

    from ssl_ft.checkpoint import match_state_dict

    class OptimizedModule(nn.Module):  # what torch.compile returns, without compiling
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    state = nn.Linear(2, 1).state_dict()
    matched, report = match_state_dict(state, OptimizedModule(nn.Linear(2, 1)))
    assert sorted(matched) == ["_orig_mod.bias", "_orig_mod.weight"] and report.prefix == ""
    # the message names the compiled model's architecture, not the wrapper
    with pytest.raises(UserError) as err:
        match_state_dict({"other": state["weight"]}, OptimizedModule(nn.Linear(2, 1)))
    assert str(err.value) == (
        "checkpoint does not fit the architecture (Linear): only 0 of the model's 2 tensors are "
        "in it; the model expects e.g. '_orig_mod.weight', the checkpoint has e.g. 'other'")


def test_match_thresholds_ties_and_wrappers_on_worked_examples():
    import torch
    from torch import nn

    from ssl_ft.checkpoint import match_state_dict

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)

    target = Net().state_dict()  # 7 tensors
    three = {k: target[k] for k in ("conv.weight", "conv.bias", "bn.weight")}
    with pytest.raises(UserError, match="only 3 of the model's 7 tensors"):  # below half
        match_state_dict(three, Net())
    # prefixes that fit equally many keys: the shorter one wins
    lin = nn.Linear(2, 1)
    _, report = match_state_dict({"x.weight": lin.weight, "bias": lin.bias}, nn.Linear(2, 1))
    assert report.prefix == "" and report.unexpected == ["x.weight"] and report.matched == 1
    # nothing fits anywhere and everything is ignored: no child mapping is made up
    _, report = match_state_dict({"0.foo": torch.zeros(1)}, Net(), ignore=("conv", "bn"))
    assert report.child_map == {} and report.unexpected == ["0.foo"] and report.ignored == []

    class Holder(nn.Module):  # not torch.compile's wrapper, though it holds an _orig_mod
        def __init__(self):
            super().__init__()
            self._orig_mod = nn.Linear(2, 1)

    with pytest.raises(UserError, match=r"architecture \(Holder\)"):
        match_state_dict({"other": torch.zeros(1)}, Holder())


def test_summary_lists_three_keys_in_full():
    report = MatchReport("", [], ["a", "b", "c"], [], matched=1)
    assert report.summary() == "matched 1/1 model tensors; 0 missing; 3 unexpected (a, b, c); 0 ignored"
