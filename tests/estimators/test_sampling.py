"""Statistical tests of the stochastic estimators (permutation, truncated, kernel).

Reference values come from a brute-force Shapley over subsets written in this file.

Coverage test (the reported standard errors are honest): for each estimator we run 40 fixed
seeds and count the (seed, player) cells with |estimate - truth| <= 3 * stderr. If the
estimator is approximately normal with a correct standard error, a cell misses with
probability ~0.3% (normal) to ~1% (Student t with ~15 units, the smallest unit counts here);
we require >= 90% of the cells to be covered. Cells of one seed are correlated, so the
number of misses is over-dispersed, but even if whole seeds failed together the chance of
losing 10% of the cells is far below 1e-3: the false-alarm rate of this test is < 0.1%.
The seeds are fixed, so the test is deterministic.

The test can fail: we also require the standard errors to be calibrated in size --
RMS(error) / RMS(stderr) in [0.6, 1.6] over the cells -- so stderr inflated 2x or shrunk
to 1/2 is caught (an understated stderr would also break the 90% coverage).

Convergence: mean |error| over 12 seeds at 4x the budget must be below 0.75x the mean
|error| at the base budget (the Monte Carlo rate predicts 0.5x).
"""

import math

import numpy as np
import pytest

from layerfast.estimators import shapley
from layerfast.estimators.games import CornerstoneGame, random_game, random_unanimity_game

SEEDS = list(range(40))


def brute_force_subsets(game):
    n = game.n_players
    ints = np.arange(1 << n)
    masks = ((ints[:, None] >> np.arange(n)) & 1).astype(bool)
    v = np.asarray(game(masks), dtype=float)
    size = masks.sum(axis=1)
    phi = np.zeros(n)
    for i in range(n):
        without = ints[~masks[:, i]]
        w = np.array(
            [
                math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)
                for s in size[without]
            ]
        )
        phi[i] = np.sum(w * (v[without + (1 << i)] - v[without]))
    return phi


def monotone_removal_game():
    # accuracy-like: monotone, chance 0.25 reached only by the empty coalition's neighbourhood
    g = random_game(12, seed=11, monotone=True, scale=0.05)
    g.table = g.table + 0.25
    g.chance = 0.25
    return g


CASES = [
    # (id, game factory, method, options, base budget)
    ("permutation_random", lambda: random_game(10, seed=5), "permutation", {}, 300),
    (
        "permutation_unanimity",
        lambda: random_unanimity_game(12, 25, 4, seed=2),
        "permutation",
        {},
        400,
    ),
    ("kernel_random", lambda: random_game(10, seed=5), "kernel", {}, 300),
    ("kernel_unanimity", lambda: random_unanimity_game(12, 25, 4, seed=2), "kernel", {}, 400),
    # truncation is exact on cornerstone games (utility stays at chance below a missing cornerstone)
    (
        "truncated_cornerstone",
        lambda: CornerstoneGame(
            12, [3, 8], weights=np.linspace(0.01, 0.05, 12), base=0.3, chance=0.25
        ),
        "truncated",
        {},
        300,
    ),
    # tolerance 0 and a chance level the utility never reaches: plain removal-walk Monte Carlo
    (
        "truncated_untruncated",
        lambda: random_game(10, seed=5),
        "truncated",
        {"tolerance": 0.0, "chance": 100.0},
        300,
    ),
    (
        "truncated_nonantithetic",
        monotone_removal_game,
        "truncated",
        {"antithetic": False, "tolerance": 0.0},
        300,
    ),
]


def run_cells(make, method, opts, budget, seeds):
    game = make()
    truth = brute_force_subsets(game)
    errs, ses = [], []
    for s in seeds:
        res = shapley(game, method=method, budget=budget, seed=s, **opts)
        assert res.n_evaluations <= budget
        errs.append(res.values - truth)
        ses.append(res.stderr)
    return np.array(errs), np.array(ses)


