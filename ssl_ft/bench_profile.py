"""What bounds each figure of ``tools/bench.py``: a ``torch.profiler`` run of every contender.

``tools/bench.py --profile DIR`` calls each contender once more after its timed rounds, under
the profiler (CPU activity), and writes

* ``DIR/<section>/<contender>.txt``: the operators by self CPU time (``key_averages``);
* ``DIR/profile.md``: per contender the wall time of the profiled call, the share of it inside
  operators, the top operators; and for the pairs of :func:`comparisons` (ssl_ft against the
  limit; fine-tuning's cached ``75-100`` in bf16 against fp32) what separates them: the
  operators whose time per image grew most, and the time outside any operator (Python, the
  data loader's iteration). A fine-tuning contender's call is a whole run (set-up, both epochs,
  validation, the test), so its profile is that of the run, not of its timed last epoch.

An operator's self CPU time is the time the calling thread spent in it, its intra-op threads
not counted again, so the shares add up to the call's wall time except for the time spent
outside operators. The profiler slows small operators down: read the shares, not the speeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["Profile", "comparisons", "gap", "profile_call", "profiled", "report_lines", "write"]

TOP = 8  # operators listed per contender in profile.md


class Profile(dict):
    """One profiled call: ``wall_s``, ``images`` and ``ops`` (name -> self CPU seconds,
    calls); :attr:`table` is the profiler's own text table."""

    table: str = ""

    @property
    def in_ops_s(self) -> float:
        return sum(s for s, _ in self["ops"].values())


def profile_call(fn: Callable[..., Any], images: int, **kwargs: Any) -> Profile:
    """Run ``fn(**kwargs)`` once under ``torch.profiler``; ``images``: what the call trains (to
    compare calls of different length per image)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        fn(**kwargs)
        wall = time.perf_counter() - t0
    averages = prof.key_averages()
    ops = {e.key: (e.self_cpu_time_total / 1e6, int(e.count)) for e in averages}
    out = Profile(wall_s=wall, images=images, ops=ops)
    out.table = averages.table(sort_by="self_cpu_time_total", row_limit=40)
    return out


def gap(own: Profile, limit: Profile, top: int = TOP) -> list[tuple[str, float]]:
    """What ``own`` spends per image beyond ``limit``: ``(operator, extra ms per image)`` for
    the ``top`` operators that grew most, then ``("outside operators", ...)`` and
    ``("total", ...)`` (the difference in wall time per image)."""
    def per_image(p: Profile, name: str) -> float:
        return 1e3 * p["ops"].get(name, (0.0, 0))[0] / p["images"]

    names = set(own["ops"]) | set(limit["ops"])
    grew = sorted(((n, per_image(own, n) - per_image(limit, n)) for n in names),
                  key=lambda t: -t[1])[:top]
    outside = [1e3 * (p["wall_s"] - p.in_ops_s) / p["images"] for p in (own, limit)]
    total = 1e3 * (own["wall_s"] / own["images"] - limit["wall_s"] / limit["images"])
    return [*grew, ("outside operators", outside[0] - outside[1]), ("total", total)]


def _summary(name: str, p: Profile) -> list[str]:
    top = sorted(p["ops"].items(), key=lambda t: -t[1][0])[:TOP]
    share = 100 * p.in_ops_s / p["wall_s"]
    lines = [f"**{name}**: {p['wall_s']:.2f} s for {p['images']} images "
             f"({1e3 * p['wall_s'] / p['images']:.2f} ms an image), {share:.0f} % inside "
             "operators. Top operators by self CPU time:", ""]
    lines += [f"* `{op}` {100 * s / p['wall_s']:.1f} % ({calls} calls)"
              for op, (s, calls) in top]
    return [*lines, ""]


def comparisons(names: Iterable[str]) -> list[tuple[str, str]]:
    """The pairs ``(contender, baseline)`` among a section's ``names`` whose gap
    :func:`report_lines` tabulates where the section has both: ssl_ft against the limit at its
    precision (the ``ssl_ft (<precision>)`` row); fine-tuning's cached ``75-100`` in bf16
    against fp32, and cached against uncached."""
    from ssl_ft.benchmark import own_precision

    own = own_precision(names)
    return [*([(f"ssl_ft ({own})", f"limit {own}")] if own else []),
            ("ft 75-100 cache on bf16", "ft 75-100 cache on"),
            ("ft 75-100 cache on", "ft 75-100 cache off")]


def report_lines(sections: Mapping[str, Mapping[str, Profile]]) -> list[str]:
    """``profile.md``: per section the gaps of :func:`comparisons`, then every contender's
    summary."""
    lines = ["# Where the benchmark's time goes (torch.profiler, one call per contender)", ""]
    for section, profiles in sections.items():
        lines += [f"## {section}", ""]
        for a, b in comparisons(profiles):
            if a in profiles and b in profiles:
                lines += [f"`{a}` against `{b}`, milliseconds an image more (negative: less):",
                          "", "| where | ms / image |", "|---|---|"]
                lines += [f"| {n if n in ('outside operators', 'total') else '`' + n + '`'} "
                          f"| {ms:+.3f} |" for n, ms in gap(profiles[a], profiles[b])]
                lines.append("")
        for name, p in profiles.items():
            lines += _summary(name, p)
    return lines


def write(sections: Mapping[str, Mapping[str, Profile]], folder: Path) -> Path:
    """The per-contender tables and ``profile.md`` under ``folder``; returns profile.md."""
    for section, profiles in sections.items():
        sub = folder / section.replace(" ", "_")
        sub.mkdir(parents=True, exist_ok=True)
        for name, p in profiles.items():
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            (sub / f"{safe}.txt").write_text(p.table)
    path = folder / "profile.md"
    path.write_text("\n".join(report_lines(sections)) + "\n")
    return path


def profiled(contenders: Mapping[str, Callable[..., float]], images: int,
             **kwargs: Any) -> dict[str, Profile]:
    """:func:`profile_call` of every contender (``images`` each call trains)."""
    return {name: profile_call(fn, images, **kwargs) for name, fn in contenders.items()}
