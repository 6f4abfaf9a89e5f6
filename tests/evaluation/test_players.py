"""Games over chosen players: a subset of sublayers (the rest kept) or whole blocks.

A sub-game's coalition is the full game's coalition with the absent players' sublayers off, so
its utilities must equal the full game's on those masks (and come from its cache), and exact
Shapley values on a block game must equal a brute-force sum over all coalitions.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import layerfast as lf
from layerfast.errors import UsageError
from layerfast.evaluation.players import choose_players


def full_masks(model, groups: list[list[int]], masks: np.ndarray) -> np.ndarray:
    """The model keep-masks of player masks, written out plainly for the test."""
    out = np.ones((len(masks), model.n_players), dtype=bool)
    for r, mask in enumerate(masks):
        for j, kept in enumerate(mask):
            if not kept:
                out[r, groups[j]] = False
    return out


@pytest.mark.parametrize(
    "players, unit, groups",
    [
        (["attn0", "mlp2", "attn1"], "sublayer", [[0], [2], [5]]),  # given out of order
        ("mlp0,attn2", "sublayer", [[1], [4]]),
        (None, "block", [[0, 1], [2, 3], [4, 5]]),
        (["block2", "block0"], "block", [[0, 1], [4, 5]]),
    ],
)
def test_sub_game_equals_the_full_game_on_the_same_masks(
    tiny_llama, tiny_task, players, unit, groups, tmp_path
):
    cache = tmp_path / "u.sqlite"
    full = lf.Game(tiny_llama, tiny_task, cache=cache, progress=False, batch_tokens=96)
    sub = lf.Game(
        tiny_llama,
        tiny_task,
        players=players,
        unit=unit,
        cache=cache,
        progress=False,
        batch_tokens=96,
    )
    assert sub.n_players == len(groups)
    masks = np.array(list(itertools.product([True, False], repeat=len(groups))))
    want_ll = full.loglik(full_masks(tiny_llama, groups, masks))
    assert sub.n_forward == 0
    assert np.array_equal(sub.loglik(masks), want_ll)
    assert sub.n_forward == 0  # served from the full game's cache
    assert np.array_equal(sub(masks), full(full_masks(tiny_llama, groups, masks)))
    assert np.array_equal(
        sub.per_item(masks[-1]), full.per_item(full_masks(tiny_llama, groups, masks[-1:])[0])
    )


def test_names_are_in_execution_order(tiny_llama):
    ps = choose_players(tiny_llama, ["mlp2", "attn0"])
    assert ps.names == ["attn0", "mlp2"] and ps.groups == [[0], [5]]
    blocks = choose_players(tiny_llama, unit="block")
    assert blocks.names == ["block0", "block1", "block2"]
    assert choose_players(tiny_llama).is_every_sublayer


def test_exact_shapley_on_a_block_game_equals_brute_force(tiny_llama, tiny_task):
    game = lf.Game(tiny_llama, tiny_task, unit="block", utility="logprob", progress=False)
    n = game.n_players
    res = lf.shapley(game, method="exact", progress=False)
    v = {s: float(game(np.array([[i in s for i in range(n)]]))[0]) for s in _subsets(n)}
    brute = np.zeros(n)
    for i in range(n):
        for s in _subsets(n):
            if i in s:
                continue
            weight = math.factorial(len(s)) * math.factorial(n - len(s) - 1) / math.factorial(n)
            brute[i] += weight * (v[s | {i}] - v[s])
    assert res.players == ["block0", "block1", "block2"]
    np.testing.assert_allclose(res.values, brute, rtol=0, atol=1e-9)
    assert abs(brute.sum() - (v[frozenset(range(n))] - v[frozenset()])) < 1e-9


def _subsets(n: int):
    for r in range(n + 1):
        for c in itertools.combinations(range(n), r):
            yield frozenset(c)


def test_player_errors(tiny_llama, tiny_task):
    with pytest.raises(UsageError, match="unknown unit 'layer'"):
        lf.Game(tiny_llama, tiny_task, unit="layer")
    with pytest.raises(UsageError, match=r"unknown player 'attn9'.*attn0\.\.mlp2"):
        lf.Game(tiny_llama, tiny_task, players=["attn9"])
    with pytest.raises(
        UsageError, match=r"unknown player 'attn0' .*unit 'block'.*block0\.\.block2"
    ):
        lf.Game(tiny_llama, tiny_task, players="attn0", unit="block")
    with pytest.raises(UsageError, match="'mlp1' is listed twice"):
        lf.Game(tiny_llama, tiny_task, players="mlp1,attn0,mlp1")
    with pytest.raises(UsageError, match="empty"):
        lf.Game(tiny_llama, tiny_task, players=" , ")
    game = lf.Game(tiny_llama, tiny_task, players="attn0,mlp0", progress=False)
    with pytest.raises(UsageError):
        game(np.ones((1, 6), dtype=bool))  # masks are over the game's 2 players


@pytest.mark.parametrize("flags", [["--unit", "block"], ["--players", "attn0,mlp1,mlp2"]])
def test_report_on_chosen_players(flags, tmp_path, model_factory, tiny_tokenizer_fixture):
    import json

    from layerfast import cli
    from tests.cli.test_cli import save_tiny_model, write_task_file

    model = save_tiny_model(tmp_path / "m", model_factory, tiny_tokenizer_fixture)
    task = write_task_file(tmp_path / "t.jsonl")
    out = tmp_path / "out"
    argv = [
        "report",
        "--model",
        model,
        "--task",
        task,
        "--out",
        out,
        "--no-progress",
        "--window",
        "2",
    ]
    assert cli.main([str(a) for a in argv + flags]) == 0
    shap = json.loads((out / "shapley.json").read_text())
    want = ["block0", "block1", "block2"] if "block" in flags else ["attn0", "mlp1", "mlp2"]
    assert shap["players"] == want
    assert shap["player_choice"] == {
        "unit": flags[1] if "block" in flags else "sublayer",
        "names": want,
    }
    abl = json.loads((out / "ablation.json").read_text())
    assert abl["players"] == want
    md = (out / "report.md").read_text()
    assert "Shapley ± total = coalition sampling and the item sample (B=200)" in md
    assert "drops ± the item sample" in md and "P(top3)" in md
    assert "Told from zero at 6 items" in md and "| items for Shapley |" in md
    assert shap["stderr_items"] and all(s is not None for s in shap["stderr_items"])
    assert (out / "report.html").is_file()
