"""Every Shapley estimator on a real-model ``lf.Game`` (a tiny random Llama, 6 players).

The synthetic-game tests check the estimators' mathematics; these check that they run on the
real Game end to end: forward passes are never repeated, budgets hold, stderr has the documented
NaN pattern, exact is efficient, and proximity is the formula of its docstring.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import layerfast as lf
from layerfast.estimators import ESTIMATORS, shapley

N = 6
UTILITIES = ["margin", "acc_norm"]

# method -> (budget, options); small budgets, all above each method's minimum for n = 6
SETTINGS = {
    "exact": (None, {}),  # 2^6 = 64 coalitions
    "proximity": (None, {"window": 2}),  # 6 + 5 + 1 = 12 coalitions
    "permutation": (30, {}),
    "truncated": (30, {"tolerance": 0.05}),  # acc_norm walks truncate at 1/3 (chance 0.36)
    "kernel": (30, {}),
    "kernel_ht": (30, {}),
}


@pytest.fixture(scope="module")
def llama(model_factory, tiny_tokenizer_fixture):
    """The tiny random Llama with its weights (not norms) scaled up 30x.

    At the default init scale every choice gets nearly the same log-prob, acc_norm is the same
    for every coalition and all Shapley values are 0; scaled up, coalitions differ.
    """
    model = model_factory(tiny_tokenizer_fixture, 0)
    with torch.no_grad():
        for name, p in model.hf_model.named_parameters():
            if "norm" not in name:
                p.mul_(30.0)
    return model


def test_settings_cover_every_estimator():
    assert set(SETTINGS) == set(ESTIMATORS)


def make_game(model, task, utility):
    return lf.Game(model, task, utility=utility, progress=False)


def record_forwards(monkeypatch, game):
    """Masks the executor actually runs for ``game`` ('0'/'1' strings, in order)."""
    ran = []
    original = game.executor.loglik_many

    def loglik_many(masks, tick=None, **kw):
        ran.extend("".join("1" if b else "0" for b in keep) for keep in masks)
        return original(masks, tick=tick, **kw)

    monkeypatch.setattr(game.executor, "loglik_many", loglik_many)
    return ran


def record_asked(monkeypatch):
    """Every coalition row the estimators pass to ``Game.__call__`` (over all calls)."""
    asked = []
    original = lf.Game.__call__

    def call(self, masks):
        arr = np.asarray(masks, dtype=bool)
        asked.extend("".join("1" if b else "0" for b in row) for row in arr.reshape(-1, N))
        return original(self, masks)

    monkeypatch.setattr(lf.Game, "__call__", call)
    return asked


def expected_nan(res) -> np.ndarray:
    """Where stderr must be NaN, from each estimator's documented rule."""
    if res.method == "exact":
        return np.ones(N, bool)  # no sampling error
    if res.method == "proximity":
        return np.asarray(res.info["n_terms"]) < 2  # spread of one term is undefined
    if res.method == "kernel_ht":  # a sampled size stratum with a single pair has no variance
        single = [s["taken"] < 2 and not s["enumerated"] for s in res.info["strata"]]
        return np.full(N, any(single))
    n_units = {"permutation": "n_pairs", "kernel": "n_pairs", "truncated": "n_units"}[res.method]
    return np.full(N, res.info[n_units] < 2)  # fewer than two i.i.d. units


@pytest.mark.parametrize("utility", UTILITIES)
@pytest.mark.parametrize("method", sorted(ESTIMATORS))
def test_estimator_on_real_game(method, utility, llama, tiny_task, monkeypatch):
    assert llama.n_players == N <= 20  # exact is affordable
    game = make_game(llama, tiny_task, utility)
    ran = record_forwards(monkeypatch, game)
    asked = record_asked(monkeypatch)
    budget, options = SETTINGS[method]
    if method == "truncated" and game.chance is None:
        options = {**options, "chance": 0.0}  # margin of a uniform guess is 0

    res = shapley(game, method=method, budget=budget, seed=0, **options)

    assert res.method == method and res.players == game.players
    assert res.values.shape == res.stderr.shape == (N,)
    assert np.isfinite(res.values).all()
    assert np.abs(res.values).max() > 1e-3  # a non-trivial game
    np.testing.assert_array_equal(np.isnan(res.stderr), expected_nan(res))
    assert (res.stderr[~np.isnan(res.stderr)] >= 0).all()
    assert 1 <= res.n_evaluations <= res.info["budget"]
    if budget is not None:
        assert res.info["budget"] == budget
    # no coalition is asked of the game or run by the executor twice
    assert len(asked) == len(set(asked))
    assert len(ran) == len(set(ran))
    assert sorted(ran) == sorted(asked)
    assert game.n_forward == len(ran) == res.info["n_game_evaluations"] == res.n_evaluations
    assert res.full == pytest.approx(game(game.full_mask())[0], abs=1e-12)
    assert game.n_forward == len(ran)  # that check was served from the memo


