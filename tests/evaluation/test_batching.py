"""Shared-context packing: one row per item, each continuation sees the context and itself.

Packed and unpacked rows run different matrix shapes, so they agree to rounding, not bit for
bit. Tolerances on per-request summed log-likelihoods (magnitude ~80 nats here): fp32 2e-5
(measured at most 3.4e-6: fp32 rounding of different matmul shapes, summed over ~10 tokens);
bf16 0.05 (measured at most 0.011: bf16 keeps 8 mantissa bits, ~0.4% per value). Decisions (acc,
acc_norm) must agree in fp32. Within one layout, the prefix executor stays bit-identical to the
naive one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import layerfast as lf
from layerfast.evaluation.batching import build_rows, make_batches
from layerfast.evaluation.naive_executor import NaiveExecutor, packing_supported
from layerfast.evaluation.prefix_executor import PrefixExecutor
from layerfast.evaluation.requests import Request, build_requests
from layerfast.tasks import Item, Task
from tests.helpers.tiny_models import tiny_model
from tests.helpers.tiny_tokenizer import tiny_tokenizer

TASK = Task(
    "t",
    [
        Item("Q: What is the capital of Peru?\nA:", ("Lima", "Quito", "Paris", "La Paz"), 0, "a"),
        Item("the cat sat on the", ("mat", "dog and the log"), 1, "b"),
        Item("Athens is to Greece as Baghdad is to", ("Iraq", "Mars", "Venus", "Lima"), 0, "c"),
        Item("", ("The quick brown fox", "the lazy dog"), 0, "d"),
        Item("Which planet is known as the red planet? ", ("Mars", "Venus", "Jupiter"), 0, "e"),
        Item("élan café naïve", ("façade", "東京", "Москва"), 2, "f"),
    ],
)
TOL = {torch.float32: 2e-5, torch.bfloat16: 0.05}


def test_row_layout_by_hand():
    reqs = [
        Request(0, 0, (5, 6, 7, 10, 11), (10, 11, 12)),
        Request(0, 1, (5, 6, 7), (20,)),
        Request(1, 0, (8, 9), (30, 31)),
    ]
    rows = build_rows(reqs, pack=True)
    assert len(rows) == 2
    row = rows[0]
    assert row.input_ids == (5, 6, 7, 10, 11)
    assert row.segments == (0, 0, 0, 1, 1)
    assert row.positions == [0, 1, 2, 3, 4]
    assert sorted(row.scored) == sorted([(2, 10, 0), (3, 11, 0), (4, 12, 0), (2, 20, 1)])
    # item 1 has one choice: the context is (8,) and its second target is read at position 1
    assert rows[1].scored == ((0, 30, 2), (1, 31, 2))
    two = build_rows(
        [Request(0, 0, (1, 2, 3, 4), (4, 5)), Request(0, 1, (1, 2, 3, 7, 8), (7, 8, 9))], True
    )
    assert two[0].positions == [0, 1, 2, 3, 3, 4] and two[0].segments == (0, 0, 0, 1, 2, 2)


def test_different_contexts_are_not_packed():
    # left truncation gave the two choices different contexts: fall back to one row each
    reqs = [Request(0, 0, (1, 2, 3), (3, 4)), Request(0, 1, (9, 2, 3), (3, 5))]
    rows = build_rows(reqs, pack=True)
    assert len(rows) == 2 and all(r.segments is None for r in rows)


@pytest.mark.parametrize("style", ["sdpa", "eager"])
def test_mask_semantics(style):
    reqs = [Request(0, 0, (1, 2, 3, 4), (4, 5)), Request(0, 1, (1, 2, 3, 7, 8), (7, 8, 9))]
    (batch,) = make_batches(build_rows(reqs, True), 4096, 0, mask_style=style)
    m = batch.attention_mask[0, 0]
    allowed = m if style == "sdpa" else m == 0
    # row: c c c a0 | b0 b1 ; a0 must not see b*, b1 sees context, b0, itself
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 0, 1, 0],
            [1, 1, 1, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(allowed, expected)


def run(model, pack, executor=NaiveExecutor, masks=None, batch_tokens=64):
    reqs = build_requests(TASK, model.tokenizer)
    ex = executor(model, reqs, batch_tokens=batch_tokens, pack=pack)
    masks = np.ones((1, model.n_players), bool) if masks is None else masks
    return ex, ex.loglik_many(masks)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "qwen2", "olmoe", "phi3"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_matches_unpacked(arch, attn, dtype):
    tok = tiny_tokenizer()
    model = lf.load(
        tiny_model(arch, dtype=dtype, attn_implementation=attn, vocab_size=len(tok)), tokenizer=tok
    )
    rng = np.random.default_rng(1)
    masks = np.concatenate(
        [np.ones((1, model.n_players), bool), rng.random((3, model.n_players)) < 0.7]
    )
    packed_ex, packed = run(model, True, masks=masks)
    assert packed_ex.pack
    plain_ex, plain = run(model, False, masks=masks)
    assert sum(b.input_ids.ne(0).sum() for b in packed_ex.batches) < sum(
        b.input_ids.ne(0).sum() for b in plain_ex.batches
    )  # fewer real tokens
    np.testing.assert_allclose(packed, plain, rtol=0, atol=TOL[dtype])
    if dtype == torch.float32:
        scorer = lf.utility.Scorer(TASK)
        for u in ("acc", "acc_norm", "acc_bytes"):
            for a, b in zip(packed, plain):
                assert np.array_equal(scorer.predictions(a, u), scorer.predictions(b, u))


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
def test_prefix_bit_identical_when_packed(arch):
    tok = tiny_tokenizer()
    model = lf.load(tiny_model(arch, vocab_size=len(tok)), tokenizer=tok)
    rng = np.random.default_rng(2)
    masks = rng.random((12, model.n_players)) < 0.6
    _, naive = run(model, True, NaiveExecutor, masks, batch_tokens=40)
    _, prefix = run(model, True, PrefixExecutor, masks, batch_tokens=40)
    assert np.array_equal(naive, prefix)


def test_sliding_window_disables_packing():
    tok = tiny_tokenizer()
    model = lf.load(tiny_model("mistral", vocab_size=len(tok)), tokenizer=tok)  # window 4
    reqs = build_requests(TASK, tok)
    assert "sliding" in packing_supported(model, reqs)
    game = lf.Game(model, TASK, progress=False)
    assert not game.executor.pack and "sliding" in game.packing_note
