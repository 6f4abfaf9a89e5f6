"""Stacked suffixes (evaluation/stacking.py) against the unstacked prefix executor.

Stacking runs several coalitions of a batch through one sublayer call; it may change a value
only by the rounding of matrix products over more rows, so the bound is the packing tolerance
of docs/design.md (per-request log-likelihood within 2e-5 in fp32, 0.05 in bf16), and the
choices' ranks must agree. The unstacked executor (``stack_tokens=0``) stays bit-identical to
the naive one (tests/evaluation/test_prefix_executor.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import layerfast as lf
from layerfast.evaluation import stacking
from layerfast.evaluation.naive_executor import NaiveExecutor
from layerfast.evaluation.prefix_executor import PrefixExecutor, branch_depths, trie_order
from tests.evaluation.test_prefix_executor import TASK, long_model, mask_sets
from tests.helpers.tiny_models import tiny_model
from tests.helpers.tiny_tokenizer import tiny_tokenizer

TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 0.05}


class StepCounter:
    """Counts the model's sublayer calls (stacked or not) while installed."""

    def __init__(self, model):
        self.model, self.calls, self.step = model, 0, model.step

    def __enter__(self):
        def step(*args, **kwargs):
            self.calls += 1
            return self.step(*args, **kwargs)

        self.model.step = step
        return self

    def __exit__(self, *exc):
        del self.model.step


def run(model, masks, budget, stack_tokens):
    executor = PrefixExecutor(
        model,
        TASK.requests(model.tokenizer),
        batch_tokens=48,
        memory_budget=budget,
        stack_tokens=stack_tokens,
    )
    with StepCounter(model) as counter:
        values = executor.loglik_many(masks)
    return values, executor, counter.calls


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2", "olmoe"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_stacked_equals_unstacked(arch, dtype):
    tok = tiny_tokenizer()
    model = lf.load(tiny_model(arch, dtype=dtype, vocab_size=len(tok)), tokenizer=tok)
    for name, masks in mask_sets(model.n_players, seed=hash(arch) % 1000).items():
        naive = NaiveExecutor(model, TASK.requests(tok), batch_tokens=48)
        expected = naive.loglik_many(masks)
        for budget in (1 << 30, 0, 5000):
            plain, unstacked, plain_calls = run(model, masks, budget, 0)
            assert np.array_equal(plain, expected)
            for stack_tokens in (100, 150, 1 << 20):  # groups of 2 or 3 (48-token batches), all
                got, stacked, calls = run(model, masks, budget, stack_tokens)
                np.testing.assert_allclose(got, plain, rtol=0, atol=TOLERANCE[dtype])
                if len(masks) > 1:
                    assert calls < plain_calls, (name, budget, stack_tokens)
                assert stacked.sublayer_evaluations <= naive.sublayer_evaluations


def test_stacked_ranks_and_memo_on_a_long_model():
    """60 players, the ablation and proximity sweeps: equal choices' ranks, and the stacked
    compute stays near the unstacked (groups share less than a trie walk, never more than
    the naive executor runs)."""
    model = long_model(30)
    requests = TASK.requests(model.tokenizer)
    for sweep in ("ablation", "proximity", "random+duplicates+extremes"):
        masks = mask_sets(model.n_players, seed=1)[sweep]
        plain = PrefixExecutor(model, requests, batch_tokens=4096)
        stacked = PrefixExecutor(model, requests, batch_tokens=4096, stack_tokens=1 << 16)
        naive = NaiveExecutor(model, requests, batch_tokens=4096)
        want, got = plain.loglik_many(masks), stacked.loglik_many(masks)
        np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE[torch.float32])
        naive.loglik_many(masks)
        assert plain.sublayer_evaluations <= stacked.sublayer_evaluations
        assert stacked.sublayer_evaluations <= naive.sublayer_evaluations


def test_parallel_residual_models_are_not_stacked():
    tok = tiny_tokenizer()
    model = lf.load(tiny_model("gpt_neox", vocab_size=len(tok)), tokenizer=tok)
    masks = mask_sets(model.n_players, seed=2)["proximity"]
    plain, _, plain_calls = run(model, masks, 1 << 30, 0)
    got, _, calls = run(model, masks, 1 << 30, 1 << 20)
    assert np.array_equal(got, plain) and calls == plain_calls


def test_groups_keep_duplicates_with_their_original():
    rng = np.random.default_rng(0)
    base = rng.random((12, 7)) < 0.5
    masks = np.concatenate([base, base[:5], base[:2]])
    ordered = masks[trie_order(masks)]
    branch, _ = branch_depths(ordered)
    for size in (1, 2, 3, 5, 64):
        found = stacking.groups(branch, 7, size)
        assert [k for g in found for k in g] == list(range(len(ordered)))
        for members in found:
            distinct = [k for k in members if k == members[0] or branch[k] < 7]
            assert len(distinct) <= size
        # a duplicate never starts a group: it is run with the coalition it repeats
        assert all(branch[g[0]] < 7 or g[0] == 0 for g in found)


def test_group_size():
    tok = tiny_tokenizer()
    model = lf.load(tiny_model("llama", vocab_size=len(tok)), tokenizer=tok)
    batch = NaiveExecutor(model, TASK.requests(tok), batch_tokens=48).batches[0]
    padded = batch.input_ids.numel()
    assert stacking.group_size(model, batch, 0) == 1
    assert stacking.group_size(model, batch, padded * 2 - 1) == 1
    assert stacking.group_size(model, batch, padded * 3) == 3
    assert stacking.group_size(model, batch, 1 << 30) == stacking.MAX_GROUP
