"""ssl_ft.bench_profile: the profile behind each benchmark figure (tools/bench.py --profile)."""

from __future__ import annotations

import math

import torch

from ssl_ft.bench_profile import Profile, gap, profile_call, report_lines, write


def test_a_profiled_call_counts_its_operators_and_its_wall_time():
    a = torch.randn(64, 64)

    def work(n: int) -> None:
        for _ in range(n):
            torch.mm(a, a)

    p = profile_call(work, images=10, n=7)
    assert p["ops"]["aten::mm"][1] == 7 and p["ops"]["aten::mm"][0] > 0
    assert p["images"] == 10 and 0 < p.in_ops_s <= p["wall_s"] * 1.05
    assert "aten::mm" in p.table


def _p(wall: float, images: int, **ops: float) -> Profile:
    return Profile(wall_s=wall, images=images, ops={k: (v, 1) for k, v in ops.items()})


def test_the_gap_is_per_image_and_adds_up_to_the_wall_time():
    own = _p(3.0, 100, conv=1.5, augment=0.8)      # 0.7 s outside operators
    limit = _p(1.0, 50, conv=0.7)                  # 0.3 s outside
    rows = dict(gap(own, limit))
    assert math.isclose(rows["augment"], 8.0) and math.isclose(rows["conv"], 1.0)
    assert math.isclose(rows["outside operators"], 7.0 - 6.0)
    assert math.isclose(rows["total"], 30.0 - 20.0)
    assert math.isclose(rows["augment"] + rows["conv"] + rows["outside operators"],
                        rows["total"])
    assert list(rows)[:2] == ["augment", "conv"]   # the largest growth first


def test_the_report_compares_ssl_ft_with_its_limit_and_bf16_with_fp32(tmp_path):
    sections = {"pretrain simclr_28": {"limit bf16": _p(1.0, 10, conv=0.9),
                                        "ssl_ft (bf16)": _p(2.0, 10, conv=0.9, blur=0.6)},
                "finetune": {"ft 75-100 cache on": _p(1.0, 10, mm=0.5),
                             "ft 75-100 cache on bf16": _p(1.5, 10, mm=0.9)}}
    text = "\n".join(report_lines(sections))
    assert "`ssl_ft (bf16)` against `limit bf16`" in text and "| `blur` | +60.000 |" in text
    assert "`ft 75-100 cache on bf16` against `ft 75-100 cache on`" in text
    assert "| total | +100.000 |" in text and "| total | +50.000 |" in text
    assert "**ssl_ft (bf16)**: 2.00 s for 10 images" in text and "`blur` 30.0 %" in text
    path = write(sections, tmp_path)
    assert path.read_text() == text + "\n"
    assert (tmp_path / "pretrain_simclr_28" / "ssl_ft__bf16_.txt").exists()
