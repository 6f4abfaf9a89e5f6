"""The bootstrap over items (issue 17, part 4): stderr_items, stderr_total, ci(which=...),
rank_stability, and the ablation sweep's item intervals.

References are plain: an item-additive game (u_i(S) = sum_j w_ij [j in S]) has Shapley value
mean_i w_ij and item-level standard error std_i(w_ij) / sqrt(n_items); resamples are compared
with explicit re-indexing of the items; the coverage test draws fresh item samples from a
population whose Shapley values are known in closed form.
"""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pytest

import layerfast as lf
from layerfast.errors import UsageError
from layerfast.estimators import ShapleyResult, shapley
from layerfast.estimators.ablation import ablation_masks, cornerstone_tests
from layerfast.estimators.bootstrap import (
    ItemTerms,
    ReweightedGames,
    index_weights,
    resample_indices,
)
from layerfast.estimators.games import AdditiveGame


class ItemAdditiveGame:
    """u_i(S) = sum_j w_ij [j in S] (+ optional unanimity terms b_it * [T_t subseteq S]);
    v(S) = mean_i u_i(S). Counts per_item calls."""

    def __init__(self, w, unanimity=(), b=None):
        self.w = np.asarray(w, dtype=np.float64)  # [n_items, n]
        self.n_players = self.w.shape[1]
        self.sets = [list(t) for t in unanimity]
        self.b = np.zeros((self.w.shape[0], 0)) if b is None else np.asarray(b, np.float64)
        self.n_per_item = 0

    def terms(self, masks):
        masks = np.asarray(masks, dtype=bool).reshape(-1, self.n_players)
        out = masks.astype(np.float64) @ self.w.T  # [m, n_items]
        for t, T in enumerate(self.sets):
            out += masks[:, T].all(axis=1)[:, None] * self.b[None, :, t]
        return out

    def per_item(self, mask, utility=None):
        self.n_per_item += 1
        return self.terms(mask)[0]

    def __call__(self, masks):
        return self.terms(masks).mean(axis=1)


def analytic_se(x):
    """Standard error of the item mean, per column of float [n_items, n]."""
    return x.std(axis=0, ddof=1) / math.sqrt(x.shape[0])


# --- stderr_items against the analytic item-level error ----------------------------------------
@pytest.mark.parametrize("method,budget", [("exact", None), ("permutation", 200), ("kernel", 200)])
def test_stderr_items_matches_analytic_se(method, budget):
    rng = np.random.default_rng(7)
    n_items, n = 150, 6
    w = rng.normal(size=(n_items, n)) * rng.uniform(0.5, 3.0, n) + rng.normal(size=n)
    game = ItemAdditiveGame(w)
    res = shapley(game, method=method, budget=budget, seed=3, item_bootstrap=400)
    np.testing.assert_allclose(res.values, w.mean(axis=0), atol=1e-9)
    ratio = res.stderr_items / analytic_se(w)
    assert np.all(np.abs(ratio - 1) < 0.15), ratio
    assert res.info["item_bootstrap"]["replicates"] == 400
    assert res.info["item_bootstrap"]["n_items"] == n_items
    assert res.item_replicates.shape == (400, n)


def test_replicates_are_the_estimator_on_explicitly_resampled_items():
    # the bootstrap's replicate b equals the exact Shapley value of the game on the items drawn
    # by resample b (explicit re-indexing, no weights), for a non-additive game
    rng = np.random.default_rng(1)
    n_items, n = 40, 5
    w, b = rng.normal(size=(n_items, n)), rng.normal(size=(n_items, 2))
    game = ItemAdditiveGame(w, unanimity=[(0, 1, 2), (3, 4)], b=b)
    res = shapley(game, method="exact", item_bootstrap=5, seed=11)
    item_rng = np.random.default_rng(np.random.default_rng(11).integers(2**63))
    idx = resample_indices(n_items, 5, item_rng)
    for r in range(5):
        sub = ItemAdditiveGame(w[idx[r]], unanimity=[(0, 1, 2), (3, 4)], b=b[idx[r]])
        np.testing.assert_allclose(
            res.item_replicates[r], shapley(sub, method="exact").values, atol=1e-12
        )


