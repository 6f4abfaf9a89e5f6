"""Budgets too small for an error bar: stderr is NaN and a LayerfastWarning names the floor.

Each sampling estimator's stderr needs two units; ``min_budget_for_stderr(n)`` is the budget that
guarantees them. Below it a NaN stderr warns once (method, budget used, budget needed); at it the
stderr is finite and nothing warns.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from layerfast.errors import LayerfastWarning
from layerfast.estimators import ESTIMATORS, shapley
from layerfast.estimators.games import AdditiveGame, random_game

# (method, options, n, floor as a formula in n)
FLOORS = [
    ("permutation", {}, 6, lambda n: 4 * n - 2),
    ("truncated", {}, 6, lambda n: 2 + 4 * (n - 1)),
    ("truncated", {"antithetic": False}, 6, lambda n: 2 + 2 * (n - 1)),
    ("kernel", {}, 3, lambda n: 6),
]
IDS = ["permutation", "truncated", "truncated-single", "kernel"]


def game(n: int):
    g = random_game(n, seed=n)
    g.chance = -1e9  # no walk truncates, so every unit costs its worst case
    return g


def run(method: str, opts: dict, n: int, budget: int, seed: int):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = shapley(game(n), method=method, budget=budget, seed=seed, **opts)
    return res, [w for w in caught if issubclass(w.category, LayerfastWarning)]


@pytest.mark.parametrize("method,opts,n,floor", FLOORS, ids=IDS)
def test_floor_formula(method, opts, n, floor):
    est = ESTIMATORS[method](**opts)
    assert est.min_budget_for_stderr(n) == floor(n)
    assert est.min_budget(n) < floor(n)


@pytest.mark.parametrize("method,opts,n,floor", FLOORS, ids=IDS)
def test_below_floor_warns_when_stderr_is_nan(method, opts, n, floor):
    budget = ESTIMATORS[method](**opts).min_budget(n)
    n_nan = 0
    for seed in range(10):
        res, warned = run(method, opts, n, budget, seed)
        nan = bool(np.isnan(res.stderr).any())
        assert len(warned) == int(nan), (seed, warned)
        n_nan += nan
        if warned:
            msg = str(warned[0].message)
            assert f"'{method}'" in msg and f"budget={budget}" in msg
            assert f"budget >= {floor(n)}" in msg
    assert n_nan > 0


@pytest.mark.parametrize("method,opts,n,floor", FLOORS, ids=IDS)
def test_at_floor_gives_an_error_bar(method, opts, n, floor):
    for seed in range(10):
        res, warned = run(method, opts, n, floor(n), seed)
        assert not warned
        assert np.isfinite(res.stderr).all()


def test_issue_example_sixty_players():
    g = AdditiveGame(np.linspace(0.0, 1.0, 60))
    with pytest.warns(LayerfastWarning, match=r"budget=130 .* budget >= 238"):
        res = shapley(g, method="permutation", budget=130)
    assert np.isnan(res.stderr).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayerfastWarning)
        res = shapley(g, method="permutation", budget=238)
    assert np.isfinite(res.stderr).all()


@pytest.mark.parametrize("method", ["exact", "proximity"])
def test_methods_without_a_budget_floor_do_not_warn(method):
    assert ESTIMATORS[method]().min_budget_for_stderr(4) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayerfastWarning)
        res = shapley(game(4), method=method, **({"window": 1} if method == "proximity" else {}))
    assert np.isnan(res.stderr).all()  # by design: no sampling error / one term per player


def test_one_unit_cap_has_no_floor():
    assert ESTIMATORS["permutation"](max_pairs=1).min_budget_for_stderr(6) is None
    assert ESTIMATORS["truncated"](max_units=1).min_budget_for_stderr(6) is None
    assert ESTIMATORS["kernel"](max_pairs=1).min_budget_for_stderr(6) is None
