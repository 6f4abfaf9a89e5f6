"""Tests of the ``kernel_ht`` estimator: stratified paired KernelSHAP without replacement,
Horvitz-Thompson weighted, with a linear or 3-additive fit and a design-based standard error.

References are independent of the estimator: closed-form Shapley values of the synthetic games
(:mod:`layerfast.estimators.games`), ``method="exact"``, populations and sizes recomputed from
binomial coefficients, and linear algebra on the coalitions a recording wrapper saw.

Statistical tests (fixed seeds, hence deterministic): over 60 seeds per game, the (seed, player)
cells with |estimate - truth| <= 1.96 stderr must be 85%..99.5% of all cells (95% expected;
below 85% the error bars are too narrow, above 99.5% far too wide) and RMS(error)/RMS(stderr)
must lie in [0.6, 1.6] (a stderr inflated or shrunk 1.7x is caught). The mean |error| at 4x
the budget (12 seeds) must be below 0.75x that at the base budget (sampling error predicts
0.5x or less; the bases leave 4x the budget short of all 2^n coalitions), and the median over
seeds of the RMSE of the values must be at most 1.25x that of ``method="kernel"`` at the same
budget.

By design and documented (so not tested as properties): the allocation is monotone under
doubling the budget, not under any increase; the order-3 ridge keeps 3-additive games from being
recovered exactly (tested with the ridge off); order="auto" below 1.5 pairs per 3-additive
parameter reports the larger of the two fits' error bars, conservative where it keeps the
3-additive fit.
"""

from __future__ import annotations

import contextlib
import warnings
from functools import cache
from itertools import combinations
from math import comb

import numpy as np
import pytest

import layerfast.estimators.kernel_ht as kernel_ht_module
from layerfast.errors import LayerfastWarning, UsageError
from layerfast.estimators import ESTIMATORS, KernelHTEstimator, get_estimator, shapley
from layerfast.estimators.games import (
    AdditiveGame,
    CornerstoneGame,
    UnanimityGame,
    WeightedVotingGame,
    random_game,
    random_unanimity_game,
)
from layerfast.estimators.kadd_fit import n_params
from layerfast.estimators.options import OptionTypeError
from layerfast.estimators.strata import n_pair_strata, plan_strata, stratum_pairs

try:  # order 3 solves a (p3 + 1)^2 system by SVD: threaded BLAS on a busy machine is ~10x slower
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - optional
    threadpool_limits = None


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    with threadpool_limits(1) if threadpool_limits else contextlib.nullcontext():
        yield


# --- helpers -----------------------------------------------------------------------------------
class Recorder:
    """Wraps a game; records every coalition it is asked for (as bytes of the bool mask)."""

    def __init__(self, game):
        self.game = game
        self.n_players = game.n_players
        self.asked: list[bytes] = []

    def __call__(self, masks):
        masks = np.asarray(masks, dtype=bool).reshape(-1, self.n_players)
        self.asked += [m.tobytes() for m in masks]
        return self.game(masks)

    @property
    def distinct(self) -> set[bytes]:
        return set(self.asked)

    def masks(self) -> np.ndarray:
        return np.array([np.frombuffer(b, dtype=bool) for b in self.distinct])


def population(n: int, s: int) -> int:
    """Pairs (z, ~z) with |z| = s: C(n, s), halved when z and ~z have the same size."""
    return comb(n, s) // 2 if 2 * s == n else comb(n, s)


def total_pairs(n: int) -> int:
    return 2 ** (n - 1) - 1


def k_additive_game(n: int, k: int, seed: int) -> UnanimityGame:
    """A dividend on every coalition of size <= k (a k-additive game), plus an intercept."""
    rng = np.random.default_rng(seed)
    div = {T: float(rng.normal()) for j in range(1, k + 1) for T in combinations(range(n), j)}
    return UnanimityGame(n, div, intercept=float(rng.normal()))


def run(game, budget, seed=0, **opts):
    return shapley(game, method="kernel_ht", budget=budget, seed=seed, **opts)