def test_reweighted_games_equal_resampled_means_and_fetch_once():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(30, 4))
    game = ItemAdditiveGame(w, unanimity=[(0, 3)], b=rng.normal(size=(30, 1)))
    idx = resample_indices(30, 8, np.random.default_rng(0))
    weights = index_weights(idx, 30)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    games = ReweightedGames(ItemTerms(game), weights, ["a", "b", "c", "d"])
    masks = rng.random((10, 4)) < 0.5
    masks = np.concatenate([masks, masks[:3]])  # repeated coalitions are fetched once
    got = games.values(masks)
    want = np.stack([game.terms(masks)[:, idx[r]].mean(axis=1) for r in range(8)], axis=1)
    np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_allclose(games.replicate(5)(masks), want[:, 5], atol=1e-12)
    assert game.n_per_item == len({m.tobytes() for m in masks})


def test_deterministic_same_coalitions_and_generator_seed():
    rng = np.random.default_rng(4)
    game = ItemAdditiveGame(rng.normal(size=(50, 8)), [(0, 1), (2, 5, 7)], rng.normal(size=(50, 2)))
    a = shapley(game, method="permutation", budget=120, seed=9, item_bootstrap=20)
    b = shapley(game, method="permutation", budget=120, seed=9, item_bootstrap=20)
    c = shapley(
        game, method="permutation", budget=120, seed=np.random.default_rng(9), item_bootstrap=20
    )
    np.testing.assert_array_equal(a.stderr_items, b.stderr_items)
    np.testing.assert_array_equal(a.item_replicates, c.item_replicates)
    np.testing.assert_array_equal(a.values, c.values)
    # a non-adaptive estimator: the replicates use exactly the main run's coalitions
    assert a.info["item_bootstrap"]["n_coalitions"] == a.n_evaluations
    d = shapley(game, method="permutation", budget=120, seed=10, item_bootstrap=20)
    assert not np.array_equal(a.stderr_items, d.stderr_items)
    # off by default; the main estimate does not depend on the bootstrap
    off = shapley(game, method="permutation", budget=120, seed=9)
    np.testing.assert_array_equal(off.values, a.values)
    assert np.isnan(off.stderr_items).all()
    np.testing.assert_array_equal(off.stderr_total, off.stderr)


@pytest.mark.parametrize("bad", [-1, 1, 2.5, True, "200"])
def test_item_bootstrap_value_errors(bad):
    with pytest.raises(UsageError, match="item_bootstrap"):
        shapley(AdditiveGame([1.0, 2.0]), method="exact", item_bootstrap=bad)


def test_game_without_per_item_gets_nan_and_a_note():
    res = shapley(AdditiveGame([1.0, 2.0, 3.0]), method="permutation", budget=40, item_bootstrap=50)
    assert np.isnan(res.stderr_items).all()
    assert "per_item" in res.info["item_bootstrap"]["note"]
    np.testing.assert_array_equal(res.stderr_total, res.stderr)
    with pytest.raises(UsageError, match="item_bootstrap"):
        res.rank_stability(1)
    json.dumps(res.to_dict(), allow_nan=False)


# --- coverage of stderr_total across item samples and seeds ------------------------------------
UNANIMITY = [(0, 1, 2), (3, 4), (1, 5, 6, 7)]
MU_W = np.array([0.3, -0.2, 0.5, 0.1, 0.0, 0.4, -0.3, 0.2])
MU_B = np.array([1.0, -0.8, 1.2])


def population_shapley():
    phi = MU_W.copy()
    for T, mb in zip(UNANIMITY, MU_B):
        phi[list(T)] += mb / len(T)
    return phi


