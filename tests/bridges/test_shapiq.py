"""shapiq interop: shapiq's approximator and ours on the same synthetic game (via the wrapper)
both land near the exact values; the wrappers pass raw (un-normalised) values."""

import numpy as np
import pytest

from layerfast.estimators import shapley
from layerfast.estimators.games import CornerstoneGame, random_unanimity_game

shapiq = pytest.importorskip("shapiq")

from layerfast.bridges.shapiq import from_shapiq_game, to_shapiq_game  # noqa: E402


def test_wrapper_returns_raw_values():
    g = CornerstoneGame(6, [1], weights=np.full(6, 0.05), base=0.3, chance=0.25)
    sg = to_shapiq_game(g)
    assert isinstance(sg, shapiq.Game) and sg.n_players == 6
    m = np.array([[True] * 6, [False] * 6])
    np.testing.assert_allclose(sg(m), g(m))  # v(empty) = 0.25, not centred to 0
    back = from_shapiq_game(sg)
    assert back.n_players == 6
    np.testing.assert_allclose(back(m), g(m))


def test_shapiq_and_ours_agree_with_exact():
    g = random_unanimity_game(10, n_terms=15, max_order=3, seed=4)
    truth = g.shapley_values()
    sg = to_shapiq_game(g)

    approx = shapiq.PermutationSamplingSV(n=10, random_state=0)
    iv = approx.approximate(3000, sg)
    theirs = np.array([iv[(i,)] for i in range(10)])
    ours = shapley(g, method="permutation", budget=900, seed=0)
    scale = np.abs(truth).max()
    assert np.abs(theirs - truth).max() < 0.15 * scale
    assert np.abs(ours.values - truth).max() < 0.15 * scale

    # our estimator on the round-tripped game gives the same result as on the original
    again = shapley(from_shapiq_game(sg), method="permutation", budget=900, seed=0)
    np.testing.assert_allclose(again.values, ours.values)

    # shapiq's exact computer on the wrapped game agrees with the closed form
    exact = shapiq.ExactComputer(n_players=10, game=sg)
    sv = exact("SV")
    np.testing.assert_allclose([sv[(i,)] for i in range(10)], truth, atol=1e-9)
