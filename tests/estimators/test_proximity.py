"""Proximity (neighbourhood) estimator: formula by hand, cost, options."""

import math

import numpy as np
import pytest

from layerfast.estimators import proximity_cost, shapley
from layerfast.estimators.games import AdditiveGame, random_game


class DictGame:
    """A 3-player game given by a table of coalitions (tuples of kept players)."""

    n_players = 3

    def __init__(self, table):
        self.table = table
        self.asked = []

    def __call__(self, masks):
        out = []
        for m in np.asarray(masks, dtype=bool):
            key = tuple(np.nonzero(m)[0].tolist())
            self.asked.append(key)
            out.append(self.table[key])
        return np.array(out, dtype=float)


TABLE = {
    (0, 1, 2): 10.0,  # N
    (1, 2): 4.0,  # N \ {0}
    (0, 2): 7.0,  # N \ {1}
    (0, 1): 8.0,  # N \ {2}
    (2,): 1.0,  # N \ {0, 1}
    (0,): 3.0,  # N \ {1, 2}
    (1,): 2.0,  # N \ {0, 2}  (not a contiguous window: must not be asked)
    (): 0.0,
}


def test_hand_computed_window2():
    """n = 3, L = 2. Windows U with l at one end:

    player 0: U={0}: 10-4 = 6;  U=[0,1] (left end), W={1}: v(N\\{1}) - v(N\\{0,1}) = 7-1 = 6
              -> mean 6, stderr 0
    player 1: U={1}: 10-7 = 3;  U=[1,2] (left end), W={2}: v(N\\{2}) - v(N\\{1,2}) = 8-3 = 5;
              U=[0,1] (right end), W={0}: v(N\\{0}) - v(N\\{0,1}) = 4-1 = 3
              -> mean 11/3, sample std 2/sqrt(3), stderr (2/sqrt(3))/sqrt(3) = 2/3
    player 2: U={2}: 10-8 = 2;  U=[1,2] (right end), W={1}: v(N\\{1}) - v(N\\{1,2}) = 7-3 = 4
              -> mean 3, sample std sqrt(2), stderr 1
    Cost: (3) + (2) + 1 = 6 coalitions: N, N\\{0}, N\\{1}, N\\{2}, N\\{0,1}, N\\{1,2}.
    """
    g = DictGame(TABLE)
    res = shapley(g, method="proximity", window=2)
    np.testing.assert_allclose(res.values, [6.0, 11.0 / 3.0, 3.0])
    np.testing.assert_allclose(res.stderr, [0.0, 2.0 / 3.0, 1.0])
    assert res.n_evaluations == 6
    assert sorted(set(g.asked)) == sorted([(0, 1, 2), (1, 2), (0, 2), (0, 1), (2,), (0,)])
    assert len(g.asked) == 6  # one batched call, nothing twice
    assert res.full == 10.0
    assert math.isnan(res.empty) and math.isnan(res.efficiency_gap)


def test_hand_computed_window1_is_ablation_drop():
    g = DictGame(TABLE)
    res = shapley(g, method="proximity", window=1)
    np.testing.assert_allclose(res.values, [10 - 4, 10 - 7, 10 - 8])
    assert np.all(np.isnan(res.stderr))  # one term each
    assert res.n_evaluations == 4


def reference_proximity(game, L):
    """Straight transcription of the formula, coalition by coalition (no batching)."""
    n = game.n_players

    def v_without(removed):
        m = np.ones((1, n), dtype=bool)
        m[0, list(removed)] = False
        return float(game(m)[0])

    vals, ses = [], []
    for l in range(n):
        terms = []
        for k in range(1, L + 1):
            for start in range(n - k + 1):
                U = list(range(start, start + k))
                if l not in U or (l != U[0] and l != U[-1]):
                    continue
                if k == 1:
                    terms.append(v_without([]) - v_without(U))
                else:
                    W = [u for u in U if u != l]
                    terms.append(v_without(W) - v_without(U))
        # for k >= 2 a window with l at an end and length k is found once per end
        vals.append(np.mean(terms))
        ses.append(np.std(terms, ddof=1) / np.sqrt(len(terms)) if len(terms) > 1 else np.nan)
    return np.array(vals), np.array(ses)


@pytest.mark.parametrize("n,L", [(6, 3), (9, 2), (5, 5), (4, 7), (8, 1)])
def test_matches_reference_and_cost(n, L):
    g = random_game(n, seed=n * 10 + L)
    res = shapley(g, method="proximity", window=L)
    ref_v, ref_se = reference_proximity(g, min(L, n))
    np.testing.assert_allclose(res.values, ref_v, atol=1e-12)
    np.testing.assert_allclose(res.stderr, ref_se, atol=1e-12)
    Le = min(L, n)
    expected_cost = sum(n - k + 1 for k in range(1, Le + 1)) + 1
    assert res.n_evaluations == expected_cost == proximity_cost(n, L)
    assert res.info["window"] == Le


def test_cost_formula_default_window():
    g = random_game(12, seed=0)
    res = shapley(g, method="proximity")
    assert res.n_evaluations == 12 + 11 + 10 + 1
    assert g.n_calls == 1  # all windows in one batch


def test_exact_for_additive_games():
    w = [0.3, -0.1, 0.7, 0.0, 0.2, 0.4, 1.5]
    res = shapley(AdditiveGame(w, intercept=2.0), method="proximity", window=3)
    np.testing.assert_allclose(res.values, w, atol=1e-12)
    np.testing.assert_allclose(res.stderr, 0.0, atol=1e-12)


def test_budget_too_small_names_needed_count():
    g = random_game(10, seed=0)
    with pytest.raises(ValueError, match="28"):
        shapley(g, method="proximity", window=3, budget=27)


def test_budget_room_evaluates_empty_for_efficiency():
    g = AdditiveGame([1.0, 2.0, 3.0, 4.0], intercept=0.5)
    res = shapley(g, method="proximity", window=2, budget=proximity_cost(4, 2) + 1)
    assert res.empty == pytest.approx(0.5)
    assert res.efficiency_gap == pytest.approx(0.0, abs=1e-12)
    assert res.n_evaluations == proximity_cost(4, 2) + 1


def test_misspelled_option_raises():
    g = random_game(5)
    with pytest.raises(TypeError, match="window"):
        shapley(g, method="proximity", windw=3)
    with pytest.raises(ValueError):
        shapley(g, method="proximity", window=0)
