"""Successive halving (Jamieson & Talwalkar, AISTATS 2016), the schedule of the ``layers: auto``
race (:func:`ssl_ft.auto_layers._race`) and of its replay on finished runs
(``docs/runs/auto_rules.py``): one function, so that the replay is the race's arithmetic.

Every candidate trains the first rung (``first`` of the epochs, at least one), the better half
by its score goes on to twice as many epochs (at most ``epochs - 1``: the last rung leaves an
epoch for the winner alone), and so on until one is left; where the rung cannot grow any more
(a run of 2 epochs) the best of the survivors wins at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

__all__ = ["successive_halving"]


def successive_halving(names: Sequence[str], epochs: int, first: float,
                       score: Callable[[str, int], float], *, halve: bool = True,
                       on_stop: Callable[[str, int], None] | None = None
                       ) -> tuple[str, dict[str, int]]:
    """``(winner, {candidate: the rung it stopped at})`` for every candidate but the winner.
    ``score(name, k)``: the candidate's score after ``k`` epochs (higher is better; the race
    trains it that far inside the call); ties keep the candidates' order. ``halve=False``:
    the first rung decides. ``on_stop(name, rung)`` is told of each stop as it happens."""
    alive, rung = list(names), max(1, math.ceil(epochs * first))
    stopped: dict[str, int] = {}
    while len(alive) > 1:
        scores = {n: score(n, rung) for n in alive}
        alive.sort(key=lambda n: -scores[n])
        nxt = min(epochs - 1, rung * 2)
        keep = max(1, len(alive) // 2) if halve and nxt > rung else 1
        for n in alive[keep:]:
            stopped[n] = rung
            if on_stop is not None:
                on_stop(n, rung)
        alive, rung = alive[:keep], nxt
    return alive[0], stopped
