"""Stop when settled (``shapley(..., target_stderr=, until=)``, estimators/stopping.py): the rule
never exceeds its maximum budget, stops earlier on an easy game than on a hard one, says why it
stopped, and refuses bad options."""

from __future__ import annotations

import numpy as np
import pytest

from layerfast.errors import UsageError
from layerfast.estimators import shapley
from layerfast.estimators.games import AdditiveGame, UnanimityGame, random_game
from layerfast.estimators.stopping import topk_probability


class Counting:
    """Wraps a game; records every distinct coalition it is asked for."""

    def __init__(self, game):
        self.game = game
        self.n_players = game.n_players
        self.players = [f"p{i}" for i in range(self.n_players)]
        self.seen: set[bytes] = set()

    def __call__(self, masks):
        masks = np.asarray(masks, dtype=bool)
        self.seen.update(np.packbits(m).tobytes() for m in masks)
        return self.game(masks)


class ItemGame:
    """v(S) = mean over items of a_item . s + noise-free pair terms; per_item gives the terms."""

    def __init__(self, n=6, n_items=40, spread=1.0, seed=0):
        rng = np.random.default_rng(seed)
        self.n_players = n
        self.players = [f"p{i}" for i in range(n)]
        self.n_items = n_items
        self.a = rng.normal(1.0, spread, size=(n_items, n))
        self.b = rng.normal(0.0, 0.3, size=(n, n))

    def per_item(self, mask):
        s = np.asarray(mask, dtype=np.float64)
        return self.a @ s + s @ np.triu(self.b, 1) @ s

    def __call__(self, masks):
        return np.array([self.per_item(m).mean() for m in np.asarray(masks, dtype=bool)])


def interacting(n: int, scale: float, seed: int = 0) -> UnanimityGame:
    """Linear part 1..n plus 4-player interactions of size ``scale`` (hard when large)."""
    rng = np.random.default_rng(seed)
    div = {(i,): float(i + 1) for i in range(n)}
    for _ in range(3 * n):
        T = tuple(sorted(rng.choice(n, 4, replace=False).tolist()))
        div[T] = div.get(T, 0.0) + scale * float(rng.normal())
    return UnanimityGame(n, div)


@pytest.mark.parametrize("method", ["kernel_ht", "kernel", "permutation"])
@pytest.mark.parametrize("maximum", [40, 97, 300, 700])
def test_never_exceeds_the_maximum_budget(method, maximum):
    for seed in range(3):
        game = Counting(random_game(10, seed=seed))
        memo: dict = {}
        res = shapley(game, method, budget=maximum, seed=seed, target_stderr=1e-9, memo=memo)
        stop = res.info["stop"]
        assert len(game.seen) <= maximum, (method, maximum, len(game.seen))
        assert stop["coalitions_evaluated"] == len(memo) == len(game.seen)
        assert stop["reason"] == "budget" and "maximum budget" in stop["message"]
        budgets = [s["budget"] for s in stop["steps"]]
        assert budgets == sorted(budgets) and len(set(budgets)) == len(budgets)


def test_kernel_ht_steps_reuse_every_coalition():
    game = Counting(random_game(10, seed=1))
    res = shapley(game, "kernel_ht", budget=700, seed=0, target_stderr=1e-9)
    steps = res.info["stop"]["steps"]
    # nested samples: after each step the coalitions evaluated are those of that step alone
    assert [s["coalitions_evaluated"] for s in steps] == [s["budget"] for s in steps]
    assert steps[-1]["budget"] <= 700 and len(game.seen) == steps[-1]["budget"]


@pytest.mark.parametrize("method", ["kernel_ht", "permutation"])
def test_stops_earlier_on_an_easy_game(method):
    easy = shapley(interacting(10, 0.01), method, budget=4000, seed=0, target_stderr=0.05)
    hard = shapley(interacting(10, 1.0), method, budget=4000, seed=0, target_stderr=0.05)
    ne, nh = (r.info["stop"]["coalitions_evaluated"] for r in (easy, hard))
    assert easy.info["stop"]["reason"] == "target_stderr"
    assert np.max(easy.stderr) <= 0.05
    assert ne < nh, (ne, nh)


def test_additive_game_settles_at_the_first_step():
    res = shapley(AdditiveGame(np.arange(8.0)), "kernel_ht", target_stderr=1e-6, seed=3)
    assert len(res.info["stop"]["steps"]) == 1 and res.info["stop"]["reason"] == "target_stderr"
    np.testing.assert_allclose(res.values, np.arange(8.0), atol=1e-9)


