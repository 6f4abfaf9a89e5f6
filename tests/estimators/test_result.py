"""ShapleyResult, rank agreement, convergence records and plots, progress bars, edge cases."""

import json
import math

import numpy as np
import pytest

from layerfast.estimators import ESTIMATORS, ShapleyResult, shapley
from layerfast.estimators.convergence import convergence
from layerfast.estimators.games import (
    AdditiveGame,
    CornerstoneGame,
    random_game,
    random_unanimity_game,
)
from layerfast.estimators.ranks import ablation_scores, kendall, rank_order, spearman, top_k_overlap
from layerfast.report.plots import plot_convergence


def test_to_dict_is_json_and_round_trips():
    g = AdditiveGame([1.0, 2.0, 3.0])
    g.players = ["attn0", "mlp0", "attn1"]
    res = shapley(g, method="proximity", window=2)  # empty not evaluated -> NaN fields
    d = res.to_dict()
    text = json.dumps(d, allow_nan=False)  # strict JSON: NaN must have become null
    back = ShapleyResult.from_dict(json.loads(text))
    assert back.players == ["attn0", "mlp0", "attn1"]
    np.testing.assert_array_equal(back.values, res.values)
    assert math.isnan(back.empty) and d["efficiency_gap"] is None
    assert back.method == "proximity" and back.n_evaluations == res.n_evaluations
    assert res.ranking() == ["attn1", "mlp0", "attn0"]
    assert "attn1" in res.table()


def test_ci_uses_normal_quantile():
    res = ShapleyResult(
        values=[1.0, 2.0],
        stderr=[0.5, np.nan],
        n_evaluations=3,
        method="permutation",
        players=["a", "b"],
        full=3.0,
    )
    lo, hi = res.ci(0.95)
    assert lo[0] == pytest.approx(1.0 - 1.959964 * 0.5, rel=1e-6)
    assert hi[0] == pytest.approx(1.0 + 1.959964 * 0.5, rel=1e-6)
    assert math.isnan(lo[1]) and math.isnan(hi[1])
    with pytest.raises(ValueError):
        res.ci(1.5)


def test_players_default_and_custom():
    g = random_game(3)
    assert shapley(g, method="exact").players == ["p0", "p1", "p2"]


@pytest.mark.parametrize("method", sorted(ESTIMATORS))
def test_single_player_game(method):
    g = AdditiveGame([0.7], intercept=0.1)
    g.chance = 0.1
    res = shapley(g, method=method, budget=None if method in ("exact", "proximity") else 10)
    assert res.values[0] == pytest.approx(0.7)


@pytest.mark.parametrize("method", ["exact", "permutation", "kernel", "truncated"])
def test_additive_game_recovered(method):
    w = np.array([0.05, 0.2, -0.1, 0.0, 0.3, 0.15])
    g = AdditiveGame(w, intercept=0.25)
    g.chance = -5.0  # never reached: no truncation
    res = shapley(g, method=method, budget=64 if method == "exact" else 60, seed=0)
    np.testing.assert_allclose(res.values, w, atol=1e-9)


def test_spearman_kendall_hand_values():
    a, b = [1, 2, 3, 4], [1, 2, 4, 3]
    rho, p = spearman(a, b)
    assert rho == pytest.approx(1 - 6 * 2 / (4 * 15))  # = 0.8
    assert 0 < p < 1
    tau, _ = kendall(a, b)
    assert tau == pytest.approx((5 - 1) / 6)


def test_rank_ties():
    a, b = [1, 1, 2, 3], [1, 2, 3, 4]
    rho, _ = spearman(a, b)
    ra = np.array([1.5, 1.5, 3, 4])
    rb = np.array([1, 2, 3, 4])
    assert rho == pytest.approx(np.corrcoef(ra, rb)[0, 1])
    tau, _ = kendall(a, b)  # tau-b: 5 concordant, 0 discordant, one tie in a
    assert tau == pytest.approx(5 / math.sqrt(5 * 6))
    assert all(math.isnan(x) for x in spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError):
        spearman([1, 2], [1, 2, 3])


def test_ablation_scores_and_proximity_window1():
    class Abl:
        full = 0.8
        values = np.array([0.5, 0.8, 0.25])

    np.testing.assert_allclose(ablation_scores(0.8, [0.5, 0.8, 0.25]), [0.3, 0.0, 0.55])
    np.testing.assert_allclose(ablation_scores(Abl()), [0.3, 0.0, 0.55])
    # proximity with window 1 is exactly the ablation drop
    g = random_game(6, seed=3)
    res = shapley(g, method="proximity", window=1)
    n = 6
    m = np.ones((n + 1, n), dtype=bool)
    m[np.arange(1, n + 1), np.arange(n)] = False
    v = g(m)
    np.testing.assert_allclose(res.values, ablation_scores(v[0], v[1:]))


def test_rank_order_and_overlap():
    assert rank_order([0.1, 0.5, 0.3], ["a", "b", "c"]) == ["b", "c", "a"]
    assert top_k_overlap([3, 2, 1, 0], [3, 1, 2, 0], 2) == 0.5


def test_rankings_of_estimators_agree_on_cornerstone_game():
    g = CornerstoneGame(10, [2, 7], weights=np.linspace(0.0, 0.09, 10), base=0.3, chance=0.25)
    truth = g.shapley_values()
    res = shapley(g, method="kernel", budget=400, seed=0)
    rho, _ = spearman(res, truth)
    assert rho > 0.9


def test_convergence_records_and_memo_reuse(tmp_path):
    g = random_unanimity_game(12, 20, 3, seed=1)
    budgets = [100, 200, 400]
    recs = convergence(g, "permutation", budgets, seed=5)
    assert [r["budget"] for r in recs] == budgets
    for r in recs:
        assert r["n_evaluations"] <= r["budget"]
        assert r["values"].shape == (12,) and r["stderr"].shape == (12,)
    # same seed: a bigger run re-walks the smaller run's permutations first -> reuse
    assert recs[1]["n_new_evaluations"] < recs[1]["n_evaluations"]
    # each record equals an independent run at that budget
    ind = shapley(g, method="permutation", budget=200, seed=5)
    np.testing.assert_array_equal(ind.values, recs[1]["values"])
    path = plot_convergence(recs, tmp_path / "conv.png", players=["p0", 3])
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_progress_bar_runs(capsys):
    pytest.importorskip("tqdm")
    res = shapley(random_game(8), method="permutation", budget=100, progress=True)
    assert res.n_evaluations <= 100


def test_eval_empty_modes():
    g = random_game(6, seed=2)
    res = shapley(g, method="proximity", eval_empty=True)  # no budget given: one extra allowed
    assert math.isfinite(res.empty) and res.n_evaluations == 6 + 5 + 4 + 1 + 1
    res = shapley(g, method="proximity", budget=16, eval_empty=False)
    assert math.isnan(res.empty) and res.n_evaluations == 16
    with pytest.raises(ValueError, match="eval_empty"):
        shapley(g, method="proximity", budget=16, eval_empty=True)


def test_estimator_classes_usable_directly():
    g = random_game(6, seed=9)
    res = ESTIMATORS["exact"]().estimate(g, None, np.random.default_rng(0))
    np.testing.assert_allclose(res.values, g.shapley_values(), atol=1e-12)
    res = ESTIMATORS["permutation"](chunk=2).estimate(g, 40, 0)
    assert res.n_evaluations <= 40 and res.method == "permutation"
