"""Models Genesis corruption rates: each branch fires at the rate its own field sets.

``genesis_corrupt`` paints with probability ``paint_rate`` and, among painted samples, in-paints
with probability ``inpaint_rate`` (out-paints otherwise). The rates are counted over many samples
with spies on the two painting functions; each sample gets its own constant value, so a spy can
tell exactly which samples reached it.
"""

from __future__ import annotations

import pytest
import torch

import ssl_ft.methods.genesis as genesis
from ssl_ft.methods.genesis import GenesisConfig, genesis_corrupt

N = 3000


def _run(monkeypatch, **rates):
    seen: dict[str, set[int]] = {"in": set(), "out": set()}
    real = {"in": genesis.genesis_inpaint, "out": genesis.genesis_outpaint}

    def spy(kind):
        def painted(x, **kwargs):
            seen[kind] |= {round(float(v) * N) for v in x[:, 0, 0, 0]}
            return real[kind](x, **kwargs)
        return painted

    monkeypatch.setattr(genesis, "genesis_inpaint", spy("in"))
    monkeypatch.setattr(genesis, "genesis_outpaint", spy("out"))
    x = (torch.arange(N, dtype=torch.float32) / N).view(N, 1, 1, 1).expand(N, 1, 12, 12)
    cfg = GenesisConfig(**rates)
    out = genesis_corrupt(x.clone(), cfg, torch.Generator().manual_seed(0))
    untouched = {i for i in range(N) if torch.equal(out[i], x[i])}
    return seen["in"], seen["out"], untouched


@pytest.mark.parametrize(("paint", "inpaint"), [(0.9, 0.2), (0.5, 0.7), (0.3, 0.0)])
def test_paint_and_inpaint_rates_are_read_from_their_own_fields(monkeypatch, paint, inpaint):
    # no shuffle and no intensity curve: a sample changes only if it is painted
    inp, outp, untouched = _run(monkeypatch, paint_rate=paint, inpaint_rate=inpaint,
                                local_rate=0.0, nonlinear_rate=0.0)
    assert not inp & outp  # in- or out-painting, never both
    assert len(inp) / N == pytest.approx(paint * inpaint, abs=0.03)
    assert len(outp) / N == pytest.approx(paint * (1 - inpaint), abs=0.03)
    # in-painting may draw no box (probability 0.05), out-painting always replaces the image
    assert untouched >= set(range(N)) - inp - outp
    assert untouched & outp == set()
    assert len(untouched - inp - outp) / N == pytest.approx(1 - paint, abs=0.03)


def test_shuffle_and_curve_rates_change_the_samples_they_pick(monkeypatch):
    # local_rate 1: every sample's constant image is shuffled (no change: it is constant), the
    # curve at rate 0.5 changes about half of them; no painting at all
    inp, outp, untouched = _run(monkeypatch, paint_rate=0.0, local_rate=1.0,
                                nonlinear_rate=0.5)
    assert not inp and not outp
    assert (N - len(untouched)) / N == pytest.approx(0.5, abs=0.04)
