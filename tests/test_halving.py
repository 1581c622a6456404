"""ssl_ft.halving: the successive-halving schedule shared by the auto race and its replay."""

from __future__ import annotations

from ssl_ft.halving import successive_halving


def _scores(table: dict[str, list[float]], asked: list[tuple[str, int]]):
    def score(name: str, k: int) -> float:
        asked.append((name, k))
        return max(table[name][:k])
    return score


def test_halves_on_doubling_rungs_until_one_is_left():
    table = {"a": [.1] * 8, "b": [.5, .6, .6, .9, .9, .9, .9, .9], "c": [.7] * 8,
             "d": [.2, .3, .8, .8, .8, .8, .8, .8]}
    asked, stops = [], []
    winner, stopped = successive_halving(list(table), 8, 0.25, _scores(table, asked),
                                         on_stop=lambda n, r: stops.append((n, r)))
    # rung 2: c .7, b .6, d .3, a .1 -> c and b go on; rung 4: b .9 beats c .7
    assert asked == [("a", 2), ("b", 2), ("c", 2), ("d", 2), ("c", 4), ("b", 4)]
    assert winner == "b" and stopped == {"d": 2, "a": 2, "c": 4}
    assert stops == [("d", 2), ("a", 2), ("c", 4)]


def test_the_last_rung_leaves_an_epoch_and_a_rung_that_cannot_grow_decides_at_once():
    table = {n: [v] * 6 for n, v in zip("abcde", (.1, .2, .3, .4, .5), strict=True)}
    asked: list = []
    winner, stopped = successive_halving(list(table), 6, 0.5, _scores(table, asked))
    assert [k for _, k in asked] == [3] * 5 + [5] * 2  # 3 -> min(5, 6): never all 6 epochs
    assert winner == "e" and stopped == {"c": 3, "b": 3, "a": 3, "d": 5}
    # 2 epochs: the first rung is 1 and cannot grow (min(1, 2)): every runner-up stops there
    winner, stopped = successive_halving(list(table), 2, 0.25, _scores(table, []))
    assert winner == "e" and stopped == {n: 1 for n in "abcd"}


def test_one_halving_and_ties():
    table = {"a": [.5] * 8, "b": [.5] * 8, "c": [.4] * 8}
    winner, stopped = successive_halving(list(table), 8, 0.25, _scores(table, []),
                                         halve=False)
    assert winner == "a" and stopped == {"b": 2, "c": 2}  # a tie keeps the order
    assert successive_halving(["x"], 8, 0.25, _scores({"x": [1.0]}, [])) == ("x", {})