def quiet_run(game, budget, seed=0, **opts):
    """``run`` with the too-small-budget warning silenced (its stderr may be NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LayerfastWarning)
        return run(game, budget, seed, **opts)


def identified(masks: np.ndarray, n: int) -> bool:
    """The linear fit is unique: the coalitions (other than N and 0) and the all-ones row
    (the efficiency constraint) span R^n."""
    inner = masks[(masks.sum(axis=1) > 0) & (masks.sum(axis=1) < n)].astype(np.float64)
    return np.linalg.matrix_rank(np.vstack([inner, np.ones(n)])) == n


# --- 1. strata.plan_strata ---------------------------------------------------------------------
PLAN_NS = (2, 3, 4, 5, 7, 12, 13, 20)


def pair_counts(n: int) -> list[int]:
    total = total_pairs(n)
    counts = set(range(min(total, 300) + 3))
    counts |= {int(x) for x in np.geomspace(1, total + 10, 80)}
    counts |= {total - 1, total, total + 1, 10 * total}
    return sorted(c for c in counts if c >= 0)


def kernel_weight(n: int, s: int) -> float:
    """Kernel mass of stratum s per pair, up to a constant: counted once for s = n/2."""
    return (0.5 if 2 * s == n else 1.0) / (s * (n - s))


@pytest.mark.parametrize("n", PLAN_NS)
def test_plan_strata_allocation(n):
    H = n // 2
    total = total_pairs(n)
    assert n_pair_strata(n) == H
    for n_pairs in pair_counts(n):
        plan = plan_strata(n, n_pairs)
        take, pop, enum = plan.take, plan.population, plan.enumerated
        np.testing.assert_array_equal(plan.sizes, np.arange(1, H + 1))
        np.testing.assert_array_equal(pop, [population(n, s) for s in range(1, H + 1)])
        assert int(pop.sum()) == total
        assert int(take.sum()) == plan.n_pairs == min(n_pairs, total), (n_pairs, take)
        assert np.all(take >= 0) and np.all(take <= pop), (n_pairs, take, pop)
        np.testing.assert_array_equal(take[enum], pop[enum])
        sampled = ~enum
        if n_pairs >= 2 * H:
            assert np.all(take[sampled] >= np.minimum(2, pop[sampled])), (n_pairs, take)
        if n_pairs >= H:
            assert np.all(take >= 1), (n_pairs, take)
        # the border trick: strata are enumerated from the smallest size on ...
        k = int(enum.sum())
        assert np.all(enum[:k]) and not np.any(enum[k:]), (n_pairs, enum)
        # ... as long as their proportional share of the pairs left covers them
        left = min(n_pairs, total) - int(pop[enum].sum())
        w = np.array([kernel_weight(n, s) for s in range(1, H + 1)])
        if sampled.any():
            share = left * w[sampled] / w[sampled].sum()
            assert np.all(share < pop[sampled]), (n_pairs, share, pop)
            # proportional allocation, rounded, where no stratum needs the 2-pair floor
            if np.all(share >= 2):
                assert np.all(np.abs(take[sampled] - share) < 1), (n_pairs, take, share)
        # the kernel mass of one coalition of size s: (n - 1) / (C(n, s) s (n - s))
        mu = [(n - 1) / (comb(n, s) * s * (n - s)) for s in range(1, H + 1)]
        np.testing.assert_allclose(plan.mass, mu, rtol=1e-12)
        # Horvitz-Thompson: a pair of a stratum stands for N_s / m_s pairs (1 when enumerated)
        used = take > 0
        np.testing.assert_allclose(plan.expansion[used], pop[used] / take[used])
        np.testing.assert_array_equal(plan.expansion[enum], np.ones(int(enum.sum())))


def test_plan_strata_covers_everything_at_the_total():
    for n in PLAN_NS:
        plan = plan_strata(n, total_pairs(n))
        assert plan.enumerated.all()
        np.testing.assert_array_equal(plan.take, plan.population)
        assert plan_strata(n, 0).take.sum() == 0


@pytest.mark.parametrize("n", [40, 56, 58, 64, 65, 80, 160])
def test_plan_strata_large_n(n):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        plan = plan_strata(n, 1000)
    mu = [(n - 1) / (comb(n, s) * s * (n - s)) for s in range(1, n // 2 + 1)]
    np.testing.assert_allclose(plan.mass, mu, rtol=1e-12)
    # float64 populations: exact below 2^53, relative error ~1e-16 above
    assert sum(plan.population) == pytest.approx(total_pairs(n), rel=1e-12)
    assert plan.n_pairs == 1000


@pytest.mark.parametrize("n", [50, 60, 80])
def test_many_players(n):
    """Sublayer games of deep models have many players (80 for a 40-layer model)."""
    g = random_unanimity_game(n, 40, 3, seed=1)
    truth = g.shapley_values()
    rmse = {}
    for method in ("kernel_ht", "kernel"):
        errs = []
        for seed in range(3):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                res = shapley(g, method=method, budget=2000, seed=seed)
            assert res.n_evaluations <= 2000
            errs.append(np.sqrt(np.mean((res.values - truth) ** 2)))
        rmse[method] = np.median(errs)
    assert rmse["kernel_ht"] <= 1.5 * rmse["kernel"], rmse


# --- 2. strata.stratum_pairs -------------------------------------------------------------------
def all_representatives(n: int, s: int) -> set[bytes]:
    """Every pair of stratum s once: the s-subsets, keeping the one with player 0 at s = n/2."""
    out = set()
    for c in combinations(range(n), s):
        z = np.zeros(n, dtype=bool)
        z[list(c)] = True
        if 2 * s == n and not z[0]:
            continue
        out.add(z.tobytes())
    return out


def check_pairs(z: np.ndarray, n: int, s: int) -> None:
    assert z.dtype == bool and z.shape[1] == n
    assert np.all(z.sum(axis=1) == s)
    keys = [r.tobytes() for r in z]
    assert len(set(keys)) == len(keys), "a pair drawn twice"
    # no pair is drawn as both z and ~z
    assert not set(keys) & {(~r).tobytes() for r in z}
    if 2 * s == n:
        assert np.all(z[:, 0]), "the representative of a middle pair keeps player 0"


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7, 8, 9])
def test_stratum_pairs_enumeration_lists_the_population(n):
    for s in range(1, n // 2 + 1):
        z = stratum_pairs(n, s, population(n, s), None)
        check_pairs(z, n, s)
        assert len(z) == population(n, s)
        assert {r.tobytes() for r in z} == all_representatives(n, s)


@pytest.mark.parametrize("n", [4, 6, 7, 10, 12, 13])
def test_stratum_pairs_draws_are_distinct_and_nested(n):
    for s in range(1, n // 2 + 1):
        pop = population(n, s)
        big = min(pop, 40)
        for seed in range(3):
            z = stratum_pairs(n, s, big, np.random.default_rng([seed, s]))
            check_pairs(z, n, s)
            assert len(z) == big
            assert {r.tobytes() for r in z} <= all_representatives(n, s)
            for m in {1, 2, big // 2, big - 1} - {0}:
                small = stratum_pairs(n, s, m, np.random.default_rng([seed, s]))
                np.testing.assert_array_equal(small, z[:m])
        if pop >= 10:
            a = stratum_pairs(n, s, 10, np.random.default_rng([1, s]))
            b = stratum_pairs(n, s, 10, np.random.default_rng([2, s]))
            assert not np.array_equal(a, b)


def test_stratum_pairs_full_draw_is_a_permutation_and_first_pair_is_uniform():
    n, s = 6, 3  # the middle stratum: 10 pairs
    z = stratum_pairs(n, s, 10, np.random.default_rng(5))
    assert {r.tobytes() for r in z} == all_representatives(n, s)
    # the first pair over 2000 seeds: each of the 10 pairs expected 200 times (sd ~13.4)
    reps = sorted(all_representatives(n, s))
    counts = dict.fromkeys(reps, 0)
    for seed in range(2000):
        counts[stratum_pairs(n, s, 1, np.random.default_rng(seed))[0].tobytes()] += 1
    assert min(counts.values()) >= 140 and max(counts.values()) <= 260, counts


# --- 3. budgets --------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [3, 5, 8, 10])
def test_never_exceeds_the_budget_and_uses_it(n):
    est = get_estimator("kernel_ht")
    rng = np.random.default_rng(100 + n)
    budgets = {est.min_budget(n), 2**n} | set(rng.integers(est.min_budget(n), 2**n + 1, 8).tolist())
    for b in sorted(budgets):
        rec = Recorder(random_game(n, seed=n))
        res = quiet_run(rec, int(b), seed=int(b))
        distinct = rec.distinct
        assert len(distinct) <= b
        assert res.n_evaluations == len(distinct) == len(rec.asked)  # each coalition asked once
        assert res.n_evaluations == 2 + 2 * min((b - 2) // 2, total_pairs(n))
        assert res.info["n_pairs"] == min((b - 2) // 2, total_pairs(n))
        assert np.ones(n, bool).tobytes() in distinct and np.zeros(n, bool).tobytes() in distinct
        # every pair with its complement
        assert all((~np.frombuffer(k, dtype=bool)).tobytes() in distinct for k in distinct)


@pytest.mark.parametrize("n", [2, 3, 5, 8, 13])
def test_min_budget(n):
    est = KernelHTEstimator()
    assert est.min_budget(n) == 2 + 2 * (n // 2)  # v(N), v(0), one pair per stratum
    g = AdditiveGame(np.arange(1.0, n + 1))
    with pytest.raises(UsageError, match="budget"):
        run(g, est.min_budget(n) - 1)
    res = quiet_run(g, est.min_budget(n))
    assert res.n_evaluations <= est.min_budget(n)
    assert all(st["taken"] >= 1 for st in res.info["strata"])


@pytest.mark.parametrize("n", [3, 4, 5, 7, 8, 11, 13])
def test_min_budget_for_stderr(n):
    est = KernelHTEstimator()
    floor = est.min_budget_for_stderr(n)
    assert est.min_budget(n) <= floor <= 2**n
    # every budget from the floor up gives each sampled stratum two pairs
    for n_pairs in range((floor - 2) // 2, total_pairs(n) + 1):
        plan = plan_strata(n, n_pairs)
        assert np.all(plan.take[~plan.enumerated] >= 2), (n_pairs, plan.take)
    g = random_unanimity_game(n, 15, 3, seed=n)
    below = floor - 1
    if below >= est.min_budget(n):
        with pytest.warns(LayerfastWarning, match="stderr"):
            res = run(g, below)
        assert np.isnan(res.stderr).any()
        assert np.isfinite(res.values).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayerfastWarning)
        for b in (floor, floor + 1, floor + 7):
            res = run(g, min(b, 2**n), seed=b)
            assert np.all(np.isfinite(res.stderr)) and np.all(res.stderr >= 0)


@pytest.mark.parametrize("n", [1, 2, 3, 6, 9, 12])
def test_default_budget(n):
    est = KernelHTEstimator()
    default = est.default_budget(n)
    assert est.min_budget(n) <= default <= 2**n
    if n > 1:
        assert default >= est.min_budget_for_stderr(n)
    g = random_unanimity_game(n, 12, 3, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayerfastWarning)
        res = shapley(g, method="kernel_ht", seed=1)
    assert res.info["budget"] == default
    assert res.n_evaluations <= default
    assert np.all(np.isfinite(res.stderr))


# --- 4. exactness ------------------------------------------------------------------------------
@pytest.mark.parametrize("order", [1, 3, "auto"])
@pytest.mark.parametrize("n", [2, 3, 4, 6, 8])
def test_full_budget_is_exact_with_zero_stderr(n, order):
    g = random_game(n, seed=40 + n)
    exact = shapley(g, method="exact")
    for b in (2**n, 2**n + 7):
        res = run(g, b, seed=3, order=order)
        np.testing.assert_allclose(res.values, exact.values, rtol=0, atol=1e-9)
        np.testing.assert_allclose(res.values, g.shapley_values(), rtol=0, atol=1e-9)
        np.testing.assert_array_equal(res.stderr, np.zeros(n))
        assert res.n_evaluations == 2**n
        assert all(st["enumerated"] for st in res.info["strata"])
        np.testing.assert_array_equal(res.info["covariance"], np.zeros((n, n)))


@pytest.mark.parametrize("n", [3, 4, 5, 6, 8, 10])
def test_additive_and_pairwise_games_exact_whenever_identified(n):
    """Additive games (any order) and games with only pairwise interactions (order 1, thanks to
    pairing: v(z) - v(~z) is linear in z) are recovered exactly by every sample whose
    coalitions identify the linear fit; below n - 1 pairs no sample can."""
    est = KernelHTEstimator()
    additive = AdditiveGame(np.random.default_rng(n).normal(size=n), intercept=0.7)
    pairwise = k_additive_game(n, 2, seed=n)
    hits = 0
    for b in range(est.min_budget(n), min(2**n, 5 * n) + 1):
        for seed in range(2):
            for game, truth, orders in (
                (additive, additive.weights, (1, 3, "auto")),
                (pairwise, pairwise.shapley_values(), (1,)),
            ):
                for order in orders:
                    rec = Recorder(game)
                    res = quiet_run(rec, b, seed=seed, order=order)
                    if identified(rec.masks(), n):
                        hits += 1
                        np.testing.assert_allclose(res.values, truth, rtol=0, atol=1e-10)
                    if res.info["n_pairs"] < n - 1:
                        assert not identified(rec.masks(), n)
    assert hits > 0


@pytest.mark.parametrize("n", [5, 8])
def test_additive_game_exact_at_every_identified_budget_large_n(n):
    # from 2n pairs on the sample identifies the fit for these seeds (checked, not assumed)
    g = AdditiveGame(np.linspace(-1.0, 2.0, n), intercept=-0.3)
    for b in (4 * n + 2, 2 ** (n - 1), 2**n - 2):
        for order in (1, 3, "auto"):
            rec = Recorder(g)
            res = quiet_run(rec, b, seed=b, order=order)
            assert identified(rec.masks(), n)
            np.testing.assert_allclose(res.values, g.weights, rtol=0, atol=1e-10)


@pytest.mark.parametrize("n", [7, 8, 9])
def test_three_additive_game_exact_with_order_3_without_ridge(n, monkeypatch):
    """The 3-additive model fits a 3-additive game with zero residuals once there are as many
    pairs as parameters (each pair gives two equations), so the order-3 fit is exact when the
    ridge on the interaction terms is off."""
    g = k_additive_game(n, 3, seed=n)
    p3 = n_params(n, 3)
    monkeypatch.setattr(kernel_ht_module, "RIDGE", 0.0)
    for n_pairs in sorted({min(p3, total_pairs(n) - 1), min(p3 + 10, total_pairs(n))}):
        res = run(g, 2 + 2 * n_pairs, seed=n_pairs, order=3)
        assert res.info["order"] == 3 and res.info["ridge"] == 0.0
        np.testing.assert_allclose(res.values, g.shapley_values(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("n", [10, 11])
def test_three_additive_game_order_3_beats_order_1(n):
    g = k_additive_game(n, 3, seed=n)
    truth = g.shapley_values()
    b = 2 + 2 * 2 * n_params(n, 3)  # 2 pairs per 3-additive parameter, < half of all pairs
    e1 = [np.abs(run(g, b, seed=s, order=1).values - truth).max() for s in range(4)]
    e3 = [np.abs(run(g, b, seed=s, order=3).values - truth).max() for s in range(4)]
    assert np.mean(e3) < 0.5 * np.mean(e1), (e1, e3)


def test_efficiency_always_holds():
    est = KernelHTEstimator()
    worst = 0.0
    for n in (2, 3, 4, 7, 10):
        games = [random_game(n, seed=n), random_unanimity_game(n, 20, 3, seed=n)]
        for g in games:
            for b in sorted({est.min_budget(n), est.min_budget(n) + 3, 3 * n + 5, 2**n - 1}):
                b = max(b, est.min_budget(n))
                for order in (1, 3, "auto"):
                    res = quiet_run(g, b, seed=b, order=order)
                    gap = abs(res.values.sum() - (res.full - res.empty))
                    worst = max(worst, gap)
                    assert res.efficiency_gap == pytest.approx(0.0, abs=1e-9)
    assert worst <= 1e-9


# --- 5. accuracy and error bars over many seeds -----------------------------------------------
SEEDS = range(60)
STAT_GAMES = {
    # id: (game factory, base budget); 4x the base stays below 2^n
    "random8": (lambda: random_game(8, seed=5), 50),
    "random10": (lambda: random_game(10, seed=5), 120),
    "voting10": (lambda: WeightedVotingGame([1, 1, 2, 2, 3, 3, 4, 5, 6, 7], quota=18), 120),
    "unanimity10": (lambda: random_unanimity_game(10, 30, 4, seed=7), 120),
    "cornerstone12": (
        lambda: CornerstoneGame(
            12, [3, 8], weights=np.linspace(0.01, 0.05, 12), base=0.3, chance=0.25
        ),
        200,
    ),
    "unanimity12": (lambda: random_unanimity_game(12, 25, 4, seed=2), 200),
}


@cache
def truth_of(name):
    return STAT_GAMES[name][0]().shapley_values()


@cache
def cells(name, method, order, scale, n_seeds):
    """Errors and stderrs [seeds, n] of ``method`` on game ``name`` at ``scale`` x its budget."""
    make, budget = STAT_GAMES[name]
    game = make()
    opts = {"order": order} if method == "kernel_ht" else {}
    errs, ses = [], []
    for s in list(SEEDS)[:n_seeds]:
        res = shapley(game, method=method, budget=scale * budget, seed=s, **opts)
        assert res.n_evaluations <= scale * budget
        errs.append(res.values - truth_of(name))
        ses.append(res.stderr)
    return np.array(errs), np.array(ses)


def calibration(name, order):
    errs, ses = cells(name, "kernel_ht", order, 1, len(SEEDS))
    assert np.all(np.isfinite(ses)) and np.all(ses >= 0)
    coverage = float(np.mean(np.abs(errs) <= 1.96 * ses + 1e-12))
    ratio = float(np.sqrt(np.mean(errs**2)) / np.sqrt(np.mean(ses**2)))
    return coverage, ratio


@pytest.mark.parametrize("order", [1, 3])
@pytest.mark.parametrize("name", list(STAT_GAMES))
def test_error_bars_calibrated_fixed_order(name, order):
    coverage, ratio = calibration(name, order)
    assert 0.85 <= coverage <= 0.995, f"coverage {coverage:.3f}"
    assert 0.6 <= ratio <= 1.6, f"RMS(error)/RMS(stderr) = {ratio:.2f}"


@pytest.mark.parametrize("name", list(STAT_GAMES))
def test_error_bars_auto_never_too_narrow(name):
    coverage, ratio = calibration(name, "auto")
    assert coverage >= 0.85, f"coverage {coverage:.3f}"
    assert ratio <= 1.6, f"RMS(error)/RMS(stderr) = {ratio:.2f}"


# order="auto" below 1.5 pairs per 3-additive parameter reports the larger of the two fits'
# error bars (a documented, conservative choice): where it keeps the 3-additive fit on the
# unanimity and cornerstone games its bars are ~2x too wide, so those are not held to this bound
@pytest.mark.parametrize(
    "name", [n for n in STAT_GAMES if n not in ("unanimity10", "cornerstone12", "unanimity12")]
)
def test_error_bars_auto_not_too_wide(name):
    coverage, ratio = calibration(name, "auto")
    assert coverage <= 0.995, f"coverage {coverage:.3f}"
    assert ratio >= 0.6, f"RMS(error)/RMS(stderr) = {ratio:.2f}"


@pytest.mark.parametrize("name", list(STAT_GAMES))
def test_error_shrinks_with_budget(name):
    e1 = cells(name, "kernel_ht", "auto", 1, len(SEEDS))[0][:12]
    e4, _ = cells(name, "kernel_ht", "auto", 4, 12)
    m1, m4 = np.abs(e1).mean(), np.abs(e4).mean()
    assert m4 < 0.75 * m1, (m1, m4)


@pytest.mark.parametrize("name", list(STAT_GAMES))
def test_not_worse_than_kernel(name):
    eh, _ = cells(name, "kernel_ht", "auto", 1, len(SEEDS))
    ek, _ = cells(name, "kernel", None, 1, len(SEEDS))
    rmse_ht = np.median(np.sqrt(np.mean(eh**2, axis=1)))
    rmse_k = np.median(np.sqrt(np.mean(ek**2, axis=1)))
    assert rmse_ht <= 1.25 * rmse_k, (rmse_ht, rmse_k)


# --- 6. nested budgets -------------------------------------------------------------------------
@pytest.mark.parametrize("n,budget", [(5, 10), (6, 14), (8, 30), (8, 60), (10, 100), (12, 150)])
def test_doubling_the_budget_reuses_every_coalition(n, budget):
    g = random_unanimity_game(n, 20, 3, seed=n)
    for seed in range(3):
        small, large = Recorder(g), Recorder(g)
        quiet_run(small, budget, seed=seed)
        quiet_run(large, min(2 * budget, 2**n), seed=seed)
        assert small.distinct <= large.distinct
        memo: dict = {}
        first = quiet_run(g, budget, seed=seed, memo=memo)
        second = quiet_run(g, min(2 * budget, 2**n), seed=seed, memo=memo)
        assert first.info["n_game_evaluations"] == first.n_evaluations
        assert second.info["n_game_evaluations"] == second.n_evaluations - first.n_evaluations
        assert second.info["n_game_evaluations"] <= min(2 * budget, 2**n) - budget + 1


def test_same_seed_same_result_and_seeds_differ():
    g = random_game(10, seed=1)
    a, b, c = run(g, 150, seed=3), run(g, 150, seed=3), run(g, 150, seed=4)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.stderr, b.stderr)
    assert not np.allclose(a.values, c.values)
    gen = run(g, 150, seed=np.random.default_rng(3))
    np.testing.assert_array_equal(gen.values, a.values)


# --- 7. options, info and small games ---------------------------------------------------------
def test_orders_and_info():
    n = 8
    g = random_unanimity_game(n, 25, 4, seed=5)
    b = 120
    res = {o: run(g, b, seed=2, order=o) for o in (1, 3, "auto")}
    assert res[1].info["order"] == 1 and res[1].info["ridge"] == 0.0
    assert set(res[1].info["orders_fitted"]) == {1}
    assert res[3].info["order"] == 3 and res[3].info["ridge"] > 0
    assert set(res[3].info["orders_fitted"]) == {3}
    auto = res["auto"]
    fitted = auto.info["orders_fitted"]
    assert set(fitted) == {1, 3}
    # keeps the fit with the smaller estimated total variance ...
    chosen = auto.info["order"]
    assert chosen == min(fitted, key=fitted.get)
    assert fitted[1] == pytest.approx(np.sum(res[1].stderr ** 2), rel=1e-9)
    assert fitted[3] == pytest.approx(np.sum(res[3].stderr ** 2), rel=1e-9)
    # ... on the same sample: its values are that fit's
    np.testing.assert_allclose(auto.values, res[chosen].values, rtol=0, atol=1e-12)
    # below 1.5 pairs per 3-additive parameter the error bar is the larger of the two
    assert auto.info["n_pairs"] < 1.5 * n_params(n, 3)
    np.testing.assert_allclose(auto.stderr, np.fmax(res[1].stderr, res[3].stderr), rtol=1e-9)
    for r in res.values():
        info = r.info
        assert info["n_pairs"] == (b - 2) // 2
        assert [st["size"] for st in info["strata"]] == list(range(1, n // 2 + 1))
        assert sum(st["taken"] for st in info["strata"]) == info["n_pairs"]
        assert [st["pairs"] for st in info["strata"]] == [
            population(n, s) for s in range(1, n // 2 + 1)
        ]
        cov = info["covariance"]
        assert cov.shape == (n, n)
        np.testing.assert_allclose(cov, cov.T, atol=1e-12)
        assert np.linalg.eigvalsh(cov).min() >= -1e-9 * max(1.0, np.abs(cov).max())
        np.testing.assert_allclose(np.sqrt(np.diag(cov)), r.stderr, rtol=1e-9, atol=1e-15)


def test_auto_stderr_is_its_own_with_enough_pairs():
    n = 10
    g = random_unanimity_game(n, 30, 4, seed=7)
    b = 2 + 2 * (int(1.5 * n_params(n, 3)) + 10)
    auto = run(g, b, seed=1)
    own = run(g, b, seed=1, order=auto.info["order"])
    np.testing.assert_allclose(auto.values, own.values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(auto.stderr, own.stderr, rtol=1e-9)


def test_ridge_falls_with_the_number_of_pairs():
    n = 8
    g = random_game(n, seed=3)
    ridges = [run(g, b, seed=0, order=3).info["ridge"] for b in (40, 120, 200, 250)]
    assert all(r > 0 for r in ridges)
    assert all(a >= b for a, b in zip(ridges, ridges[1:])), ridges
    assert ridges[-1] < ridges[0]


@pytest.mark.parametrize("bad", [2, "x", True, False, None, 0, "1"])
def test_bad_order_raises(bad):
    with pytest.raises(UsageError, match="order"):
        run(random_game(4), 16, order=bad)
    with pytest.raises(UsageError, match="order"):
        get_estimator("kernel_ht", order=bad)


def test_misspelled_option_raises():
    with pytest.raises(OptionTypeError, match="order"):
        run(random_game(4), 16, ordr=3)
    with pytest.raises(TypeError):
        run(random_game(4), 16, ordr=3)


class ItemGame:
    """u_j(S) = sum_i w_ji [i in S] + b_j [T subseteq S]; v(S) = mean_j u_j(S)."""

    def __init__(self, w, T=(), b=None):
        self.w = np.asarray(w, dtype=np.float64)  # [n_items, n]
        self.n_players = self.w.shape[1]
        self.T = list(T)
        self.b = np.zeros(self.w.shape[0]) if b is None else np.asarray(b, dtype=np.float64)

    def terms(self, masks):
        masks = np.asarray(masks, dtype=bool).reshape(-1, self.n_players)
        out = masks.astype(np.float64) @ self.w.T
        if self.T:
            out += masks[:, self.T].all(axis=1)[:, None] * self.b[None, :]
        return out

    def per_item(self, mask, utility=None):
        return self.terms(mask)[0]

    def __call__(self, masks):
        return self.terms(masks).mean(axis=1)


def test_item_bootstrap():
    rng = np.random.default_rng(7)
    n_items, n = 120, 6
    w = rng.normal(size=(n_items, n)) * rng.uniform(0.5, 3.0, n) + rng.normal(size=n)
    res = run(ItemGame(w), 40, seed=3, item_bootstrap=20)
    np.testing.assert_allclose(res.values, w.mean(axis=0), rtol=0, atol=1e-9)
    assert np.all(np.isfinite(res.stderr_items)) and np.all(res.stderr_items > 0)
    # 20 replicates: the bootstrap sd has a relative error of about 1/sqrt(38) ~ 0.16
    analytic = w.std(axis=0, ddof=1) / np.sqrt(n_items)
    ratio = res.stderr_items / analytic
    assert np.all((ratio > 0.5) & (ratio < 1.6)), ratio
    assert res.info["item_bootstrap"]["replicates"] == 20
    # with a 3-way interaction the coalition sampling adds its own error
    game = ItemGame(w, T=(0, 2, 4), b=rng.normal(1.0, 2.0, n_items))
    res = run(game, 30, seed=3, item_bootstrap=20)
    assert np.all(np.isfinite(res.stderr_items)) and np.all(res.stderr_items > 0)
    assert np.all(np.isfinite(res.stderr_total))
    assert np.all(res.stderr_total >= np.fmax(res.stderr, res.stderr_items) - 1e-12)


@pytest.mark.parametrize("order", [1, 3, "auto"])
def test_one_and_two_players(order):
    g1 = AdditiveGame([2.5], intercept=1.0)
    res = run(g1, None, order=order)
    np.testing.assert_allclose(res.values, [2.5])
    np.testing.assert_array_equal(res.stderr, [0.0])
    assert res.n_evaluations == 2
    res = run(g1, 5, order=order)
    assert res.n_evaluations == 2
    g2 = random_game(2, seed=9)
    for b in (None, 4, 10):
        res = run(g2, b, order=order)
        np.testing.assert_allclose(res.values, g2.shapley_values(), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(res.stderr, [0.0, 0.0])
        assert res.n_evaluations == 4
        assert res.info["order"] == 1  # no 3-additive fit below 3 players


# --- 8. registry and CLI -----------------------------------------------------------------------
def test_registered_and_offered_by_the_cli():
    import layerfast.cli as cli

    assert ESTIMATORS["kernel_ht"] is KernelHTEstimator
    assert isinstance(get_estimator("kernel_ht"), KernelHTEstimator)
    parser = cli.build_parser()
    verbs = next(a for a in parser._actions if a.dest == "verb").choices
    method = next(a for a in verbs["shapley"]._actions if a.dest == "method")
    assert "kernel_ht" in method.choices
