"""Where a run's wall time goes: named phases, timed where they happen.

``with profiling() as phases:`` starts a record (a dict ``{phase: seconds}``); inside it every
``with phase("train"):`` adds its wall seconds to that phase. Outside a record ``phase`` costs a
clock read and keeps nothing, so library code can be instrumented unconditionally. Records nest:
an inner ``profiling()`` (a fusion run inside a study, say) keeps its own and leaves the outer
one's untouched. Fine-tuning writes its record to ``metrics.json`` under ``profile_s``; a study
sums them (``ssl_ft.study.profile_report``) to show what its cells spend their time on (issue
16, item 4).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

__all__ = ["PHASES", "phase", "profiling"]

#: The phases fine-tuning records, in the order a run meets them (``other`` is the rest of the
#: run's wall time: thread and optimiser set-up, loaders, logs, TensorBoard).
PHASES = ("auto", "setup", "prefix_cache", "probe", "train", "validate", "checkpoint", "test")

_stack: list[dict[str, float]] = []


@contextlib.contextmanager
def profiling() -> Iterator[dict[str, float]]:
    """A new record of phase seconds for the code inside the block (yielded, filled as it runs)."""
    record: dict[str, float] = {}
    _stack.append(record)
    try:
        yield record
    finally:
        _stack.remove(record)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the block's wall seconds to ``name`` in the innermost open record (if any). A phase
    inside a phase of the same record counts in both: keep phases side by side."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if _stack:
            record = _stack[-1]
            record[name] = record.get(name, 0.0) + time.perf_counter() - t0
