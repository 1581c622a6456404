"""A study reuses the finished runs of another study that are the same run (``reuse:``)."""

from __future__ import annotations

import json
from pathlib import Path

from ssl_ft.study import expand, load_study, run_study
from ssl_ft.study.reuse import run_key

TINY = Path(__file__).resolve().parents[1] / "recipes" / "study" / "tiny.yaml"
ONE = ["threads=1", "finetune.grid.label_fraction=[1.0]", "finetune.grid.seed=[0]",
       "finetune.grid.strategy=[ft]", "ensemble=null"]


def _ran(out: Path) -> list[str]:
    return [json.loads(x)["cell"] for x in (out / "timing.jsonl").read_text().splitlines()
            if '"cell"' in x]


def test_equal_runs_are_copied_and_others_run(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_FT_DATA", str(data_root))
    first = load_study(TINY, [f"out={tmp_path / 'a'}", *ONE])
    cells_a = expand(first)
    assert run_study(first, cells_a, progress=False) == {}
    # the same two runs with another thread count, and both again with another learning rate
    second = load_study(TINY, [f"out={tmp_path / 'b'}", *ONE, "threads=2",
                               f"reuse=[{tmp_path / 'a'}]", "finetune.extra=[{lr: 0.01}]"])
    cells_b = expand(second)
    assert len(cells_b) == 4
    assert run_study(second, cells_b, progress=False) == {}
    ran = _ran(tmp_path / "b")
    assert len(ran) == 2 and all("0.01" in c for c in ran), ran  # only the new runs ran
    for a in cells_a:
        b = next(c for c in cells_b if c.id == a.id)
        folder = b.folder(second.out)
        assert (folder / "reused_from.txt").read_text().strip() == str(a.folder(first.out).resolve())
        assert json.loads((folder / "metrics.json").read_text()) == \
            json.loads((a.folder(first.out) / "metrics.json").read_text())
        assert (folder / "model.pt").is_file()


def test_the_key_ignores_out_and_threads_only():
    base = {"checkpoint": "none", "arch": "resnet18", "data": "pneumoniamnist", "out": "x"}
    assert run_key(base) == run_key({**base, "out": "y", "threads": 2})
    assert run_key(base) != run_key({**base, "seed": 1})
    assert run_key(base) != run_key({**base, "epochs": 3})


def test_an_auto_run_is_keyed_by_the_chooser_options_it_resolved(tmp_path):
    from ssl_ft.auto_layers import AutoConfig
    from ssl_ft.config import to_dict
    from ssl_ft.study.reuse import _index

    auto = {"checkpoint": "none", "data": "pneumoniamnist", "layers": "auto", "out": "x"}
    # defaults count as given; another option is another run
    assert run_key(auto) == run_key({**auto, "auto_args": {"race_rung": 0.25}})
    assert run_key(auto) != run_key({**auto, "auto_args": {"race_among": []}})
    fixed = {**auto, "layers": "0-100"}
    # the chooser's options do not change a fixed run
    assert run_key(fixed) == run_key({**fixed, "auto_args": {"race": 1}})
    # a finished auto run is indexed with the options it recorded; one that recorded none (an
    # older rule whose defaults are unknown), or fewer options than the chooser has now, is
    # not reusable
    fewer = {k: v for k, v in to_dict(AutoConfig()).items() if k != "race_among"}
    for name, record in (("new", {"auto_args": to_dict(AutoConfig())}), ("old", {}),
                         ("older", {"auto_args": fewer})):
        run = tmp_path / "cells" / "finetune" / name
        run.mkdir(parents=True)
        recipe = {**auto, "layers": "25-50", "seed": {"new": 0, "old": 1, "older": 2}[name]}
        (run / "metrics.json").write_text(json.dumps({"recipe": recipe, "auto": {
            "requested": {"layers": "auto"}, **record}}))
    index = _index([str(tmp_path)])
    assert list(index.values()) == [tmp_path / "cells" / "finetune" / "new"]
    assert run_key({**auto, "seed": 0}) in index