def test_stderr_total_covers_the_population_value():
    """Each seed draws a fresh sample of 60 items from a population whose Shapley value is known
    and runs permutation sampling on it: the error against the population value has an item part
    and a coalition part. |error| <= 3 * stderr_total must hold in >= 90% of the (seed, player)
    cells, and RMS(error) / RMS(stderr_total) must lie in [0.6, 1.6]; the coalition stderr alone
    (which ignores the item sample) must be visibly too small, so the test can fail."""
    truth = population_shapley()
    errs, total, coal = [], [], []
    for seed in range(30):
        rng = np.random.default_rng(1000 + seed)
        w = MU_W + rng.normal(size=(60, 8)) * 1.0
        b = MU_B + rng.normal(size=(60, 3)) * 1.0
        game = ItemAdditiveGame(w, UNANIMITY, b)
        res = shapley(game, method="permutation", budget=150, seed=seed, item_bootstrap=100)
        errs.append(res.values - truth)
        total.append(res.stderr_total)
        coal.append(res.stderr)
        lo, hi = res.ci(0.95)
        z = NormalDist().inv_cdf(0.975)
        np.testing.assert_allclose(hi - lo, 2 * z * res.stderr_total)
    errs, total, coal = np.array(errs), np.array(total), np.array(coal)
    assert np.all(np.isfinite(total)) and np.all(total >= coal)
    covered = np.abs(errs) <= 3 * total
    assert covered.mean() >= 0.90, f"coverage {covered.mean():.3f}"
    rms = np.sqrt(np.mean(errs**2))
    ratio = rms / np.sqrt(np.mean(total**2))
    assert 0.6 <= ratio <= 1.6, f"RMS(error)/RMS(stderr_total) = {ratio:.2f}"
    assert rms / np.sqrt(np.mean(coal**2)) > 1.6  # coalition error alone understates the error


# --- ShapleyResult: ci(which), stderr_total, JSON, rank_stability -------------------------------
def make_result(method="permutation", stderr=(0.3, np.nan, 0.0), items=(0.4, 0.2, np.nan)):
    info = {"exact": True} if method == "exact" else {}
    return ShapleyResult(
        values=[1.0, 2.0, 3.0],
        stderr=stderr,
        n_evaluations=8,
        method=method,
        players=["a", "b", "c"],
        full=6.0,
        info=info,
        stderr_items=items,
    )


def test_stderr_total_and_ci_which():
    res = make_result()
    np.testing.assert_allclose(res.stderr_total, [0.5, np.nan, 0.0])
    z = NormalDist().inv_cdf(0.95)
    for which, se in [
        ("total", [0.5, np.nan, 0.0]),
        ("coalitions", [0.3, np.nan, 0.0]),
        ("items", [0.4, 0.2, np.nan]),
    ]:
        lo, hi = res.ci(0.9, which=which)
        np.testing.assert_allclose(lo, res.values - z * np.array(se), err_msg=which)
        np.testing.assert_allclose(hi, res.values + z * np.array(se), err_msg=which)
    np.testing.assert_array_equal(res.ci(0.9)[0], res.ci(0.9, "total")[0])
    with pytest.raises(UsageError, match="which"):
        res.ci(0.95, which="item")
    with pytest.raises(UsageError, match="level"):
        res.ci(1.0, which="items")


def test_exact_total_is_the_item_error():
    res = make_result("exact", stderr=[np.nan] * 3, items=(0.4, 0.2, np.nan))
    np.testing.assert_allclose(res.stderr_total, [0.4, 0.2, 0.0])
    lo, hi = res.ci(which="coalitions")
    np.testing.assert_array_equal(lo, res.values)  # exact: no coalition error
    np.testing.assert_array_equal(hi, res.values)
    rng = np.random.default_rng(0)
    w = rng.normal(size=(40, 4))
    ex = shapley(ItemAdditiveGame(w), method="exact", item_bootstrap=30)
    np.testing.assert_array_equal(ex.stderr_total, ex.stderr_items)


def test_to_dict_round_trip_and_table():
    rng = np.random.default_rng(3)
    game = ItemAdditiveGame(rng.normal(size=(40, 5)) + np.arange(5))
    res = shapley(game, method="permutation", budget=60, seed=1, item_bootstrap=30)
    text = json.dumps(res.to_dict(), allow_nan=False)
    back = ShapleyResult.from_dict(json.loads(text))
    np.testing.assert_allclose(back.stderr_items, res.stderr_items)
    np.testing.assert_allclose(back.stderr_total, res.stderr_total)
    for k in (1, 3):
        np.testing.assert_array_equal(back.rank_stability(k), res.rank_stability(k))
    assert "items" in res.table() and "total" in res.table()
    old = res.to_dict()
    for key in ("stderr_items", "stderr_total", "item_rank_counts"):
        old.pop(key)
    legacy = ShapleyResult.from_dict(old)  # a file written before the item bootstrap
    assert np.isnan(legacy.stderr_items).all() and legacy.item_rank_counts is None
    assert "items" not in legacy.table()


