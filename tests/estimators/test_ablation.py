"""Single-sublayer ablation sweep on closed-form games and on the tiny-model Game."""

from __future__ import annotations

import math

import numpy as np
import pytest

import layerfast as lf
from layerfast.estimators.ablation import ablation_masks


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
    assert lf.ablate(game, chance=0.5, margin=0.06).cornerstones == ["p0", "p1", "p2", "p3"]


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
    assert abl.chance == pytest.approx(c)
    assert abl.margin == pytest.approx(2 * math.sqrt(c * (1 - c) / m))
    assert abl.cornerstones == [
        p for p, v in zip(abl.players, abl.values) if v <= abl.chance + abl.margin
    ]
    assert abl.utility == "acc"

    # a smooth utility on the same memo: values are the logprob game's, no chance line
    smooth = lf.ablate(game.with_utility("logprob"))
    np.testing.assert_array_equal(
        smooth.values, game.with_utility("logprob")(ablation_masks(n)[1:])
    )
    assert smooth.chance is None and smooth.cornerstones == []
    assert game.n_forward == n + 1
