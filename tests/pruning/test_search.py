"""Pruning by search (``lf.prune_search``): greedy and beam removal on closed-form games (exact
answers), on tiny-model Games (compute accounting, executors, units, the cache after a kill),
held-out games, bad input and the result's serialisation."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

import layerfast as lf
from layerfast.errors import UsageError
from layerfast.estimators.games import AdditiveGame, TableGame
from layerfast.players import sublayer_players
from layerfast.pruning import prune_search
from tests.conftest import TINY_ITEMS, make_task

WEIGHTS = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2]  # increasing: p1, p5, p3, p0, p4, p2
INTERCEPT = 1.0


def additive(**kw) -> AdditiveGame:
    return AdditiveGame(WEIGHTS, intercept=INTERCEPT, **kw)


def closed_form(removed: list[int]) -> float:
    return INTERCEPT + sum(WEIGHTS) - sum(WEIGHTS[i] for i in removed)


def model_game(model, n_items=4, **kw):
    """A fresh Game (empty memo) of the tiny Llama on the first ``n_items`` tiny items."""
    kw.setdefault("utility", "logprob")  # smooth: no ties between candidates
    return lf.Game(model, make_task(TINY_ITEMS[:n_items]), progress=False, **kw)


def asked_masks(monkeypatch, game) -> list[np.ndarray]:
    """Record the player masks every call of ``game`` asks (Game.__call__ goes via loglik)."""
    seen: list[np.ndarray] = []
    original = game.loglik

    def loglik(masks):
        seen.append(game.check_masks(masks).copy())
        return original(masks)

    monkeypatch.setattr(game, "loglik", loglik)
    return seen


# --- closed-form games -------------------------------------------------------------------------
@pytest.mark.parametrize("target, k", [(0.5, 3), (4, 4), (0.1, 1)])
def test_greedy_on_additive_game_removes_lowest_weights_in_order(target, k):
    res = prune_search(additive(), target=target, n_boot=0)
    want = list(np.argsort(WEIGHTS, kind="stable")[:k])
    assert res.removed == want
    assert res.order == [f"p{i}" for i in want]
    assert len(res.utilities) == k + 1 and res.masks.shape == (k + 1, 6)
    np.testing.assert_allclose(
        res.utilities, [closed_form(want[:i]) for i in range(k + 1)], rtol=0, atol=1e-12
    )
    # each step: the candidates are the units still in, each scored by the closed form
    for i, step in enumerate(res.steps):
        left = [u for u in range(6) if u not in want[:i]]
        assert step.step == i + 1 and step.evaluated == len(left) == 6 - i
        assert step.candidates == pytest.approx(
            {f"p{u}": closed_form(want[:i] + [u]) for u in left}, abs=1e-12
        )
        assert step.removed == f"p{want[i]}"
        assert step.utility == pytest.approx(closed_form(want[: i + 1]), abs=1e-12)
    for i in range(k + 1):  # row i: the first i removed units off
        assert np.flatnonzero(~res.masks[i]).tolist() == sorted(want[:i])
    np.testing.assert_array_equal(res.keep, res.masks[-1])
    assert res.evaluations == 1 + sum(6 - i for i in range(k))  # full model + candidates
    assert res.compute is None and res.compute_naive is None  # a plain callable
    assert res.lo is None and res.hi is None  # no per-item terms


def interaction_table(n: int = 4) -> np.ndarray:
    """v over the 2^n keep-masks (bit i = player i kept): removing p0 alone is best (0.9, the
    others 0.8 each), but every pair with p0 is bad (0.3) and {p1, p2} is the best pair (0.95);
    other pairs 0.6. Larger removals: 0."""
    full = (1 << n) - 1
    table = np.zeros(1 << n)
    for c in range(1 << n):
        removed = {i for i in range(n) if not c >> i & 1}
        if not removed:
            table[c] = 1.0
        elif len(removed) == 1:
            table[c] = 0.9 if removed == {0} else 0.8
        elif len(removed) == 2:
            table[c] = 0.3 if 0 in removed else 0.95 if removed == {1, 2} else 0.6
    assert table[full] == 1.0
    return table


@pytest.mark.parametrize("n", [4, 5])
def test_beam_finds_the_pair_greedy_misses(n):
    game = TableGame(interaction_table(n))
    greedy = prune_search(game, target=2, n_boot=0)
    assert greedy.order == ["p0", "p1"]  # the best single removal, then the best of a bad lot
    for width in (2, 3):
        beam = prune_search(game, target=2, method="beam", beam_width=width, n_boot=0)
        assert beam.beam_width == width and beam.method == "beam"
        assert beam.utilities[-1] > greedy.utilities[-1]
        # brute force: the best set of two removals
        best = max(
            itertools.combinations(range(n), 2),
            key=lambda s: game(np.array([[i not in s for i in range(n)]]))[0],
        )
        assert sorted(beam.removed) == list(best) == [1, 2]
        assert beam.utilities[-1] == pytest.approx(0.95)
        # the path is a real path: step 1 removed one of the pair, and v after it is its value
        assert beam.removed[0] in best
        assert beam.utilities[1] == pytest.approx(game(beam.masks[1:2])[0])
        assert len(beam.steps[-1].beam) == width
        assert beam.steps[-1].beam[0] == beam.order


def test_ties_go_to_the_lower_index():
    flat = AdditiveGame([0.0] * 5)
    assert prune_search(flat, target=3, n_boot=0).removed == [0, 1, 2]
    tied = AdditiveGame([0.3, 0.1, 0.5, 0.1, 0.1])
    runs = [prune_search(tied, target=3, n_boot=0).removed for _ in range(2)]
    assert runs[0] == runs[1] == [1, 3, 4]
    # beam: of the tied sets {p1, p3}, {p1, p4}, {p3, p4} the lowest indices win
    beam = prune_search(tied, target=2, method="beam", beam_width=2, n_boot=0)
    assert sorted(beam.removed) == [1, 3]
    assert beam.steps[-1].beam == [["p1", "p3"], ["p1", "p4"]]


def test_nan_candidates_rank_last():
    table = TableGame(np.arange(16, dtype=float))  # v = sum of 2^i over kept players
    table.table[0b1110] = np.nan  # removing p0 (the cheapest) scores NaN
    res = prune_search(table, target=1, n_boot=0)
    assert res.order == ["p1"] and res.utilities[-1] == 0b1101


def test_keep_first_and_keep_last_protect_their_blocks():
    # 4 blocks x (attn, mlp); the lowest weights sit in blocks 0 and 3
    weights = [0.01, 0.02, 0.5, 0.6, 0.4, 0.3, 0.03, 0.04]
    game = AdditiveGame(weights, players=sublayer_players(4))
    assert prune_search(game, target=2, n_boot=0).order == ["attn0", "mlp0"]
    res = prune_search(game, target=3, keep_first=1, keep_last=1, n_boot=0)
    assert res.order == ["mlp2", "attn2", "attn1"]
    assert set(res.steps[0].candidates) == {"attn1", "mlp1", "attn2", "mlp2"}
    assert res.masks[:, [0, 1, 6, 7]].all()
    res = prune_search(game, target=2, keep_last=2, n_boot=0)
    assert res.order == ["attn0", "mlp0"]
    # blocks as units, with the first block protected
    res = prune_search(game, target=1, unit="block", keep_first=1, n_boot=0)
    assert res.names == ["block0", "block1", "block2", "block3"]
    assert res.order == ["block3"] and set(res.steps[0].candidates) == {
        "block1",
        "block2",
        "block3",
    }


def test_keep_first_on_a_model_game(tiny_llama):
    game = model_game(tiny_llama, n_items=2)
    res = prune_search(game, target=1, keep_first=1, keep_last=1, n_boot=0)
    assert res.order in (["attn1"], ["mlp1"])
    assert set(res.steps[0].candidates) == {"attn1", "mlp1"}
    assert res.masks[:, [0, 1, 4, 5]].all()


# --- tiny-model games --------------------------------------------------------------------------
def test_block_unit_on_a_sublayer_game(tiny_llama, monkeypatch):
    game = model_game(tiny_llama)
    seen = asked_masks(monkeypatch, game)
    res = prune_search(game, target=2, unit="block", n_boot=0)
    assert res.unit == "block" and res.names == ["block0", "block1", "block2"]
    assert len(res.order) == 2
    asked = np.concatenate(seen)
    # every coalition asked switches a block's two sublayers together
    assert (asked[:, 0::2] == asked[:, 1::2]).all()
    assert len(np.unique(asked, axis=0)) == 1 + 3 + 2
    for i, name in enumerate(res.order):
        b = int(name.removeprefix("block"))
        assert not res.masks[i + 1, 2 * b] and not res.masks[i + 1, 2 * b + 1]
    assert res.masks[-1].sum() == 2
    np.testing.assert_array_equal(res.utilities, game(res.masks))

    # the same search on a Game whose players are blocks: the same coalitions, the same path
    blocks = model_game(tiny_llama, unit="block")
    seen_blocks = asked_masks(monkeypatch, blocks)
    other = prune_search(blocks, target=2, n_boot=0)
    assert other.order == res.order
    np.testing.assert_array_equal(other.utilities, res.utilities)
    expanded = blocks.player_set.expand(np.concatenate(seen_blocks))
    np.testing.assert_array_equal(expanded, asked)


def test_compute_is_counted_and_prefix_sharing_saves(tiny_llama):
    # unstacked: stacking a small batch's candidates runs a group from its common prefix, which
    # for one step's single removals is depth 0 (fewer calls, not fewer token-sublayers)
    game = model_game(tiny_llama, stack_tokens=0)
    res = prune_search(game, target=3, n_boot=0)
    assert res.compute == game.compute_run == game.executor.token_sublayer_evaluations > 0
    assert res.compute < res.compute_naive
    assert res.evaluations == 1 + 6 + 5 + 4

    naive = model_game(tiny_llama, executor="naive")
    ref = prune_search(naive, target=3, n_boot=0)
    assert ref.order == res.order
    np.testing.assert_array_equal(ref.utilities, res.utilities)
    assert ref.compute == ref.compute_naive == res.compute_naive
    assert ref.compute == naive.compute_run

    # a second search on the same game: everything from the memo, nothing run
    again = prune_search(game, target=3, n_boot=0)
    assert again.compute == 0 and again.order == res.order


def test_kill_and_resume_from_the_cache(tiny_llama, tmp_path):
    path = tmp_path / "c.sqlite"
    steps = []

    def kill_at_2(step):
        steps.append(step.removed)
        if step.step == 2:
            raise KeyboardInterrupt("simulated kill")

    killed = model_game(tiny_llama, cache=path)
    with pytest.raises(KeyboardInterrupt):
        prune_search(killed, target=4, on_step=kill_at_2, n_boot=0)
    assert len(steps) == 2

    whole_game = model_game(tiny_llama)  # memory only, uninterrupted
    whole = prune_search(whole_game, target=4, n_boot=0)
    resumed_game = model_game(tiny_llama, cache=path)
    resumed = prune_search(resumed_game, target=4, n_boot=0)
    assert resumed.order == whole.order and resumed.order[:2] == steps
    np.testing.assert_array_equal(resumed.utilities, whole.utilities)
    assert 0 < resumed.compute < whole.compute
    # the killed run's coalitions (full model, steps 1 and 2) came from the cache
    assert resumed_game.n_forward == whole_game.n_forward - (1 + 6 + 5)


# --- held-out games ----------------------------------------------------------------------------
def test_eval_games_score_the_chosen_path(tiny_llama):
    game = model_game(tiny_llama)
    held = lf.Game(tiny_llama, make_task(), utility="acc", progress=False)
    res = prune_search(game, target=2, eval_games={"held": held}, n_boot=200)
    out = res.held_out["held"]
    assert out["utility"] == "acc"
    values = np.asarray(out["values"])
    np.testing.assert_allclose(values, held(res.masks), rtol=0, atol=1e-12)
    assert values[0] > 0
    np.testing.assert_allclose(out["retained"], values / values[0], rtol=0, atol=1e-12)
    assert len(out["lo"]) == len(out["retained_lo"]) == 3
    assert res.search["retained"] is None  # logprob: no chance level
    # a synthetic held-out game with the search game's players
    synth = prune_search(additive(), target=2, n_boot=0, eval_games={"a": additive(chance=0.5)})
    a = synth.held_out["a"]
    np.testing.assert_allclose(a["values"], synth.utilities, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a["retained"], synth.utilities / synth.utilities[0], atol=1e-12)
    assert a["lo"] is None


def test_eval_games_with_other_players_refused(tiny_llama):
    game = model_game(tiny_llama, n_items=2)
    blocks = model_game(tiny_llama, n_items=2, unit="block")
    with pytest.raises(UsageError, match="held-out game 'blk' has other players"):
        prune_search(game, target=1, eval_games={"blk": blocks})
    assert game.n_forward == 0 and blocks.n_forward == 0
    with pytest.raises(UsageError, match="'small'"):
        prune_search(additive(), target=1, eval_games={"small": AdditiveGame([1.0] * 5)})


# --- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(target=6), r"target=6 units would remove every unit .*6 of 6"),
        (dict(target=6.0), r"a whole count >= 1 \(an int\), got 6\.0"),
        (dict(target=1.0), r"a fraction in \(0, 1\) or a whole count >= 1 \(an int\), got 1\.0"),
        (dict(target=0.99), r"target=0\.99 of 6 units \(6\) would remove every unit"),
        (dict(target=2, keep_first=1, keep_last=1), r"target=2 .*\(2 of 6 after keep_first"),
        (dict(target=0), r"target=0 units removes nothing"),
        (dict(target=0.0), r"got 0\.0"),
        (dict(target=0.05), r"target=0\.05 of 6 units \(0\) removes nothing"),
        (dict(target=-1), r"target=-1 units removes nothing"),
        (dict(target=-0.5), r"target must be .* got -0\.5"),
        (dict(target=True), r"target must be .* got True"),
        (dict(target="0.5"), r"target must be .* got '0\.5'"),
        (dict(target=None), r"target must be .* got None"),
        (dict(keep_first=2, keep_last=1), r"keep_first=2 and keep_last=1 protect 3 blocks.*has 3"),
        (dict(keep_first=3), r"keep_first=3 .*protect 3 blocks"),
        (dict(keep_first=-1), r"keep_first must be a whole number >= 0, got -1"),
        (dict(keep_last=True), r"keep_last must be .* got True"),
        (dict(method="random"), r"unknown method 'random'"),
        (dict(method="beam", beam_width=1), r"beam_width must be .* got 1"),
        (dict(method="beam", beam_width=2.5), r"beam_width must be .* got 2\.5"),
        (dict(unit="layer"), r"unknown unit 'layer'"),
    ],
)
def test_bad_input_names_the_culprit(kwargs, match):
    game = AdditiveGame(WEIGHTS, players=sublayer_players(3))
    with pytest.raises(UsageError, match=match):
        prune_search(game, **kwargs)
    assert game.n_calls == 0  # refused before any evaluation


def test_sublayer_unit_on_a_block_game_refused(tiny_llama):
    blocks = model_game(tiny_llama, n_items=2, unit="block")
    with pytest.raises(UsageError, match="unit 'sublayer' needs a game whose players are sub"):
        prune_search(blocks, target=1, unit="sublayer")
    assert blocks.n_forward == 0
    # the same game searched by its players (or by blocks) is fine
    assert prune_search(blocks, target=1, unit="block", n_boot=0).names == [
        "block0",
        "block1",
        "block2",
    ]


# --- the result --------------------------------------------------------------------------------
def test_result_serialises_and_intervals_bracket_values(tiny_llama):
    game = model_game(tiny_llama, n_items=6, utility="acc_norm")
    held = model_game(tiny_llama, n_items=6)
    res = prune_search(
        game, target=2, method="beam", beam_width=2, eval_games={"h": held}, n_boot=300
    )
    d = json.loads(json.dumps(res.to_dict()))
    assert d["order"] == res.order and d["method"] == "beam" and d["unit"] == "sublayer"
    assert d["masks"] == res.masks.astype(int).tolist()
    assert len(d["steps"]) == 2 and d["steps"][0]["step"] == 1
    assert d["search"]["values"] == res.utilities.tolist()
    assert set(d["held_out"]) == {"h"}
    assert len(res.utilities) == 3 and res.utilities.dtype == np.float64
    for path in (res.search, res.held_out["h"]):
        lo, v, hi = (np.asarray(path[key]) for key in ("lo", "values", "hi"))
        assert lo.shape == v.shape == hi.shape == (3,)
        assert (lo <= v + 1e-12).all() and (v <= hi + 1e-12).all()
        assert (lo < hi).any()
    assert res.search["retained"] is not None  # acc_norm: an accuracy utility
    np.testing.assert_array_equal(res.lo, res.search["lo"])
    assert "beam" in repr(res) and "acc_norm" in repr(res)
    # without bootstrap: no intervals, same values
    plain = prune_search(game, target=2, method="beam", beam_width=2, n_boot=0)
    assert plain.lo is None and plain.search["retained_lo"] is None
    np.testing.assert_allclose(plain.utilities, res.utilities, rtol=0, atol=1e-12)


def test_keep_last_counts_the_models_blocks_on_a_player_subset(tiny_llama):
    """keep_last protects the model's last blocks, not the last block the players reach."""
    game = model_game(tiny_llama, players="attn0,mlp0,attn1,mlp1")  # 3-block model, blocks 0-1
    res = prune_search(game, target=2, keep_last=1, n_boot=0)  # counted on 2 blocks: refused
    assert len(res.order) == 2 and res.steps[0].evaluated == 4  # blocks 0 and 1 both eligible
    with pytest.raises(UsageError, match="protect 3 blocks, but the model has 3"):
        prune_search(game, target=1, keep_first=2, keep_last=1)


