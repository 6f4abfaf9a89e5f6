"""The bench's models and requests."""

from __future__ import annotations

import pytest
import torch

from layerfast.bench.workload import (
    CONTEXT_TOKENS,
    CONTINUATION_TOKENS,
    N_CHOICES,
    load_model,
    load_workload,
    synthetic_requests,
)
from layerfast.errors import UsageError


@pytest.mark.parametrize("n_items,vocab,seed", [(1, 8, 0), (7, 97, 1), (20, 50000, 2)])
def test_synthetic_requests(n_items, vocab, seed):
    reqs = synthetic_requests(n_items, vocab, seed)
    assert len(reqs) == n_items * N_CHOICES
    for item in range(n_items):
        group = [r for r in reqs if r.group == item]
        assert [r.unit for r in group] == list(range(N_CHOICES))
        contexts = set()
        for r in group:
            c = len(r.targets)
            assert CONTINUATION_TOKENS[0] <= c < CONTINUATION_TOKENS[1]
            whole = r.input_ids + r.targets[-1:]
            assert whole[-c:] == r.targets  # continuation predicted at the last C positions
            context = whole[:-c]
            assert CONTEXT_TOKENS[0] <= len(context) < CONTEXT_TOKENS[1]
            contexts.add(context)
            assert all(3 <= t < vocab for t in whole)
        assert len(contexts) == 1  # one context shared by the item's choices
    assert synthetic_requests(n_items, vocab, seed) == reqs  # seeded


def test_synthetic_requests_refuse_a_tiny_vocabulary():
    with pytest.raises(UsageError, match="too small"):
        synthetic_requests(2, 5)


def test_random_model_is_built_in_the_dtype_without_a_tokenizer():
    model = load_model("random:tiny", "cpu", None)
    assert model.dtype == torch.bfloat16 and model.tokenizer is None
    assert model.name == "random:tiny" and model.n_blocks == 4
    assert torch.get_default_dtype() == torch.float32  # restored
    assert load_model("random:tiny", None, "fp32").dtype == torch.float32


def test_unknown_random_shape_names_the_choices():
    with pytest.raises(UsageError, match="random:llama-3-8b"):
        load_model("random:llama-9", None, None)


def test_workload_defaults_and_errors(tiny_llama):
    model = load_model("random:tiny", None, "fp32")
    w = load_workload(model, None, 3, 0, None)
    assert (w.task, w.n_items, w.n_items_full, len(w.requests)) == ("synthetic", 3, 1000, 12)
    with pytest.raises(UsageError, match="--task synthetic"):
        load_workload(model, "capitals", 3, 0, None)
    w = load_workload(tiny_llama, "synthetic", 2, 0, 50)
    assert w.n_items_full == 50 and all(
        t < tiny_llama.config.vocab_size for r in w.requests for t in r.input_ids
    )


@pytest.mark.parametrize("task", ["lm_eval:arc_easy", "text:lee"])
def test_bench_refuses_task_kinds_it_cannot_sample(tiny_llama, task):
    with pytest.raises(UsageError, match="not sampled yet"):
        load_workload(tiny_llama, task, 3, 0, None)
