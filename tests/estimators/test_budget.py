"""Budget accounting: no estimator asks for more than `budget` distinct coalitions, none is
evaluated twice (across or within batches), evaluations are batched, bad input raises."""

import numpy as np
import pytest

from layerfast.estimators import ESTIMATORS, BudgetedGame, BudgetExceeded, shapley
from layerfast.estimators.games import CornerstoneGame, random_game, random_unanimity_game


class CountingGame:
    """Records every coalition the estimator sends to the game."""

    def __init__(self, inner):
        self.inner = inner
        self.n_players = inner.n_players
        self.chance = getattr(inner, "chance", None)
        self.calls = 0
        self.rows = 0
        self.keys = []
        self.batch_sizes = []

    def __call__(self, masks):
        masks = np.asarray(masks)
        assert masks.dtype == np.bool_ and masks.ndim == 2 and masks.shape[1] == self.n_players
        self.calls += 1
        self.rows += masks.shape[0]
        self.batch_sizes.append(masks.shape[0])
        self.keys.extend(m.tobytes() for m in masks)
        return self.inner(masks)

    @property
    def distinct(self):
        return len(set(self.keys))


def make_game(n, kind):
    if kind == "cornerstone":
        return CornerstoneGame(n, [1, n - 2], weights=np.full(n, 0.02), base=0.3, chance=0.25)
    if kind == "table":
        g = random_game(n, seed=n)
        g.chance = 0.0
        return g
    g = random_unanimity_game(n, 20, 3, seed=n)
    g.chance = 0.1
    return g


SAMPLERS = ["permutation", "truncated", "kernel"]


@pytest.mark.filterwarnings("ignore::layerfast.errors.LayerfastWarning")  # budgets below the floor
@pytest.mark.parametrize("method", SAMPLERS)
@pytest.mark.parametrize(
    "n,kind,budget",
    [
        (3, "table", 6),
        (3, "table", 40),
        (8, "table", 37),
        (8, "cornerstone", 100),
        (16, "unanimity", 97),
        (16, "cornerstone", 500),
        (40, "unanimity", 1000),
    ],
)
def test_sampling_methods_respect_budget(method, n, kind, budget):
    cg = CountingGame(make_game(n, kind))
    est = ESTIMATORS[method]()
    if budget < est.min_budget(n):
        with pytest.raises(ValueError, match="at least"):
            shapley(cg, method=method, budget=budget)
        assert cg.calls == 0
        return
    res = shapley(cg, method=method, budget=budget, seed=1)
    assert cg.distinct <= budget
    assert cg.rows == cg.distinct, "a coalition was evaluated twice"
    assert res.n_evaluations == cg.distinct
    assert res.values.shape == (n,) and res.stderr.shape == (n,)
    if 2**n > budget and method != "truncated":
        # budget is used up to less than one unit's worth of new coalitions
        assert res.n_evaluations > budget - 2 * (n - 1) - 1


@pytest.mark.parametrize("method", ["exact", "proximity"])
@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_deterministic_methods_count(method, n):
    cg = CountingGame(make_game(n, "table"))
    res = shapley(cg, method=method, eval_empty=False)
    assert cg.rows == cg.distinct == res.n_evaluations
    if method == "exact":
        assert res.n_evaluations == 2**n
    else:
        L = min(3, n)
        assert res.n_evaluations == sum(n - k + 1 for k in range(1, L + 1)) + 1
        assert cg.calls == 1


def test_permutation_batches_many_coalitions_per_call():
    cg = CountingGame(random_unanimity_game(24, 30, 3, seed=0))
    shapley(cg, method="permutation", budget=2000, seed=0)
    assert cg.calls <= 8
    assert max(cg.batch_sizes) >= 400


def test_wrapper_dedupes_within_and_across_batches():
    cg = CountingGame(random_game(4, seed=0))
    g = BudgetedGame(cg, budget=4)
    m = np.zeros((6, 4), dtype=bool)
    m[1, 0] = m[2, 0] = m[4, 1] = True  # rows 0,3,5 empty; rows 1,2 equal
    out = g(m)
    assert cg.rows == 3 and g.n_evaluations == 3
    assert out[0] == out[3] == out[5] and out[1] == out[2]
    g(m[:2])  # all known: no call
    assert cg.calls == 1
    assert g.n_new(np.ones((3, 4), dtype=bool)) == 1
    extra = np.eye(4, dtype=bool)  # {0}, {1} known; {2}, {3} new: 3 + 2 > 4
    with pytest.raises(BudgetExceeded):
        g(extra)
    assert cg.calls == 1
    assert (
        g.fit_prefix([extra[:1], extra[1:2], extra[2:3], extra[3:]]) == 3
    )  # {0},{1} free, {2} fits


def test_shared_memo_avoids_game_calls_but_counts_budget():
    cg = CountingGame(random_game(8, seed=0))
    memo = {}
    a = shapley(cg, method="permutation", budget=60, seed=0, memo=memo)
    rows = cg.rows
    b = shapley(cg, method="permutation", budget=60, seed=0, memo=memo)
    assert cg.rows == rows  # nothing re-evaluated
    assert b.n_evaluations == a.n_evaluations
    np.testing.assert_array_equal(a.values, b.values)


@pytest.mark.parametrize("bad", [0, -5])
def test_nonpositive_budget(bad):
    with pytest.raises(ValueError, match="budget"):
        shapley(random_game(5), method="permutation", budget=bad)


def test_non_integer_budget():
    with pytest.raises(TypeError):
        shapley(random_game(5), method="kernel", budget=12.5)


def test_unknown_method_lists_estimators():
    with pytest.raises(ValueError) as e:
        shapley(random_game(3), method="montecarlo")
    for name in ESTIMATORS:
        assert name in str(e.value)


@pytest.mark.parametrize(
    "method,opts,valid",
    [
        ("permutation", {"chunks": 3}, "chunk"),
        ("truncated", {"tolerence": 0.1}, "tolerance"),
        ("kernel", {"max_pair": 3}, "max_pairs"),
        ("exact", {"batchsize": 3}, "batch_size"),
        ("proximity", {"windw": 3}, "window"),
    ],
)
def test_misspelled_options(method, opts, valid):
    with pytest.raises(TypeError, match=valid):
        shapley(random_game(4), method=method, **opts)


def test_bad_option_values():
    g = random_game(4)
    g.chance = 0.0
    with pytest.raises(ValueError):
        shapley(g, method="truncated", tolerance=-1)
    with pytest.raises(ValueError):
        shapley(g, method="permutation", chunk=0)


def test_game_validation():
    class NoN:
        def __call__(self, m):
            return np.zeros(len(m))

    with pytest.raises(TypeError, match="n_players"):
        shapley(NoN())

    class Wrong:
        n_players = 3

        def __call__(self, m):
            return np.zeros(len(m) + 1)

    with pytest.raises(ValueError, match="returned"):
        shapley(Wrong(), method="exact")
