"""The exact estimator against an independent brute-force Shapley over subsets."""

import math

import numpy as np
import pytest

from layerfast.estimators import ESTIMATORS, shapley
from layerfast.estimators.games import CornerstoneGame, GloveGame, WeightedVotingGame, random_game


def brute_force_subsets(game):
    """phi_i = sum_{S not containing i} |S|!(n-|S|-1)!/n! (v(S+i) - v(S)), one S at a time."""
    n = game.n_players
    phi = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for r in range(n):
            w = math.factorial(r) * math.factorial(n - r - 1) / math.factorial(n)
            for bits in range(1 << (n - 1)):
                S = [others[k] for k in range(n - 1) if bits >> k & 1]
                if len(S) != r:
                    continue
                m = np.zeros((2, n), dtype=bool)
                m[:, S] = True
                m[1, i] = True
                v = game(m)
                phi[i] += w * (v[1] - v[0])
    return phi


@pytest.mark.parametrize(
    "game",
    [
        random_game(7, seed=1),
        WeightedVotingGame([3, 3, 2, 1, 1, 1], 6),
        GloveGame([0, 1], 5),
        CornerstoneGame(6, [0], weights=[0, 0.1, 0.2, 0.0, 0.05, 0.1]),
    ],
)
def test_exact_matches_brute_force(game):
    res = shapley(game, method="exact")
    np.testing.assert_allclose(res.values, brute_force_subsets(game), atol=1e-12)
    n = game.n_players
    assert res.n_evaluations == 2**n
    assert np.all(np.isnan(res.stderr))
    assert res.efficiency_gap == pytest.approx(0.0, abs=1e-12)
    lo, hi = res.ci()
    np.testing.assert_array_equal(lo, res.values)
    np.testing.assert_array_equal(hi, res.values)


def test_exact_is_batched():
    g = random_game(10, seed=2)
    res = shapley(g, method="exact", batch_size=256)
    assert g.n_calls == 1024 // 256
    assert res.info["n_game_calls"] == 4


def test_exact_refuses_too_many_players():
    class Big:
        n_players = ESTIMATORS["exact"].MAX_PLAYERS + 1

        def __call__(self, masks):  # pragma: no cover - must not be called
            raise AssertionError("exact must refuse before evaluating")

    with pytest.raises(ValueError, match="n <= 20"):
        shapley(Big(), method="exact")


def test_exact_budget_too_small():
    with pytest.raises(ValueError, match="at least 64"):
        shapley(random_game(6), method="exact", budget=63)