def test_rank_stability():
    rng = np.random.default_rng(5)
    n_items, n = 80, 6
    w = rng.normal(size=(n_items, n)) * 0.5
    w[:, 4] += 10.0  # obviously the most important player
    w[:, 1] += 0.05  # close to others: unstable ranks
    res = shapley(ItemAdditiveGame(w), method="exact", item_bootstrap=200, seed=2)
    reps = res.item_replicates
    for k in range(1, n + 1):
        s = res.rank_stability(k)
        assert s.shape == (n,) and np.all((s >= 0) & (s <= 1))
        assert s.sum() == pytest.approx(k)
        top = np.argsort(-reps, axis=1, kind="stable")[:, :k]  # plain reference
        want = np.array([(top == j).any(axis=1).mean() for j in range(n)])
        np.testing.assert_allclose(s, want)
    assert res.rank_stability(1)[4] == 1.0
    assert np.all(res.rank_stability(n) == 1.0)
    assert np.all(np.diff(np.stack([res.rank_stability(k) for k in range(1, n + 1)]), axis=0) >= 0)
    assert 0 < res.rank_stability(2)[1] < 1
    for bad in (0, n + 1, 1.5, True):
        with pytest.raises(UsageError, match="k must"):
            res.rank_stability(bad)


# --- ablate: item intervals and cornerstone frequencies -----------------------------------------
class ItemAblationGame:
    """Per-item 0/1 outcomes of the full model and each single removal."""

    def __init__(self, full, removed, chance=0.25):
        self.rows = np.vstack([full, removed]).astype(np.float64)  # [n + 1, n_items]
        self.n_players = len(removed)
        self.chance = chance

    def per_item(self, mask, utility=None):
        off = np.flatnonzero(~np.asarray(mask, bool).reshape(-1))
        return self.rows[0 if len(off) == 0 else 1 + int(off[0])].copy()

    def __call__(self, masks):
        return np.array([self.per_item(m).mean() for m in np.asarray(masks, bool)])


def test_ablate_bootstrap_against_explicit_resamples():
    rng = np.random.default_rng(8)
    n_items = 120
    full = (rng.random(n_items) < 0.9).astype(float)
    removed = [
        (rng.random(n_items) < 0.25).astype(float),  # back at chance: a cornerstone
        full.copy(),  # no effect
        np.where(rng.random(n_items) < 0.2, 0.0, full),  # a moderate drop
    ]
    game = ItemAblationGame(full, removed)
    abl = lf.ablate(game, item_bootstrap=300, seed=4)
    idx = resample_indices(n_items, 300, np.random.default_rng(4))
    terms = game.rows
    ref_values = np.stack([terms[1:, i].mean(axis=1) for i in idx])  # [B, n]
    ref_full = np.array([terms[0, i].mean() for i in idx])
    np.testing.assert_allclose(abl.boot_values, ref_values, atol=1e-12)
    np.testing.assert_allclose(abl.stderr_items, ref_values.std(axis=0, ddof=1), atol=1e-12)
    ref_drops = ref_full[:, None] - ref_values
    np.testing.assert_allclose(abl.drop_stderr_items, ref_drops.std(axis=0, ddof=1), atol=1e-12)
    lo, hi = abl.ci(0.9, "drops")
    np.testing.assert_allclose(lo, np.quantile(ref_drops, 0.05, axis=0))
    np.testing.assert_allclose(hi, np.quantile(ref_drops, 0.95, axis=0))
    # analytic: SE of a mean of per-item values / paired differences
    for got, x in [
        (abl.stderr_items, terms[1:].T),
        (abl.drop_stderr_items[[0, 2]], (terms[0] - terms[1:][[0, 2]]).T),
    ]:
        assert np.all(np.abs(got / analytic_se(x) - 1) < 0.15)
    assert abl.drop_stderr_items[1] == 0.0  # identical outcomes: the paired drop never moves
    # cornerstone frequency: recount with the tests on the explicitly resampled items
    want = np.zeros(3)
    for i in idx:
        t = cornerstone_tests(terms[:, i], 0.25)
        if t["p_full"] <= 0.05:
            want += (t["p_above"] > 0.05) & (t["p_drop"] <= 0.05)
    np.testing.assert_allclose(abl.cornerstone_frequency, want / 300)
    assert abl.cornerstones == ["p0"] and abl.cornerstone_frequency[0] > 0.9
    assert abl.cornerstone_frequency[1] == 0.0
    s1 = abl.rank_stability(1)
    assert s1.sum() == pytest.approx(1.0) and s1[0] == 1.0
    # the p-values are unchanged by the bootstrap
    plain = lf.ablate(game, item_bootstrap=0)
    np.testing.assert_array_equal(plain.p_drop, abl.p_drop)
    assert plain.boot_values is None and np.isnan(plain.stderr_items).all()
    assert np.isnan(plain.ci()[0]).all() and plain.to_dict()["item_bootstrap"] == 0
    with pytest.raises(UsageError, match="which"):
        abl.ci(which="drop")
    with pytest.raises(UsageError, match="item_bootstrap"):
        lf.ablate(game, item_bootstrap=1)


