"""``lf.shapley(..., budget_compute=C)``: the compute the executor actually runs never exceeds C
(counted by the executor), ``Game.cost`` prices exactly what ``loglik`` then runs, and the
methods that cannot be capped say so."""

from __future__ import annotations

import numpy as np
import pytest

import layerfast as lf
from layerfast.errors import UsageError


def fresh_game(model, task, **kw):
    return lf.Game(model, task, progress=False, batch_tokens=96, **kw)


@pytest.mark.parametrize("chunk", [3, 64])
def test_cost_prices_what_loglik_runs(tiny_llama, tiny_task, chunk):
    rng = np.random.default_rng(0)
    game = fresh_game(tiny_llama, tiny_task, chunk=chunk)
    for _ in range(3):
        masks = rng.random((7, game.n_players)) < 0.6
        predicted = game.cost(masks)
        before = game.executor.token_sublayer_evaluations
        game.loglik(masks)
        assert game.executor.token_sublayer_evaluations - before == predicted
        assert game.cost(masks) == 0  # now in memory


@pytest.mark.parametrize("method", ["permutation", "kernel"])
@pytest.mark.parametrize("fraction", [0.5, 0.8])
def test_budget_compute_is_never_exceeded(tiny_llama, tiny_task, method, fraction):
    game = fresh_game(tiny_llama, tiny_task)
    n = game.n_players
    everything = np.array([[(i >> j) & 1 for j in range(n)] for i in range(2**n)], dtype=bool)
    cap = fraction * fresh_game(tiny_llama, tiny_task).cost(everything)
    before = game.executor.token_sublayer_evaluations
    res = lf.shapley(game, method=method, budget_compute=cap, seed=1)
    ran = game.executor.token_sublayer_evaluations - before
    assert 0 < ran <= cap
    assert res.info["compute"]["run"] == ran and res.info["compute"]["priced"] == ran
    assert np.isfinite(res.values).all()
    # a larger cap buys more coalitions
    more = lf.shapley(
        fresh_game(tiny_llama, tiny_task), method=method, budget_compute=2 * cap, seed=1
    )
    assert more.n_evaluations >= res.n_evaluations


def test_budget_compute_errors(tiny_llama, tiny_task):
    game = fresh_game(tiny_llama, tiny_task)
    with pytest.raises(UsageError, match="budget_compute caps the methods.*not 'proximity'"):
        lf.shapley(game, method="proximity", budget_compute=1e6)
    with pytest.raises(UsageError, match="budget_compute=10 is too small for one sampled unit"):
        lf.shapley(game, method="permutation", budget_compute=10)
    with pytest.raises(UsageError, match="budget_compute=10 is too small for one sampled unit"):
        lf.shapley(game, method="kernel", budget_compute=10)
    with pytest.raises(UsageError, match="budget_compute must be a number > 0"):
        lf.shapley(game, method="permutation", budget_compute=0)
    from layerfast.estimators.games import AdditiveGame

    with pytest.raises(UsageError, match="price coalitions"):
        lf.shapley(AdditiveGame(np.ones(4)), method="permutation", budget_compute=10)


def test_compute_is_reported_without_a_cap(tiny_llama, tiny_task):
    game = fresh_game(tiny_llama, tiny_task)
    before = game.executor.token_sublayer_evaluations
    res = lf.shapley(game, method="proximity", window=1)
    assert res.info["compute"]["run"] == game.executor.token_sublayer_evaluations - before > 0
