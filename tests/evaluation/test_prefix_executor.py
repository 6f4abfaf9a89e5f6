"""The prefix-cached executor is bit-identical to the naive one and runs fewer sublayers.

Bit-identical means ``np.array_equal`` on the float64 log-likelihoods: both executors run the
same kernels on the same batches, the prefix one only skips recomputing shared prefixes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import layerfast as lf
from layerfast.estimators.ablation import ablation_masks
from layerfast.evaluation.naive_executor import NaiveExecutor
from layerfast.evaluation.prefix_executor import (
    PrefixExecutor,
    branch_depths,
    common_prefix,
    trie_order,
)
from layerfast.tasks import Item, Task
from tests.helpers.tiny_models import tiny_model
from tests.helpers.tiny_tokenizer import tiny_tokenizer

TASK = Task(
    "t",
    [
        Item("Q: What is the capital of Peru?\nA:", ("Lima", "Quito", "Paris"), 0, "a"),
        Item("the cat sat on the", ("mat", "dog"), 1, "b"),
        Item("Athens is to Greece as Baghdad is to", ("Iraq", "Mars", "Venus", "Lima"), 0, "c"),
        Item("", ("The quick brown fox", "the lazy dog"), 0, "d"),
    ],
)


def proximity_masks(n: int, window: int) -> np.ndarray:
    """The full coalition and N minus every contiguous window of length 1..window."""
    rows = [np.ones(n, dtype=bool)]
    for k in range(1, window + 1):
        for start in range(n - k + 1):
            row = np.ones(n, dtype=bool)
            row[start : start + k] = False
            rows.append(row)
    return np.array(rows)


def mask_sets(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    full, empty = np.ones((1, n), bool), np.zeros((1, n), bool)
    randoms = rng.random((17, n)) < rng.uniform(0.2, 0.9, size=(17, 1))
    return {
        "ablation": ablation_masks(n),
        "proximity": proximity_masks(n, 3),
        "random+duplicates+extremes": np.concatenate(
            [randoms, randoms[:4], full, empty, full, empty]
        ),
        "single": full,
    }


def executors(model, batch_tokens, memory_budget):
    requests = TASK.requests(model.tokenizer)
    return (
        NaiveExecutor(model, requests, batch_tokens=batch_tokens),
        PrefixExecutor(model, requests, batch_tokens=batch_tokens, memory_budget=memory_budget),
    )


@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "gemma3", "gpt2", "olmoe"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bit_identical_to_naive(arch, dtype):
    tok = tiny_tokenizer()
    model = lf.load(tiny_model(arch, dtype=dtype, vocab_size=len(tok)), tokenizer=tok)
    for name, masks in mask_sets(model.n_players, seed=hash(arch) % 1000).items():
        for budget in (1 << 30, 0, 5000):  # all states kept, none kept, some kept
            naive, prefix = executors(model, batch_tokens=48, memory_budget=budget)
            assert len(naive.batches) > 1
            expected = naive.loglik_many(masks)
            got = prefix.loglik_many(masks)
            assert np.array_equal(got, expected), (arch, dtype, name, budget)
            assert prefix.sublayer_evaluations <= naive.sublayer_evaluations
            if budget == 0:
                assert prefix.recomputed_steps > 0 or name == "single"


def test_game_executors_agree_and_cache_across_them(tmp_path):
    tok = tiny_tokenizer()
    model = lf.load(tiny_model("qwen2", vocab_size=len(tok)), tokenizer=tok)
    masks = mask_sets(model.n_players, seed=3)["random+duplicates+extremes"]
    naive = lf.Game(model, TASK, utility="margin", executor="naive", progress=False)
    prefix = lf.Game(model, TASK, utility="margin", executor="prefix", progress=False, chunk=5)
    np.testing.assert_array_equal(prefix.loglik(masks), naive.loglik(masks))
    np.testing.assert_array_equal(prefix(masks), naive(masks))
    assert prefix.n_forward == len(np.unique(masks, axis=0))


def long_model(n_layers: int = 30):
    tok = tiny_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=n_layers,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    return lf.load(LlamaForCausalLM(cfg), tokenizer=tok)


@pytest.mark.parametrize("sweep", ["ablation", "proximity"])
def test_sublayer_evaluations_at_most_055_of_naive(sweep):
    """The issue's target: ablation and proximity window-3 sweeps of a 60-player model run at
    most 0.55x the naive executor's sublayer evaluations (a machine-independent count)."""
    model = long_model(30)
    masks = mask_sets(model.n_players, seed=0)[sweep]
    naive, prefix = executors(model, batch_tokens=4096, memory_budget=1 << 30)
    np.testing.assert_array_equal(prefix.loglik_many(masks), naive.loglik_many(masks))
    ratio = prefix.sublayer_evaluations / naive.sublayer_evaluations
    assert ratio <= 0.55, ratio


def test_trie_helpers():
    rng = np.random.default_rng(0)
    masks = rng.random((40, 9)) < 0.5
    ordered = masks[trie_order(masks)]
    keys = ["".join("0" if b else "1" for b in row) for row in ordered]  # kept sorts first
    assert keys == sorted(keys)
    branch, keep_at = branch_depths(ordered)
    for k in range(1, len(ordered)):
        assert branch[k] == common_prefix(ordered[k - 1], ordered[k])
        # every later mask's branch point on this path is marked for keeping by some earlier mask
        assert branch[k] == 0 or any(branch[k] in keep_at[j] for j in range(k))
    assert common_prefix(np.array([1, 0, 1], bool), np.array([1, 0, 1], bool)) == 3