def test_ablate_without_per_item_notes_it():
    g = AdditiveGame([0.5, 0.2, 0.1], intercept=0.25)
    g.chance = 0.25
    abl = lf.ablate(g)
    assert abl.boot_values is None and "per_item" in abl.info["item_bootstrap_note"]
    assert abl.cornerstone_frequency is None


def test_tiny_model_game_intervals(tiny_llama, tiny_task):
    game = lf.Game(tiny_llama, tiny_task, utility="acc", progress=False)
    n = tiny_llama.n_players
    abl = lf.ablate(game, item_bootstrap=100, seed=0)
    assert game.n_forward == n + 1  # the bootstrap evaluates nothing new
    terms = np.stack([game.per_item(m) for m in ablation_masks(n)])
    idx = resample_indices(terms.shape[1], 100, np.random.default_rng(0))
    ref = np.stack([terms[1:, i].mean(axis=1) for i in idx])
    np.testing.assert_allclose(abl.boot_values, ref, atol=1e-12)
    lo, hi = abl.ci(0.95, "drops")
    assert np.all(lo <= hi) and np.all(np.isfinite(abl.drop_stderr_items))
    freq = abl.cornerstone_frequency
    assert freq.shape == (n,) and np.all((freq >= 0) & (freq <= 1))
    d = abl.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["item_bootstrap"] == 100 and len(d["drops_ci95"][0]) == n
    row = abl.rows()[0]
    assert {"drop_se_items", "drop_ci95_low", "cornerstone_frequency"} <= set(row)

    # Shapley with the item bootstrap on the real Game: served from the memo
    res0 = shapley(game, method="permutation", budget=30, seed=1)
    forward = game.n_forward
    res = shapley(game, method="permutation", budget=30, seed=1, item_bootstrap=50)
    assert game.n_forward == forward
    np.testing.assert_array_equal(res.values, res0.values)
    assert np.all(np.isfinite(res.stderr_items)) and np.all(res.stderr_items >= 0)
    np.testing.assert_allclose(
        res.stderr_total, np.sqrt(res.stderr**2 + res.stderr_items**2), equal_nan=True
    )


def test_report_files_and_table_columns(tmp_path):
    import csv

    from layerfast.report import files, tables

    rng = np.random.default_rng(6)
    game = ItemAdditiveGame(rng.normal(size=(30, 3)))
    game.players = ["attn0", "mlp0", "attn1"]
    res = shapley(game, method="permutation", budget=30, seed=0, item_bootstrap=20)
    files.save_shapley(tmp_path, res, {"model": "m", "task": "t"})
    with open(tmp_path / "shapley.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    np.testing.assert_allclose([float(r["stderr_items"]) for r in rows], res.stderr_items)
    np.testing.assert_allclose([float(r["stderr_total"]) for r in rows], res.stderr_total)
    data = json.loads((tmp_path / "shapley.json").read_text())
    np.testing.assert_allclose(data["stderr_total"], res.stderr_total)

    full = (rng.random(40) < 0.9).astype(float)
    abl = lf.ablate(ItemAblationGame(full, [full, full * 0, full]), item_bootstrap=20)
    text = tables.ablation_table(abl)
    assert "± items" in text.splitlines()[0]
    assert f"{abl.drop_stderr_items[1]:8.3f}" in text.splitlines()[3]
    plain = lf.ablate(ItemAblationGame(full, [full]), item_bootstrap=0)
    assert "± items" not in tables.ablation_table(plain)