def test_until_topk_on_separated_and_tied_games():
    sep = shapley(interacting(9, 0.05, seed=2), "kernel_ht", budget=512, until="top3", seed=0)
    stop = sep.info["stop"]
    assert stop["reason"] == "until" and stop["steps"][-1]["p_top3"] >= 0.95
    assert set(np.argsort(-sep.values)[:3]) == {6, 7, 8}
    # players 2 and 3 have the same value (5.2) and sit at the top-2 boundary: never settled
    w = np.array([0.0, 0.1, 5.0, 5.0, 9.0, 0.2])
    div = {(0, 1, 2, 5): 0.8, (0, 1, 3, 4): 0.8, (1, 2, 3, 5): -0.5}
    tied = UnanimityGame(6, {**{(i,): w[i] for i in range(6)}, **div})
    assert tied.shapley_values()[2] == tied.shapley_values()[3]
    res = shapley(tied, "kernel_ht", budget=60, until="top2", seed=0)
    assert res.info["stop"]["reason"] == "budget"
    assert res.info["stop"]["steps"][-1]["p_top2"] < 0.95


def test_both_rules_must_hold():
    res = shapley(
        interacting(8, 0.3), "kernel_ht", budget=200, target_stderr=1e-9, until="top2", seed=0
    )
    assert res.info["stop"]["reason"] == "budget"
    assert "stderr" in res.info["stop"]["message"] and "P(top2)" not in res.info["stop"]["message"]


def test_item_error_above_target_stops_at_once():
    game = ItemGame(spread=2.0)
    res = shapley(game, "kernel_ht", budget=64, target_stderr=0.01, item_bootstrap=30, seed=0)
    stop = res.info["stop"]
    assert stop["reason"] == "items" and len(stop["steps"]) == 1
    assert np.max(res.stderr_items) > 0.01 and "more items" in stop["message"]


def test_item_error_counts_in_the_target():
    game = ItemGame(spread=0.05, n_items=400)
    res = shapley(game, "kernel_ht", budget=64, target_stderr=0.5, item_bootstrap=30, seed=0)
    assert res.info["stop"]["reason"] == "target_stderr"
    assert np.all(res.stderr_total <= 0.5) and np.all(np.isfinite(res.stderr_items))


def test_user_memo_entries_are_free():
    game = random_game(8, seed=4)
    memo: dict = {}
    shapley(game, "kernel_ht", budget=100, seed=0, memo=memo)
    before = len(memo)
    res = shapley(game, "kernel_ht", budget=100, seed=0, target_stderr=1e-9, memo=memo)
    assert before > 0 and res.info["stop"]["coalitions_evaluated"] <= 100


def test_generator_seed_gives_nested_steps():
    game = Counting(random_game(10, seed=5))
    rng = np.random.default_rng(7)
    res = shapley(game, "kernel_ht", budget=300, seed=rng, target_stderr=1e-9)
    steps = res.info["stop"]["steps"]
    assert [s["coalitions_evaluated"] for s in steps] == [s["budget"] for s in steps]


def test_topk_probability():
    rng = np.random.default_rng(0)
    v = np.array([3.0, 2.0, 1.0, 0.0])
    assert topk_probability(v, np.eye(4) * 1e-6, 2, rng) == 1.0
    p = topk_probability(np.array([1.0, 1.0, 0.0]), np.eye(3) * 0.01, 1, rng)
    assert 0.4 < p < 0.6
    assert np.isnan(topk_probability(v, np.full((4, 4), np.nan), 2, rng))


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"method": "exact", "target_stderr": 0.1}, "sampling method"),
        ({"method": "proximity", "until": "top2"}, "sampling method"),
        ({"target_stderr": 0}, "target_stderr"),
        ({"target_stderr": -1.0}, "target_stderr"),
        ({"target_stderr": "0.1"}, "target_stderr"),
        ({"until": "top0"}, "until"),
        ({"until": "top8"}, "number of players"),
        ({"until": "best3"}, "until"),
        ({"until": "top2", "confidence": 1.0}, "confidence"),
        ({"until": "top2", "confidence": 0}, "confidence"),
        ({"target_stderr": 0.1, "budget": 5}, "first step"),
        ({"target_stderr": 0.1, "budget_compute": 1e6}, "budget_compute"),
    ],
)
def test_bad_options_raise(kw, match):
    kw = {"method": "kernel_ht", **kw}
    with pytest.raises(UsageError, match=match):
        shapley(random_game(8, seed=0), **kw)
