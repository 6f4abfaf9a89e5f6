"""SublayerModel's player/block bookkeeping: players_of, block_of, block_mask (range errors
included) and step's use of them; the forward loop itself is tested in test_adapters.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import layerfast as lf
from layerfast.errors import UsageError
from layerfast.models import PLAYER_KINDS, SublayerModel
from tests.helpers.tiny_models import tiny_model

_MODEL: list[SublayerModel] = []


def model() -> SublayerModel:
    """A tiny 3-block Llama, built once; tests must not modify it."""
    if not _MODEL:
        _MODEL.append(lf.load(tiny_model("llama")))
    return _MODEL[0]


def test_player_kinds_are_attn_then_mlp():
    assert PLAYER_KINDS == SublayerModel.PLAYER_KINDS == ("attn", "mlp")


def test_players_of_and_block_of_are_inverse():
    sm = model()
    seen = []
    for block in range(sm.n_blocks):
        players = sm.players_of(block)
        assert [sm.players[j] for j in players] == [f"{k}{block}" for k in PLAYER_KINDS]
        for j, kind in zip(players, PLAYER_KINDS, strict=True):
            assert sm.block_of(j) == (block, kind)
        seen += players
    assert seen == list(range(sm.n_players))
    assert sm.block_of(3) == (1, "mlp")
    assert sm.block_of(np.int64(4)) == (2, "attn")


@pytest.mark.parametrize("block", [-1, 3, 10])
def test_players_of_out_of_range(block):
    with pytest.raises(UsageError, match=f"block {block} out of range: the model has 3 blocks"):
        model().players_of(block)


@pytest.mark.parametrize("player", [-1, 6, 99])
def test_block_of_out_of_range(player):
    with pytest.raises(UsageError, match=f"player {player} out of range.*6 players"):
        model().block_of(player)


def test_block_mask():
    sm = model()
    mask = sm.block_mask([1])
    assert mask.dtype == np.bool_ and mask.shape == (sm.n_players,)
    assert mask.tolist() == [True, True, False, False, True, True]
    assert sm.block_mask([]).all()
    assert sm.block_mask(np.array([0, 2])).tolist() == [False, False, True, True, False, False]
    assert not sm.block_mask(range(sm.n_blocks)).any()
    with pytest.raises(UsageError, match="block 3 out of range"):
        sm.block_mask([0, 3])


def test_block_mask_equals_skipping_the_block():
    sm = model()
    ids = torch.tensor([[5, 17, 42, 7, 99, 3]])
    with torch.no_grad():
        inputs = sm.prepare(ids)
        state = sm.initial_state(inputs)
        for j in range(sm.n_players):
            state = sm.step(j, state, inputs, sm.block_of(j)[0] != 1)
        by_steps = sm.logits(sm.final_hidden(state))
        assert torch.equal(by_steps, sm(ids, keep=sm.block_mask([1])))


def test_step_rejects_a_player_out_of_range():
    sm = model()
    with torch.no_grad():
        inputs = sm.prepare(torch.tensor([[5, 17, 42]]))
        with pytest.raises(UsageError, match="player 6 out of range"):
            sm.step(sm.n_players, sm.initial_state(inputs), inputs, True)
