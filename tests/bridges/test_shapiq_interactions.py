"""shapiq's pairwise interaction approximators through the bridge
(:func:`layerfast.bridges.shapiq.shapiq_interactions`) agree with our exact SII on a small
closed-form game: exactly at a budget of all 2^n coalitions, roughly below it."""

import numpy as np
import pytest

from layerfast.errors import UsageError
from layerfast.estimators.games import random_unanimity_game
from layerfast.estimators.interaction_index import interactions

pytest.importorskip("shapiq")

from layerfast.bridges.shapiq import shapiq_interactions  # noqa: E402


@pytest.mark.filterwarnings("ignore")
def test_shapiq_interactions_agree_with_exact():
    game = random_unanimity_game(6, n_terms=12, max_order=3, seed=1)
    exact = interactions(game).values
    for name in ("exact", "SHAPIQ", "SVARMIQ", "KernelSHAPIQ"):
        theirs = shapiq_interactions(game, name, budget=64, seed=0)
        np.testing.assert_allclose(theirs, exact, atol=1e-6, equal_nan=True, err_msg=name)
    assert np.isnan(np.diag(theirs)).all()
    # SII and k-SII coincide at the top order
    np.testing.assert_allclose(
        shapiq_interactions(game, "exact", index="SII"), exact, atol=1e-9, equal_nan=True
    )
    sampled = shapiq_interactions(game, "KernelSHAPIQ", budget=40, seed=0)
    scale = np.nanmax(np.abs(exact))
    assert np.nanmax(np.abs(sampled - exact)) < scale


def test_unknown_approximator():
    game = random_unanimity_game(4, seed=0)
    with pytest.raises(UsageError, match="KernelSHAPIQ"):
        shapiq_interactions(game, "KernelSHAPIQQ")
    with pytest.raises(UsageError, match="k-SII"):
        shapiq_interactions(game, "exact", index="STII")