@pytest.mark.parametrize("utility", UTILITIES)
def test_exact_is_efficient_and_matches_brute_force(utility, llama, tiny_task):
    game = make_game(llama, tiny_task, utility)
    res = shapley(game, method="exact")
    assert res.n_evaluations == game.n_forward == 2**N
    full, empty = game(np.array([[True] * N, [False] * N]))
    assert (res.full, res.empty) == (full, empty)
    assert abs(res.efficiency_gap) < 1e-9
    assert abs(res.values.sum() - (full - empty)) < 1e-9
    # phi_i = mean over all orders of v(P_i + i) - v(P_i), from direct game calls
    table = {}
    masks = np.array(list(itertools.product([False, True], repeat=N)))
    for mask, v in zip(masks, game(masks)):
        table[mask.tobytes()] = v
    phi = np.zeros(N)
    for order in itertools.permutations(range(N)):
        cur = np.zeros(N, bool)
        for p in order:
            before = table[cur.tobytes()]
            cur[p] = True
            phi[p] += table[cur.tobytes()] - before
    np.testing.assert_allclose(res.values, phi / math.factorial(N), atol=1e-12)
    assert game.n_forward == 2**N


@pytest.mark.parametrize("method", ["permutation", "kernel"])
def test_sampling_estimators_are_efficient_on_real_game(method, llama, tiny_task):
    # permutations telescope; kernel solves under the efficiency constraint
    res = shapley(make_game(llama, tiny_task, "margin"), method=method, budget=30, seed=1)
    assert math.isfinite(res.empty)
    assert abs(res.efficiency_gap) < 1e-9


def proximity_by_hand(game, window):
    """The proximity estimator's docstring, recomputed from direct game(masks) calls."""
    n = game.n_players

    def v_without(start, length):
        mask = np.ones(n, bool)
        mask[start : start + length] = False
        return game(mask[None])[0]

    values, stderr = np.zeros(n), np.full(n, np.nan)
    for l in range(n):
        terms = [v_without(l, 0) - v_without(l, 1)]
        for k in range(2, window + 1):
            if l + k <= n:  # window [l, l+k): l at its left end
                terms.append(v_without(l + 1, k - 1) - v_without(l, k))
            if l - k + 1 >= 0:  # window [l-k+1, l+1): l at its right end
                terms.append(v_without(l - k + 1, k - 1) - v_without(l - k + 1, k))
        values[l] = np.mean(terms)
        if len(terms) > 1:
            stderr[l] = np.std(terms, ddof=1) / math.sqrt(len(terms))
    return values, stderr


@pytest.mark.parametrize("utility", UTILITIES)
@pytest.mark.parametrize("window", [1, 2, 3, N])
def test_proximity_is_the_formula(window, utility, llama, tiny_task):
    res = shapley(make_game(llama, tiny_task, utility), method="proximity", window=window)
    cost = sum(N - k + 1 for k in range(1, window + 1)) + 1
    assert res.n_evaluations == cost
    values, stderr = proximity_by_hand(make_game(llama, tiny_task, utility), window)
    np.testing.assert_allclose(res.values, values, atol=1e-12)
    np.testing.assert_allclose(res.stderr, stderr, atol=1e-12)  # NaN where they agree
    if window == 1:  # the single-ablation drops
        abl = lf.ablate(make_game(llama, tiny_task, utility))
        np.testing.assert_allclose(res.values, abl.drops, atol=1e-12)


def test_lf_shapley_is_the_function_after_importing_the_subpackage():
    code = (
        "import layerfast.estimators\nimport layerfast as lf\n"
        "assert callable(lf.shapley), type(lf.shapley)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
