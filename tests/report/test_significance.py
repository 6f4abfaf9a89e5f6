"""Told-from-zero flags and the items-needed power estimate, against the formulas written out."""

from __future__ import annotations

import numpy as np

from layerfast.report.significance import distinguishable, items_needed


def test_distinguishable_is_the_95_percent_interval_excluding_zero():
    rng = np.random.default_rng(0)
    values = rng.normal(size=200)
    se = rng.uniform(0.1, 1.0, size=200)
    want = (values - 1.959964 * se > 0) | (values + 1.959964 * se < 0)
    assert np.array_equal(distinguishable(values, se), want)
    assert not distinguishable(np.array([1.0]), np.array([np.nan]))[0]


def test_items_needed_gives_80_percent_power_by_simulation():
    """At the items it names, a normal estimate with the scaled error is told from 0 in ~80%."""
    rng = np.random.default_rng(1)
    value, se, n = 0.05, 0.04, 60
    need = int(items_needed(np.array([value]), np.array([se]), n)[0])
    se_at_need = se * np.sqrt(n / need)
    draws = rng.normal(value, se_at_need, size=20_000)
    power = np.mean(np.abs(draws) > 1.959964 * se_at_need)
    assert 0.78 <= power <= 0.82, (need, power)
    assert need > n  # 0.05 with s.e. 0.04 is not yet significant at 60 items
    assert items_needed(np.array([0.0]), np.array([0.1]), n)[0] == np.inf
