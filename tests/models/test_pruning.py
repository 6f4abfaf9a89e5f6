"""Pruning: the pruned transformers model equals the masked layerfast model, survives
save_pretrained/from_pretrained, and has no stale layer index (cached decoding agrees); zeroing
the output projections an adapter declares removes exactly that player, for every architecture."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

import layerfast as lf
from layerfast.errors import UsageError
from layerfast.models import SublayerModel
from layerfast.models.pruning import prune, prune_keep, remove_blocks, select, zero_branch
from tests.helpers.tiny_models import TINY_ARCHS, tiny_model

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


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(rule="highest"), "'highest'"),
        (dict(fraction=1.0), "fraction must be in \\[0, 1\\), got 1.0"),
        (dict(fraction=None), "got None"),
        (dict(k=8), "k must be in \\[0, 7\\], got 8"),
        (dict(k=-1), "got -1"),
        (dict(fraction=1.5, rule="cumulative"), "got 1.5"),
        (dict(fraction=None, rule="cumulative"), "got None"),
    ],
)
def test_select_rejects_bad_options_naming_them(kwargs, match):
    with pytest.raises(UsageError, match=match):
        select([0.5, 0.1, 0.3, 0.9, 0.2, 0.7, 0.05, 0.4], **kwargs)


def test_select_rejects_bad_scores():
    with pytest.raises(UsageError, match="non-empty 1-D"):
        select([])
    with pytest.raises(UsageError, match="non-empty 1-D"):
        select([[1.0, 2.0]])
    with pytest.raises(UsageError, match="at unit 1"):
        select([1.0, -2.0], fraction=0.5, rule="cumulative")


@pytest.mark.parametrize("arch", ARCHS)
def test_block_pruning_equals_masked_model(arch, tmp_path):
    model = lf.load(tiny_model(arch))
    scores = np.array([3.0, 1.0, 2.0])  # block 1 is the least important
    pruned = prune(model, scores, k=1)
    assert (
        pruned.config.num_hidden_layers == 2
        if hasattr(pruned.config, "num_hidden_layers")
        else True
    )
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
        torch.testing.assert_close(
            pruned(IDS, use_cache=False).logits, masked_logits(model, keep), rtol=0, atol=1e-5
        )


def test_bad_scores_length():
    model = lf.load(tiny_model("llama"))
    with pytest.raises(ValueError, match="length 3"):
        prune(model, [1.0, 2.0])
    with pytest.raises(UsageError, match="sublayer scores need length 6.*got 3"):
        prune(model, [1.0, 2.0, 3.0], unit="sublayer")
    with pytest.raises(UsageError, match="'layer'"):
        prune(model, [1.0, 2.0, 3.0], unit="layer")


def test_bad_block_and_player_indices():
    model = lf.load(copy.deepcopy(tiny_model("llama")))
    with pytest.raises(UsageError, match=r"blocks \[3\] out of range.*3 blocks"):
        remove_blocks(model, [0, 3])
    with pytest.raises(UsageError, match="player 6 out of range"):
        zero_branch(model, 6)
    assert len(model.adapter.layers()) == 3  # nothing was removed


# --- the adapters' declared output projections, for every architecture -------------------------
@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_zeroing_declared_projections_removes_exactly_that_player(arch):
    """HF with a player's declared output projections zeroed equals the layerfast model with
    that player switched off, for every player (bit-identical: the branch adds exactly 0)."""
    hf = tiny_model(arch)
    model = lf.load(hf)
    with torch.no_grad():
        full = hf(IDS, use_cache=False).logits
    for j, player in enumerate(model.players):
        zeroed = SublayerModel(copy.deepcopy(hf))
        zero_branch(zeroed, j)
        keep = np.ones(model.n_players, bool)
        keep[j] = False
        with torch.no_grad():
            got = zeroed.hf_model(IDS, use_cache=False).logits
        want = masked_logits(model, keep)
        assert torch.equal(got, want), (player, (got - want).abs().max().item())
        assert (got - full).abs().max().item() > 1e-4, player  # the zeroing did something


@pytest.mark.parametrize("arch", ["mixtral", "olmoe", "qwen2_moe", "qwen3_moe"])
def test_moe_blocks_zero_every_expert(arch):
    model = lf.load(tiny_model(arch))
    names = [n for n, _ in model.adapter.output_projections(model.blocks[0], "mlp")]
    assert "experts.down_proj" in names  # all experts' down projections, one 3-D parameter
    if arch == "qwen2_moe":
        assert "shared_expert.down_proj.weight" in names


# --- prune_keep: the keep-mask a pruning search found --------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize(
    "unit, removed",
    [("sublayer", [1, 4]), ("sublayer", [0]), ("block", [2, 3]), ("block", [0, 1, 4, 5])],
)
def test_prune_keep_equals_masked_model_after_reload(arch, unit, removed, tmp_path):
    model = lf.load(tiny_model(arch))
    keep = np.ones(model.n_players, bool)
    keep[removed] = False
    want = masked_logits(model, keep)
    with torch.no_grad():
        assert (want - model(IDS)).abs().max().item() > 1e-4  # the removal matters
    pruned = prune_keep(model, keep, unit=unit)
    names = [model.players[j] for j in removed]
    if unit == "block":
        names = sorted({f"block{j // 2}" for j in removed})
    assert pruned.config.layerfast_pruned == {"unit": unit, "removed": names, "rule": "search"}
    assert len(model.blocks) == 3  # the original is untouched
    with torch.no_grad():
        direct = pruned(IDS, use_cache=False).logits
    assert torch.equal(direct, want), (direct - want).abs().max().item()
    pruned.save_pretrained(tmp_path)
    # the original's attention implementation (eager): sdpa would differ in the last bits
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert len(lf.load(reloaded).blocks) == (3 - len(removed) // 2 if unit == "block" else 3)
    with torch.no_grad():
        got = reloaded(IDS, use_cache=False).logits
    assert torch.equal(got, want), (got - want).abs().max().item()


def test_prune_keep_refuses_half_blocks_and_bad_units():
    model = lf.load(tiny_model("llama"))
    keep = np.ones(model.n_players, bool)
    keep[[2, 3, 4]] = False  # block 1 whole, attn2 alone
    with pytest.raises(UsageError, match=r"unit 'block' removes whole blocks; \['attn2'\]"):
        prune_keep(model, keep, unit="block")
    with pytest.raises(UsageError, match="'layer'"):
        prune_keep(model, keep, unit="layer")
    with pytest.raises(ValueError):
        prune_keep(model, keep[:-1])
    # as sublayers the same mask is fine
    assert prune_keep(model, keep).config.layerfast_pruned["removed"] == ["attn1", "mlp1", "attn2"]
