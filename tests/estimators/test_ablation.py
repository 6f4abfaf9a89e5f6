"""Single-sublayer ablation sweep on closed-form games and on the tiny-model Game."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.stats import binom

import layerfast as lf
from layerfast.errors import UsageError
from layerfast.estimators.ablation import ablation_masks, holm
from layerfast.report import tables


def synthetic(fn, n, chance=None, players=None):
    """A plain function game with the attributes ablate reads; records the masks it was given."""
    calls = []

    def game(masks):
        masks = np.asarray(masks, dtype=bool)
        assert masks.shape[1] == n
        calls.append(masks.copy())
        return np.array([fn(row) for row in masks], dtype=float)

    game.n_players = n
    if chance is not None:
        game.chance = chance
    if players is not None:
        game.players = players
    game.calls = calls
    return game


def test_cornerstone_closed_form():
    # utility = chance if player 3 is off, else 0.9 minus 0.01 per other player switched off
    players = [f"p{i}" for i in range(8)]
    game = synthetic(
        lambda keep: 0.25 if not keep[3] else 0.9 - 0.01 * np.sum(~keep),
        n=8,
        chance=0.25,
        players=players,
    )
    abl = lf.ablate(game)
    assert len(game.calls) == 1  # one batched call
    assert abl.players == players
    assert abl.full == pytest.approx(0.9)
    expected = [0.89, 0.89, 0.89, 0.25, 0.89, 0.89, 0.89, 0.89]
    np.testing.assert_allclose(abl.values, expected, atol=1e-12)
    np.testing.assert_allclose(abl.drops, 0.9 - np.array(expected), atol=1e-12)
    assert abl.chance == 0.25 and abl.margin == 0.0  # no task, so no item count for a margin
    assert abl.cornerstones == ["p3"]
    d = abl.to_dict()
    assert d["cornerstones"] == ["p3"] and d["full"] == pytest.approx(0.9)
    assert [r["cornerstone"] for r in abl.rows()] == [p == "p3" for p in players]


def test_additive_game_masks_and_values():
    w = np.array([0.5, -0.25, 2.0, 0.0, 1.5])
    game = synthetic(lambda keep: float(w @ keep), n=5)
    abl = lf.ablate(game)
    (masks,) = game.calls
    # the sweep asks for N and every N \ {l}, nothing else
    rows = {"".join("1" if b else "0" for b in r) for r in masks}
    assert rows == {"11111", "01111", "10111", "11011", "11101", "11110"}
    assert abl.full == pytest.approx(w.sum())
    np.testing.assert_allclose(abl.values, w.sum() - w)
    np.testing.assert_allclose(abl.drops, w)
    # no chance level: no cornerstones; default player names
    assert abl.chance is None and abl.cornerstones == []
    assert abl.players == [f"p{i}" for i in range(5)]


def test_explicit_chance_and_margin():
    game = synthetic(lambda keep: 0.55 - 0.1 * (not keep[0]) - 0.3 * (not keep[2]), n=4, chance=0.5)
    # v(N \ {0}) = 0.45, v(N \ {2}) = 0.25, others 0.55
    assert lf.ablate(game).cornerstones == ["p0", "p2"]  # at or below chance
    assert lf.ablate(game, chance=0.2).cornerstones == []  # chance overrides game.chance
    assert lf.ablate(game, chance=0.2, margin=0.06).cornerstones == ["p2"]
    # the full model (0.55) is itself within chance + margin (0.56): nothing is flagged
    within = lf.ablate(game, chance=0.5, margin=0.06)
    assert within.cornerstones == [] and within.status == "not enough items to tell"
    assert "not enough items to tell" in within.to_dict()["cornerstone_note"]
    with pytest.raises(UsageError, match="margin"):
        lf.ablate(game, margin=-0.1)


def test_tiny_model_game(tiny_llama, tiny_task):
    game = lf.Game(tiny_llama, tiny_task, utility="acc", progress=False)
    abl = lf.ablate(game)
    n = tiny_llama.n_players
    assert abl.players == tiny_llama.players
    full = np.ones((1, n), bool)
    assert abl.full == game(full)[0]
    for l in range(n):
        mask = np.ones((1, n), bool)
        mask[0, l] = False
        assert abl.values[l] == game(mask)[0], tiny_llama.players[l]
    assert game.n_forward == n + 1  # the checks above were served from the memo
    c, m = tiny_task.chance, len(tiny_task)
    assert abl.chance == pytest.approx(c) and abl.margin == 0.0 and abl.tested
    assert abl.info["n_items"] == m
    # the per-item tests see the Game's own per-item correctness
    k_full = round(abl.full * m)
    assert abl.p_full == pytest.approx(binom.sf(k_full - 1, m, c))
    if abl.p_full > 0.05:  # 6 items: a full model this close to chance cannot support a claim
        assert abl.cornerstones == [] and abl.status == "not enough items to tell"
    assert abl.utility == "acc"

    # a smooth utility on the same memo: values are the logprob game's, no chance line
    smooth = lf.ablate(game.with_utility("logprob"))
    np.testing.assert_array_equal(
        smooth.values, game.with_utility("logprob")(ablation_masks(n)[1:])
    )
    assert smooth.chance is None and smooth.cornerstones == []
    assert game.n_forward == n + 1


# --- cornerstones as a statistical claim (issue 13, item 5) --------------------------------------
class ItemGame:
    """A game with per-item 0/1 outcomes: ``outcomes[key]`` is float [n_items] for the full model
    ("full") and for each single removal (player index); v is their mean. No model, no task."""

    def __init__(self, full, removed, chance=0.25):
        self.outcomes = {"full": np.asarray(full, float)}
        self.outcomes.update({l: np.asarray(r, float) for l, r in enumerate(removed)})
        self.n_players = len(removed)
        self.n_items = len(full)  # the estimators' contract: a Game's item count
        self.chance = chance
        self.utility = "acc"

    def per_item(self, mask, utility=None):
        off = np.flatnonzero(~np.asarray(mask, bool).reshape(-1))
        assert len(off) <= 1, "ablate asks only for N and N minus one player"
        return self.outcomes["full" if len(off) == 0 else int(off[0])].copy()

    def __call__(self, masks):
        return np.array([self.per_item(m).mean() for m in np.asarray(masks, bool)])


def items(n, correct):
    """0/1 float [n]: the items listed in ``correct`` (indices) are right."""
    x = np.zeros(n)
    x[list(correct)] = 1.0
    return x


def test_ten_items_small_drop_is_not_a_cornerstone():
    # 10 items: full 0.6, a removal at 0.5 (4-way chance 0.25). The old rule (margin
    # 2*sqrt(.25*.75/10) = 0.27) called 0.5 "chance"; one lost item is no evidence of anything.
    full = items(10, range(6))
    game = ItemGame(full, [items(10, range(5)), full, full])
    abl = lf.ablate(game)
    assert abl.cornerstones == []
    np.testing.assert_allclose(abl.values, [0.5, 0.6, 0.6])
    assert abl.full == pytest.approx(0.6) and abl.chance == 0.25
    assert abl.status == "tested"  # 6/10 at chance 0.25: binomial p = 0.0197
    assert abl.p_full == pytest.approx(binom.sf(5, 10, 0.25))
    assert abl.p_above[0] == pytest.approx(binom.sf(4, 10, 0.25))  # 0.078: "at chance"
    assert abl.p_drop[0] > 0.05  # but one discordant item: McNemar p = 0.5
    assert abl.cornerstones == []
    assert [r["cornerstone"] for r in abl.rows()] == [False] * 3


def test_full_model_within_margin_flags_nothing():
    # 10 items, full 0.4: within the old margin of chance, and every removal (<= 0.4) was
    # flagged. Not significantly above chance (p = 0.22): nothing can be said.
    full = items(10, range(4))
    removed = [items(10, range(k)) for k in (0, 1, 4, 2)]
    abl = lf.ablate(ItemGame(full, removed))
    assert abl.cornerstones == []
    assert abl.p_full == pytest.approx(binom.sf(3, 10, 0.25)) and abl.p_full > 0.05
    assert abl.status == "not enough items to tell"
    d = abl.to_dict()
    assert d["cornerstones"] == [] and d["cornerstone_status"] == "not enough items to tell"
    assert d["cornerstone_note"].startswith("not enough items to tell")
    assert "10 items" in d["cornerstone_note"]
    # what the CLI prints and report.md says
    assert tables.cornerstone_summary(abl).startswith("cornerstones: not enough items to tell: ")
    meta = {"model": "m", "task": "t", "n_items": 10, "dtype": "float32"}
    meta["environment"] = {"machine": "x", "date": "today"}
    res = SimpleNamespace(method="proximity", info={}, n_evaluations=1, efficiency_gap=0.0)
    res.values, res.stderr = np.zeros(4), np.zeros(4)
    md = tables.markdown_summary(meta, abl, res, 1.0)
    assert "cornerstones (removal drops the utility to chance): not enough items to tell" in md


def test_clear_cornerstone_with_many_items():
    # 200 items, full 0.8; removing p1 gives 0.25 (the chance level), removing p0 gives 0.78
    n = 200
    full = items(n, range(160))
    abl = lf.ablate(ItemGame(full, [items(n, range(156)), items(n, range(50)), full]))
    assert abl.status == "tested" and abl.p_full < 1e-50
    assert abl.p_above[1] > 0.05 and abl.p_drop[1] < 1e-30
    assert abl.cornerstones == ["p1"]
    assert abl.info["tests"]["drop"] == "exact McNemar, one-sided, Holm over 3 players"
    d = abl.to_dict()
    assert d["cornerstones"] == ["p1"] and len(d["p_drop"]) == 3 and d["alpha"] == 0.05
    assert [r["cornerstone"] for r in abl.rows()] == [False, True, False]


def test_paired_design_decides():
    # Same marginal accuracies (full 20/40, removal 12/40, chance 0.25), so any rule that only sees
    # the two values (the old margin rule, an unpaired two-sample test) gives one answer for both.
    # Paired: removal A only loses 8 items (McNemar p = 2^-8); removal B loses 14 and gains 6
    # (p = 0.058): only A is a significant drop.
    n = 40
    full = items(n, range(20))
    only_loses = items(n, range(12))
    churns = items(n, list(range(6)) + list(range(20, 26)))
    abl = lf.ablate(ItemGame(full, [only_loses, churns]))
    assert abl.cornerstones == ["p0"]
    np.testing.assert_allclose(abl.values, [0.3, 0.3])
    np.testing.assert_allclose(abl.p_above, binom.sf(11, n, 0.25))  # same for both, > 0.05
    assert abl.p_drop[0] == pytest.approx(2 * 0.5**8)  # Holm over two players
    assert abl.p_drop[1] == pytest.approx(binom.sf(13, 20, 0.5))
    assert abl.cornerstones == ["p0"]


def test_holm_and_margin_in_the_tests():
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03, 0.5])), [0.04, 0.09, 0.09, 0.5])
    # with margin 0.1 the at-chance level is 0.35: a removal at 0.34 on 200 items counts
    n = 200
    full = items(n, range(160))
    game = ItemGame(full, [items(n, range(68)), full])
    assert lf.ablate(game).cornerstones == []  # 0.34 is significantly above 0.25
    abl = lf.ablate(game, margin=0.1)
    assert abl.margin == 0.1 and abl.cornerstones == ["p0"]
    assert abl.p_above[0] == pytest.approx(binom.sf(67, n, 0.35))


def test_smooth_terms_with_a_given_chance():
    # non-0/1 per-item terms (a smooth utility given chance=): t-tests for the levels, sign test
    rng = np.random.default_rng(0)
    n = 100
    full = 1.0 + 0.1 * rng.standard_normal(n)
    game = ItemGame(full, [0.1 * rng.standard_normal(n), full - 0.05])
    game.chance = None
    assert lf.ablate(game).status == "no chance level" and lf.ablate(game).cornerstones == []
    abl = lf.ablate(game, chance=0.0)
    assert abl.tested and "t-test" in abl.info["tests"]["full"]
    assert abl.cornerstones == ["p0"]  # p1 stays far above 0
