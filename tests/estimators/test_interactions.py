"""Pairwise interactions (``lf.interactions``): the exact SII against a brute-force sum written
here and closed forms (additive games: 0; pairwise games v = sum a_i s_i + sum b_ij s_i s_j:
b_ij; unanimity games: sum over T containing i, j of d_T / (|T| - 1); a cornerstone game), the
removal interaction against its formula and a window-2 sweep, the sampled estimator's
unbiasedness, coverage and budget, the item bootstrap against the analytic item-level error,
and the errors a user can cause.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

import layerfast as lf
from layerfast.errors import LayerfastWarning, UsageError
from layerfast.estimators import shapley
from layerfast.estimators.games import (
    AdditiveGame,
    CornerstoneGame,
    TableGame,
    UnanimityGame,
    random_game,
    random_unanimity_game,
)
from layerfast.estimators.interaction_design import plan_sizes
from layerfast.estimators.interaction_index import InteractionResult, interactions

ROOT = Path(__file__).resolve().parents[2]


def brute_force_sii(game) -> np.ndarray:
    """I_ij = sum_{S in N \\ {i,j}} |S|!(n-|S|-2)!/(n-1)! [v(S+i+j) - v(S+i) - v(S+j) + v(S)]."""
    n = game.n_players

    def v(players) -> float:
        mask = np.zeros((1, n), dtype=bool)
        mask[0, list(players)] = True
        return float(game(mask)[0])

    out = np.full((n, n), np.nan)
    for i, j in itertools.combinations(range(n), 2):
        others = [k for k in range(n) if k not in (i, j)]
        total = 0.0
        for s in range(n - 1):
            w = math.factorial(s) * math.factorial(n - s - 2) / math.factorial(n - 1)
            for S in itertools.combinations(others, s):
                total += w * (v(S + (i, j)) - v(S + (i,)) - v(S + (j,)) + v(S))
        out[i, j] = out[j, i] = total
    return out


def unanimity_sii(game: UnanimityGame) -> np.ndarray:
    n = game.n_players
    out = np.zeros((n, n))
    for T, d in game.dividends.items():
        for i, j in itertools.combinations(T, 2):
            out[i, j] += d / (len(T) - 1)
            out[j, i] = out[i, j]
    np.fill_diagonal(out, np.nan)
    return out


def close(a, b, atol=1e-10):
    np.testing.assert_allclose(a, b, atol=atol, equal_nan=True)


class Counting:
    """A game that records every coalition it evaluates."""

    def __init__(self, game):
        self.game, self.n_players, self.seen = game, game.n_players, set()

    def __call__(self, masks):
        self.seen.update(map(bytes, np.packbits(masks, axis=1)))
        return self.game(masks)


# --- exact --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,seed", [(2, 0), (3, 1), (5, 2), (6, 3)])
def test_exact_equals_brute_force(n, seed):
    game = random_game(n, seed=seed)
    res = interactions(game)
    close(res.values, brute_force_sii(game))
    assert res.n_evaluations == 2**n and res.method == "exact" and res.order == 2
    assert np.isnan(np.diag(res.values)).all() and np.isnan(np.diag(res.stderr)).all()
    off = ~np.eye(n, dtype=bool)
    assert (res.stderr[off] == 0).all()
    assert np.array_equal(res.values, res.values.T, equal_nan=True)


def test_additive_game_has_no_interactions():
    game = AdditiveGame([0.3, -1.0, 2.0, 0.5, 0.1], intercept=0.7)
    for method in ("exact", "removal"):
        res = interactions(game, method=method)
        assert np.nanmax(np.abs(res.values)) < 1e-12, method
        assert res.top(5, "redundant") == [] and res.top(5, "synergistic") == []
    # sampled: sizes 1 and n-1 are enumerated, so the additive control fits the game exactly
    res = interactions(game, method="sampled", budget=24, seed=0)
    assert res.info["enumerated_sizes"] == [0, 1, 4, 5] and res.info["n_samples"] > 0
    assert np.nanmax(np.abs(res.values)) < 1e-12 and np.nanmax(res.stderr) < 1e-12


def test_pairwise_game_has_its_coefficients():
    rng = np.random.default_rng(0)
    n = 6
    a, b = rng.normal(size=n), np.triu(rng.normal(size=(n, n)), 1)
    div = {(i,): a[i] for i in range(n)}
    div.update({(i, j): b[i, j] for i, j in itertools.combinations(range(n), 2)})
    game = UnanimityGame(n, div, intercept=0.2)  # v(S) = sum a_i s_i + sum b_ij s_i s_j
    truth = b + b.T
    np.fill_diagonal(truth, np.nan)
    close(interactions(game).values, truth)
    close(interactions(game, method="removal").values, truth)  # no higher orders: the same


def test_unanimity_and_cornerstone_games():
    game = random_unanimity_game(7, n_terms=15, max_order=4, seed=3)
    close(interactions(game).values, unanimity_sii(game))
    # cornerstones 1 and 4: v = chance unless both are in; then chance + a + sum w_i s_i, i.e.
    # dividends a on {1, 4} and w_i on {1, 4, i}
    w = np.array([0.1, 0.0, 0.05, 0.2, 0.0, 0.15])
    game = CornerstoneGame(6, [1, 4], weights=w, base=0.4, chance=0.25)
    res = interactions(game)
    assert res.values[1, 4] == pytest.approx(0.4 + w.sum() / 2)
    for i in (0, 2, 3, 5):
        assert res.values[1, i] == pytest.approx(w[i] / 2)
        assert res.values[4, i] == pytest.approx(w[i] / 2)
    assert abs(res.values[0, 2]) < 1e-12 and abs(res.values[3, 5]) < 1e-12
    assert res.top(1, "synergistic")[0][:2] == (1, 4)
    # one cornerstone: pair (c, i) = w_i
    one = interactions(CornerstoneGame(4, [0], weights=[0, 0.1, 0.2, 0.3], base=0.4))
    close(one.values[0, 1:], [0.1, 0.2, 0.3])


def test_sign_convention():
    either = TableGame([0.0, 1.0, 1.0, 1.0])  # either player suffices
    both = TableGame([0.0, 0.0, 0.0, 1.0])  # both are needed
    for method in ("exact", "removal"):
        assert interactions(either, method=method).values[0, 1] == pytest.approx(-1.0)
        assert interactions(both, method=method).values[0, 1] == pytest.approx(1.0)
    assert interactions(either).top(1, "redundant")[0][:3] == (0, 1, pytest.approx(-1.0))
    assert interactions(either).top(1, "synergistic") == []


# --- removal ------------------------------------------------------------------------------------
def test_removal_is_the_formula():
    game = random_game(6, seed=5)
    n = 6
    res = interactions(game, method="removal")
    full = np.ones(n, dtype=bool)

    def v(*removed):
        m = full.copy()
        m[list(removed)] = False
        return game(m[None])[0]

    for i, j in itertools.combinations(range(n), 2):
        assert res.values[i, j] == pytest.approx(v() - v(i) - v(j) + v(i, j))
    assert res.n_evaluations == 1 + n + n * (n - 1) // 2
    assert res.to_dict()["index"] == "removal interaction"


def test_removal_of_adjacent_pairs_comes_from_a_window_2_sweep():
    game = random_game(7, seed=6)
    memo: dict = {}
    shapley(game, method="proximity", window=2, memo=memo)
    res = interactions(game, method="removal", pairs="adjacent", memo=memo)
    assert res.info["n_game_evaluations"] == 0  # every coalition was in the sweep
    assert res.n_evaluations == 1 + 7 + 6
    every = interactions(game, method="removal").values
    for i in range(6):
        assert res.values[i, i + 1] == pytest.approx(every[i, i + 1])
    assert np.isnan(res.values[0, 2]) and len(res.pairs()) == 6


# --- sampled ------------------------------------------------------------------------------------
def test_sampled_is_unbiased_and_its_stderr_covers():
    game = random_unanimity_game(8, n_terms=20, max_order=4, seed=11)
    truth = unanimity_sii(game)
    iu = np.triu_indices(8, 1)
    errs, ses = [], []
    for seed in range(60):
        res = interactions(game, method="sampled", budget=70, seed=seed)
        assert res.n_evaluations <= 70
        errs.append((res.values - truth)[iu])
        ses.append(res.stderr[iu])
    errs, ses = np.array(errs), np.array(ses)
    cover = np.mean(np.abs(errs) <= 1.96 * ses)
    assert 0.85 <= cover <= 0.99, cover
    # unbiased: the mean error over seeds is within noise for (almost) every pair
    z = errs.mean(axis=0) / (np.sqrt(np.mean(ses**2, axis=0)) / np.sqrt(len(errs)))
    assert np.mean(np.abs(z) < 3) >= 0.9, z
    assert 0.7 < np.sqrt(np.mean(errs**2)) / np.sqrt(np.mean(ses**2)) < 1.4


def test_sampled_error_shrinks_with_budget_and_never_exceeds_it():
    game = random_unanimity_game(10, n_terms=25, max_order=3, seed=2)
    truth = unanimity_sii(game)

    def mae(budget):
        out = []
        for seed in range(8):
            counted = Counting(game)
            res = interactions(counted, method="sampled", budget=budget, seed=seed)
            assert res.n_evaluations <= budget and len(counted.seen) <= budget
            out.append(np.nanmean(np.abs(res.values - truth)))
        return np.mean(out)

    assert mae(400) < 0.75 * mae(100)
    for budget in (4, 5, 13, 57, 1023):  # odd budgets, the minimum, all but one coalition
        counted = Counting(game)
        res = interactions(counted, method="sampled", budget=budget, seed=1)
        assert len(counted.seen) == res.n_evaluations <= budget
        assert res.info["n_samples"] >= 2 and np.isfinite(res.stderr[0, 1])


def test_sampled_equals_exact_when_the_budget_covers_everything():
    game = random_game(7, seed=9)
    exact = interactions(game)
    res = interactions(game, method="sampled", budget=128, seed=3)
    close(res.values, exact.values)
    assert res.info["exact"] and res.info["sampled_sizes"] == []
    assert np.nanmax(res.stderr) == 0 and res.n_evaluations == 128


def test_sampled_default_budget_and_border_sizes():
    game = random_unanimity_game(12, seed=0)
    res = interactions(game, method="sampled")
    assert res.n_evaluations <= 1200 and res.info["budget"] == 1200
    assert res.info["enumerated_sizes"] == [0, 1, 2, 10, 11, 12]
    enumerated, sampled, p = plan_sizes(12, 1200)
    assert sampled == list(range(3, 10)) and p.sum() == pytest.approx(1.0)
    assert plan_sizes(5, 32)[1] == [] and plan_sizes(5, 4)[0] == [0, 5]


# --- item bootstrap -----------------------------------------------------------------------------
class PairwiseItemGame:
    """u_l(S) = sum_j a_lj s_j + sum_{j<k} b_ljk s_j s_k; v = mean_l u_l; SII_jk = mean_l b_ljk."""

    def __init__(self, n_items=120, n=5, seed=0):
        rng = np.random.default_rng(seed)
        self.n_players = n
        self.a = rng.normal(size=(n_items, n))
        self.b = rng.normal(size=(n_items, n, n)) * rng.uniform(0.5, 2, (n, n)) + 0.3
        self.b = np.triu(self.b, 1)

    def item_values(self, masks):
        z = np.asarray(masks, dtype=np.float64)
        return z @ self.a.T + np.einsum("mj,ljk,mk->ml", z, self.b, z)

    def __call__(self, masks):
        return self.item_values(masks).mean(axis=1)


def test_item_bootstrap_matches_the_analytic_item_error():
    game = PairwiseItemGame()
    res = interactions(game, item_bootstrap=400, seed=1)
    iu = np.triu_indices(5, 1)
    close(res.values[iu], game.b.mean(axis=0)[iu], atol=1e-9)
    analytic = game.b.std(axis=0, ddof=1)[iu] / np.sqrt(game.b.shape[0])
    ratio = res.stderr_items[iu] / analytic
    assert np.all(np.abs(ratio - 1) < 0.15), ratio
    close(res.stderr_total, res.stderr_items)  # exact: no coalition error
    assert res.item_replicates.shape == (400, 5, 5)
    assert res.info["item_bootstrap"]["n_items"] == 120
    # sampled: both parts add in quadrature, on the same coalitions
    s = interactions(game, method="sampled", budget=12, seed=2, item_bootstrap=50)
    close(s.stderr_total, np.sqrt(s.stderr**2 + s.stderr_items**2))
    assert s.info["item_bootstrap"]["n_coalitions"] <= 12
    rows = s.rows()
    assert {"stderr_items", "stderr_total"} <= set(rows[0])


def test_item_bootstrap_without_per_item_terms():
    res = interactions(random_game(4, seed=0), item_bootstrap=20)
    assert np.isnan(res.stderr_items).all() and "per_item" in res.info["item_bootstrap"]["note"]
    close(res.stderr_total, res.stderr)
    assert interactions(random_game(4, seed=0)).stderr_items is None


# --- the result, the public name, errors ---------------------------------------------------------
def test_result_dict_pairs_and_table():
    game = UnanimityGame(4, {(0, 1): 2.0, (2, 3): -1.0, (1, 2): 0.5})
    res = interactions(game)
    assert isinstance(res, InteractionResult) and lf.interactions is interactions
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["values"][0][0] is None and d["values"][0][1] == pytest.approx(2.0)
    assert d["players"] == ["p0", "p1", "p2", "p3"] and d["order"] == 2
    pairs = res.pairs()
    assert pairs[0][:2] == (2, 3) and pairs[-1][:2] == (0, 1) and len(pairs) == 6
    assert [r[:2] for r in res.top(5, "synergistic")] == [(0, 1), (1, 2)]
    assert "redundant" in res.table() and "p2" in res.table(top=1)


def test_bad_inputs():
    game = random_game(4, seed=0)
    with pytest.raises(UsageError, match="order=3"):
        interactions(game, order=3)
    with pytest.raises(UsageError, match=r"did you mean 'exact'.*removal.*sampled"):
        interactions(game, method="exactt")
    with pytest.raises(UsageError, match="max_samples"):
        interactions(game, method="sampled", max_sample=3)
    with pytest.raises(UsageError, match="at least 4"):
        interactions(game, method="sampled", budget=3)
    with pytest.raises(UsageError, match="at least 11"):
        interactions(game, method="removal", budget=10)
    with pytest.raises(UsageError, match="at least 16.*sampled"):
        interactions(game, budget=15)
    with pytest.raises(UsageError, match="sampled"):
        interactions(AdditiveGame(np.zeros(21)))
    with pytest.raises(UsageError, match="at least 2 players"):
        interactions(AdditiveGame([1.0]))
    with pytest.raises(UsageError, match="pairs"):
        interactions(game, method="removal", pairs="neighbours")
    with pytest.raises(UsageError, match="item_bootstrap"):
        interactions(game, item_bootstrap=1)
    res = interactions(game)
    with pytest.raises(UsageError, match="redundant, synergistic"):
        res.top(3, kind="positive")
    with pytest.raises(UsageError, match="k must"):
        res.top(0)


def test_one_draw_warns():
    with pytest.warns(LayerfastWarning, match="stderr is NaN"):
        res = interactions(random_game(10, seed=0), method="sampled", max_samples=1, seed=0)
    assert np.isnan(res.stderr[0, 1])


def test_ground_truth_game():
    """The 12-block game of docs/shapley.md (its 4,096 memoised utilities): the exact SII by
    :func:`interactions` equals the direct sum for a few pairs."""
    path = ROOT / "benchmarks" / "ground_truth" / "ground_truth.json"
    if not path.is_file():
        pytest.skip("no ground-truth table")
    data = json.loads(path.read_text())
    game = TableGame(np.array(data["table"]), players=data["players"])
    res = interactions(game)
    n, ints = 12, np.arange(4096)
    for i, j in [(0, 1), (4, 5), (3, 11)]:
        rest = ints[((ints >> i) & 1 == 0) & ((ints >> j) & 1 == 0)]
        s = np.array([bin(x).count("1") for x in rest])
        w = np.array([math.factorial(k) * math.factorial(n - k - 2) for k in s]) / math.factorial(
            n - 1
        )
        t = game.table
        direct = np.sum(
            w * (t[rest | 1 << i | 1 << j] - t[rest | 1 << i] - t[rest | 1 << j] + t[rest])
        )
        assert res.values[i, j] == pytest.approx(direct, abs=1e-12)
