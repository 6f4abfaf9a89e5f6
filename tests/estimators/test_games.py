"""Closed forms of the synthetic games against a brute-force Shapley over all permutations.

The brute force below is written here, independently of layerfast.estimators (it does not use
the exact estimator): phi_i = mean over all n! orders of v(pred_i + i) - v(pred_i).
"""

import itertools
import math

import numpy as np
import pytest

from layerfast.estimators.games import (
    AdditiveGame,
    CornerstoneGame,
    GloveGame,
    UnanimityGame,
    WeightedVotingGame,
    random_game,
    random_unanimity_game,
)


def brute_force_permutations(game):
    n = game.n_players
    phi = np.zeros(n)
    for order in itertools.permutations(range(n)):
        masks = np.zeros((n + 1, n), dtype=bool)
        for k, p in enumerate(order):
            masks[k + 1] = masks[k]
            masks[k + 1, p] = True
        v = np.asarray(game(masks), dtype=float)
        for k, p in enumerate(order):
            phi[p] += v[k + 1] - v[k]
    return phi / math.factorial(n)


GAMES = [
    ("additive", lambda: AdditiveGame([0.5, -1.0, 2.0, 0.0, 3.0], intercept=1.0)),
    ("voting", lambda: WeightedVotingGame([4, 3, 2, 2, 1, 1], quota=7)),
    ("voting_veto", lambda: WeightedVotingGame([5, 1, 1, 1], quota=6)),
    ("glove_unbalanced", lambda: GloveGame(left=[0, 3], n_players=6)),
    ("glove_balanced", lambda: GloveGame(left=[1, 2, 5], n_players=6)),
    (
        "cornerstone",
        lambda: CornerstoneGame(7, [2, 5], weights=np.linspace(0.0, 0.06, 7), base=0.4),
    ),
    (
        "unanimity",
        lambda: UnanimityGame(5, {(0, 1): 1.0, (2,): -0.5, (1, 3, 4): 2.0}, intercept=0.3),
    ),
    ("random_unanimity", lambda: random_unanimity_game(6, n_terms=12, max_order=4, seed=3)),
    ("random_table", lambda: random_game(6, seed=7)),
    ("random_monotone", lambda: random_game(6, seed=8, monotone=True)),
]


@pytest.mark.parametrize("name,make", GAMES, ids=[g[0] for g in GAMES])
def test_closed_form_matches_brute_force(name, make):
    game = make()
    np.testing.assert_allclose(game.shapley_values(), brute_force_permutations(game), atol=1e-12)


def test_known_textbook_values():
    # glove game with one left glove and two right gloves: the left holder gets 2/3
    g = GloveGame(left=[0], n_players=3)
    np.testing.assert_allclose(g.shapley_values(), [2 / 3, 1 / 6, 1 / 6])
    # veto player 0 with quota 6 of weights [5,1,1,1]: coalitions need 0 and one other
    v = WeightedVotingGame([5, 1, 1, 1], quota=6)
    np.testing.assert_allclose(v.shapley_values(), [3 / 4, 1 / 12, 1 / 12, 1 / 12])
    # cornerstone: removing a cornerstone drops the value to chance
    c = CornerstoneGame(4, [1], weights=[0.1, 0, 0.1, 0.1], base=0.3, chance=0.25)
    full = np.ones((1, 4), dtype=bool)
    drop = full.copy()
    drop[0, 1] = False
    assert c(drop)[0] == pytest.approx(0.25)
    assert c(full)[0] == pytest.approx(0.25 + 0.3 + 0.3)


def test_game_interface():
    g = random_game(4, seed=0)
    assert g.n_players == 4 and len(g.players) == 4
    out = g(np.ones((3, 4), dtype=bool))
    assert out.shape == (3,) and out.dtype == np.float64
    with pytest.raises(ValueError):
        g(np.ones((2, 5), dtype=bool))
