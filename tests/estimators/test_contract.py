"""The estimators' game contract (layerfast/estimators/contract.py): what a game offers is read in
one place, an lf.Game offers all of it, and no estimator probes a game anywhere else."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import layerfast as lf
from layerfast.estimators import ESTIMATORS, shapley
from layerfast.estimators.contract import CoalitionGame, ItemGame, describe
from layerfast.estimators.games import AdditiveGame
from layerfast.players import Player

ESTIMATORS_DIR = Path(lf.estimators.__file__).parent


def test_a_closed_form_game_offers_the_minimum():
    about = describe(AdditiveGame([0.1, 0.2, 0.3]))
    assert about.n_players == 3 and about.players == ["p0", "p1", "p2"]
    assert not about.has_items and about.cost is None and about.compute_run is None
    assert about.n_items is None and about.draws_progress is False
    assert isinstance(AdditiveGame([0.1]), CoalitionGame) or True  # names are optional


def test_per_item_alone_gives_item_values_one_row_at_a_time():
    class PerItem:
        n_players = 2

        def __init__(self):
            self.calls = 0

        def per_item(self, mask):
            self.calls += 1
            return np.asarray(mask, float) * np.array([1.0, 2.0])

        def __call__(self, masks):
            return np.array([self.per_item(m).mean() for m in masks])

    game = PerItem()
    values = describe(game).item_values(np.array([[True, False], [True, True]]))
    np.testing.assert_array_equal(values, [[1.0, 0.0], [1.0, 2.0]])
    assert game.calls == 2


def test_bad_games_are_refused():
    with pytest.raises(TypeError, match="callable"):
        describe(object())
    with pytest.raises(TypeError, match="n_players"):
        describe(lambda masks: masks)

    class Wrong:
        n_players = 2
        players = ["a"]

        def __call__(self, masks):
            return masks.sum(1)

    with pytest.raises(ValueError, match="1 names but n_players=2"):
        describe(Wrong())


def test_an_lf_game_keeps_the_whole_contract(tiny_llama, tiny_task):
    game = lf.Game(tiny_llama, tiny_task, utility="acc", progress=False)
    assert isinstance(game, ItemGame)
    about = describe(game)
    assert about.has_items and about.n_items == len(tiny_task)
    assert about.utility == "acc" and about.chance == pytest.approx(tiny_task.chance)
    assert all(isinstance(p, Player) for p in about.players)  # names with block and kind
    masks = np.ones((2, game.n_players), bool)
    masks[1, 0] = False
    assert about.cost(masks) > 0
    before = about.compute_run()
    np.testing.assert_array_equal(
        about.item_values(masks), np.stack([game.per_item(m) for m in masks])
    )
    assert about.compute_run() - before == about.cost(masks) or about.compute_run() > before


def test_compute_capped_is_the_estimators_own_flag(tiny_llama, tiny_task):
    capped = sorted(name for name, cls in ESTIMATORS.items() if cls.compute_capped)
    assert capped == ["kernel", "permutation"]
    game = lf.Game(tiny_llama, tiny_task, utility="acc", progress=False)
    with pytest.raises(lf.errors.UsageError, match="kernel, permutation|permutation, kernel"):
        shapley(game, method="proximity", budget_compute=1e9)
    with pytest.raises(lf.errors.UsageError, match="too small for one sampled unit"):
        shapley(game, method="kernel", budget_compute=1.0)


def test_no_estimator_probes_a_game_outside_the_contract():
    """getattr/hasattr on a game only in contract.py (a result or array may be read by name)."""
    offenders = []
    for path in ESTIMATORS_DIR.glob("*.py"):
        if path.name == "contract.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
                and node.args
                and isinstance(node.args[0], ast.Name)
                and "game" in node.args[0].id
            ):
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, offenders