@pytest.mark.parametrize("unit", ["sublayer", "block"])
def test_pruned_model_equals_the_masked_model(tiny_llama, unit):
    import torch

    game = model_game(tiny_llama)
    res = prune_search(game, target=1, unit=unit, n_boot=0)
    hf = lf.pruned_model(game, res)
    ids = torch.tensor([[1, 5, 9, 2, 7, 3]])
    keep = game.player_set.expand(res.keep[None])[0]
    with torch.inference_mode():
        want = tiny_llama(ids, keep=keep)
        got = hf(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5, rtol=0)  # fp32; removal is exact up to sdpa
    n_layers = hf.config.num_hidden_layers
    assert n_layers == tiny_llama.n_blocks - (unit == "block")
    with pytest.raises(UsageError, match="needs the search's lf.Game"):
        lf.pruned_model(additive(), prune_search(additive(), target=1, n_boot=0))


def test_search_on_a_generative_game_follows_its_utility():
    """A generative utility (token f1 against the full model's own outputs) as the objective:
    each step removes the candidate a direct evaluation of the game ranks first."""
    from tests.evaluation.test_generative_game import game_of, random_task, tiny

    model = tiny()
    probe = game_of(model, random_task(6, seed=3))
    texts = probe.texts(probe.full_mask())
    targets = [(t if t.strip() else "x",) for t in texts]
    game = game_of(model, random_task(6, seed=3, targets=targets), utility="f1")
    res = prune_search(game, target=2, n_boot=100)
    assert res.utilities[0] == pytest.approx(1.0)
    removed: list[int] = []
    for step in res.steps:
        free = [i for i in range(game.n_players) if i not in removed]
        masks = np.ones((len(free), game.n_players), bool)
        masks[:, removed] = False
        masks[np.arange(len(free)), free] = False
        values = game(masks)
        best = free[int(np.argmax(values))]  # first maximum: the lower index
        assert step.removed == game.players[best] and step.utility == values.max()
        removed.append(best)
    assert res.compute_naive is None  # no executor to count against; compute is the game's


def test_ablation_after_a_search_runs_nothing_new(tiny_llama):
    """A search's first step is the single-sublayer ablation sweep: lf.ablate reuses it."""
    game = model_game(tiny_llama)
    prune_search(game, target=1, n_boot=0)
    ran = game.n_forward
    abl = lf.ablate(game)
    assert game.n_forward == ran and len(abl.values) == game.n_players