@pytest.mark.parametrize("name,make,method,opts,budget", CASES, ids=[c[0] for c in CASES])
def test_error_within_reported_stderr(name, make, method, opts, budget):
    errs, ses = run_cells(make, method, opts, budget, SEEDS)
    assert np.all(np.isfinite(ses)) and np.all(ses >= 0)
    covered = np.abs(errs) <= 3 * ses + 1e-12
    assert covered.mean() >= 0.90, f"coverage {covered.mean():.3f}"
    ratio = np.sqrt(np.mean(errs**2)) / np.sqrt(np.mean(ses**2))
    assert 0.6 <= ratio <= 1.6, f"RMS(error)/RMS(stderr) = {ratio:.2f}"


# games with 2^12 coalitions, so that 4x the budget is still far from enumerating them all
SHRINK = [
    c
    for c in CASES
    if c[0]
    in (
        "permutation_unanimity",
        "kernel_unanimity",
        "truncated_cornerstone",
        "truncated_nonantithetic",
    )
]


@pytest.mark.parametrize("name,make,method,opts,budget", SHRINK, ids=[c[0] for c in SHRINK])
def test_error_shrinks_with_budget(name, make, method, opts, budget):
    seeds = list(range(100, 112))
    e1, _ = run_cells(make, method, opts, budget, seeds)
    e4, _ = run_cells(make, method, opts, 4 * budget, seeds)
    m1, m4 = np.abs(e1).mean(), np.abs(e4).mean()
    assert m4 < 0.75 * m1, (m1, m4)


@pytest.mark.parametrize("method", ["permutation", "kernel"])
def test_efficiency_holds(method):
    g = random_game(9, seed=4)
    res = shapley(g, method=method, budget=200, seed=1)
    assert math.isfinite(res.empty)
    assert res.efficiency_gap == pytest.approx(0.0, abs=1e-9)


def test_truncation_saves_evaluations_and_is_exact_on_cornerstones():
    g = CornerstoneGame(16, [2, 9, 13], weights=np.full(16, 0.01), base=0.3, chance=0.25)
    res = shapley(g, method="truncated", budget=600, seed=0)
    # a walk stops as soon as the first cornerstone goes: on average after ~n/4 steps
    assert res.info["fraction_steps_evaluated"] < 0.5
    assert res.info["n_permutations"] > 600 / 16  # more walks than an untruncated sampler affords
    truth = g.shapley_values()
    assert np.all(np.abs(res.values - truth) <= 4 * res.stderr + 1e-12)


def test_truncation_bias_shows_in_efficiency_gap():
    """A game that falls to chance and then recovers: truncation drops the recovery."""

    class Dip:
        n_players = 6
        chance = 0.5

        def __call__(self, masks):
            k = np.asarray(masks).sum(axis=1)
            # v = 1 for N, chance at 5..3 kept players, 2.0 with <= 2 players kept
            return np.where(k == 6, 1.0, np.where(k >= 3, 0.5, 2.0))

    res = shapley(Dip(), method="truncated", budget=200, seed=0, tolerance=0.01)
    # every walk truncates after the first removal: values sum to v(N) - chance = 0.5,
    # while the Shapley values sum to v(N) - v(empty) = -1.0
    assert res.values.sum() == pytest.approx(0.5)
    assert res.empty == pytest.approx(2.0)  # evaluated with the leftover budget
    assert res.efficiency_gap == pytest.approx(1.5)


def test_truncated_needs_chance():
    g = random_game(5)
    with pytest.raises(ValueError, match="chance"):
        shapley(g, method="truncated", budget=50)
    res = shapley(g, method="truncated", budget=50, chance=-10.0)
    assert res.info["chance"] == -10.0


def test_same_seed_same_result_and_seeds_differ():
    g = random_game(10, seed=1)
    for m in ["permutation", "kernel", "truncated"]:
        opts = {"chance": 0.0} if m == "truncated" else {}
        a = shapley(g, method=m, budget=150, seed=3, **opts)
        b = shapley(g, method=m, budget=150, seed=3, **opts)
        c = shapley(g, method=m, budget=150, seed=4, **opts)
        np.testing.assert_array_equal(a.values, b.values)
        assert not np.allclose(a.values, c.values)
