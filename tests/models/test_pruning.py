"""Pruning: the pruned transformers model equals the masked layerfast model, survives
save_pretrained/from_pretrained, and has no stale layer index (cached decoding agrees)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

import layerfast as lf
from layerfast.models.pruning import prune, select
from tests.helpers.tiny_models import tiny_model

ARCHS = ["llama", "gpt2", "gpt_neox", "gemma3", "mixtral", "qwen2_moe", "phi3"]
IDS = torch.tensor([[5, 17, 42, 7, 99, 3, 61, 8, 23]])


def masked_logits(model, keep):
    with torch.no_grad():
        return model(IDS, keep=keep)


def test_select_rules():
    s = [0.5, 0.1, 0.3, 0.9, 0.2, 0.7, 0.05, 0.4]
    assert select(s, fraction=0.25) == [1, 6]
    assert select(s, k=3) == [1, 4, 6]
    # cumulative: sorted shares 0.05, 0.1, 0.2, 0.3 of total 3.15 -> 0.016, 0.048, 0.111, 0.206
    assert select(s, fraction=0.12, rule="cumulative") == [1, 4, 6]
    with pytest.raises(ValueError, match="NaN"):
        select([1.0, float("nan")])
    with pytest.raises(ValueError, match="rule"):
        select(s, rule="highest")


@pytest.mark.parametrize("arch", ARCHS)
def test_block_pruning_equals_masked_model(arch, tmp_path):
    model = lf.load(tiny_model(arch))
    scores = np.array([3.0, 1.0, 2.0])  # block 1 is the least important
    pruned = prune(model, scores, k=1)
    assert pruned.config.num_hidden_layers == 2 if hasattr(pruned.config, "num_hidden_layers") else True
    keep = np.ones(model.n_players, bool)
    keep[2:4] = False
    want = masked_logits(model, keep)
    with torch.no_grad():
        got = pruned(IDS, use_cache=False).logits
        cached = pruned(IDS, use_cache=True).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(cached, got, rtol=0, atol=1e-5)
    # the original model is untouched
    assert len(model.blocks) == 3
    pruned.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(IDS, use_cache=False).logits, want, rtol=0, atol=1e-5)
    for new_idx, layer in enumerate(lf.load(reloaded).blocks):
        assert all(m.layer_idx == new_idx for m in layer.modules() if hasattr(m, "layer_idx"))


@pytest.mark.parametrize("arch", ARCHS)
def test_sublayer_pruning_equals_masked_model(arch):
    model = lf.load(tiny_model(arch))
    scores = np.arange(model.n_players, dtype=float)[::-1].copy()
    scores[1] = -1.0  # mlp0
    scores[4] = -2.0  # attn2
    pruned = prune(model, scores, k=2, unit="sublayer")
    keep = np.ones(model.n_players, bool)
    keep[[1, 4]] = False
    with torch.no_grad():
        torch.testing.assert_close(pruned(IDS, use_cache=False).logits, masked_logits(model, keep),
                                   rtol=0, atol=1e-5)


def test_bad_scores_length():
    model = lf.load(tiny_model("llama"))
    with pytest.raises(ValueError, match="length 3"):
        prune(model, [1.0, 2.0])
