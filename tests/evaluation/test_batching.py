"""Trie packing: one row per item (or per run of items sharing a long prompt prefix), each token
stored once and seeing only its ancestors.

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
from layerfast.evaluation.batching import MIN_SHARED, build_rows, make_batches
from layerfast.evaluation.naive_executor import NaiveExecutor, packing_supported
from layerfast.evaluation.prefix_executor import PrefixExecutor
from layerfast.tasks import Item, Task
from layerfast.tasks.requests import Request
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
    # choice 1's input is a prefix of choice 0's: the trie is one chain, a plain causal row
    assert row.input_ids == (5, 6, 7, 10, 11) and row.parents is None
    assert row.positions == [0, 1, 2, 3, 4]
    assert sorted(row.scored) == sorted([(2, 10, 0), (3, 11, 0), (4, 12, 0), (2, 20, 1)])
    # item 1 has one choice: the context is (8,) and its second target is read at position 1
    assert rows[1].scored == ((0, 30, 2), (1, 31, 2))
    two = build_rows(
        [Request(0, 0, (1, 2, 3, 4), (4, 5)), Request(0, 1, (1, 2, 3, 7, 8), (7, 8, 9))], True
    )
    assert two[0].parents == (-1, 0, 1, 2, 2, 4)
    assert two[0].positions == [0, 1, 2, 3, 3, 4]
    assert sorted(two[0].scored) == sorted([(2, 4, 0), (3, 5, 0), (2, 7, 1), (4, 8, 1), (5, 9, 1)])


def test_choices_sharing_leading_tokens_share_them():
    reqs = [Request(0, 0, (1, 2, 7, 8), (7, 8, 9)), Request(0, 1, (1, 2, 7, 5), (7, 5, 6))]
    (row,) = build_rows(reqs, True)
    assert row.input_ids == (1, 2, 7, 8, 5) and row.parents == (-1, 0, 1, 2, 2)
    assert sorted(row.scored) == sorted(
        [(1, 7, 0), (2, 8, 0), (3, 9, 0), (1, 7, 1), (2, 5, 1), (4, 6, 1)]
    )


def test_different_contexts_share_a_row_as_two_roots():
    # left truncation gave the two choices different contexts: one row, two independent chains
    reqs = [Request(0, 0, (1, 2, 3), (3, 4)), Request(0, 1, (9, 2, 3), (3, 5))]
    (row,) = build_rows(reqs, pack=True)
    assert row.parents == (-1, 0, 1, -1, 3, 4) and row.positions == [0, 1, 2, 0, 1, 2]


def prompt_items(prefix: int, n_items: int) -> list[Request]:
    """Items whose prompts share ``prefix`` leading tokens, 2 choices each."""
    shared = tuple(range(100, 100 + prefix))
    out = []
    for item in range(n_items):
        question = (200 + item, 300 + item)
        for choice in range(2):
            cont = (400 + choice, 500 + choice)
            whole = shared + question + cont
            out.append(Request(item, choice, whole[:-1], cont))
    return out


def test_items_sharing_a_long_prefix_share_a_row():
    rows = build_rows(prompt_items(MIN_SHARED, 5), True)
    assert len(rows) == 1
    # the prefix once, then per item its question and two 1-token continuation inputs
    assert len(rows[0].input_ids) == MIN_SHARED + 5 * (2 + 2)
    assert len(build_rows(prompt_items(MIN_SHARED - 1, 5), True)) == 5  # too short to share


def test_rows_stay_within_row_tokens():
    reqs = prompt_items(40, 30)
    rows = build_rows(reqs, True, row_tokens=64)
    # 40 shared + 4 per item (2 question tokens, 2 continuation inputs): 6 items fill 64 tokens
    assert [len(r.input_ids) for r in rows] == [64] * 5
    scored = sorted(req for r in rows for _, _, req in r.scored)
    assert scored == sorted(i for i, r in enumerate(reqs) for _ in r.targets)


def test_trie_mask_is_the_ancestors():
    reqs = [Request(0, 0, (1, 2, 7, 8), (7, 8, 9)), Request(0, 1, (1, 2, 7, 5), (7, 5, 6))]
    (batch,) = make_batches(build_rows(reqs, True), 4096, 0)
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0],
            [1, 1, 1, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(batch.attention_mask[0, 0], expected)
    assert batch.position_ids[0].tolist() == [0, 1, 2, 3, 3]


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
    reqs = TASK.requests(model.tokenizer)
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
    reqs = TASK.requests(tok)
    assert "sliding" in packing_supported(model, reqs)
    game = lf.Game(model, TASK, progress=False)
    assert not game.executor.pack and "sliding" in game.packing_note


FEWSHOT = (
    "Q: What is the capital of France?\nA: Paris\n\nQ: What is the capital of Peru?\nA: Lima"
    "\n\nQ: What is the capital of Japan?\nA: Tokyo\n\nQ: What is the capital of Iraq?\nA:"
    " Baghdad\n\nQ: What is the capital of Mars?\nA: none\n\n"
)
FEWSHOT_TASK = Task(
    "fewshot",
    [
        Item(
            FEWSHOT + "Q: What is the capital of Venezuela?\nA:",
            ("Caracas", "Lima", "Quito"),
            0,
            "a",
        ),
        Item(FEWSHOT + "Q: What is the capital of Bolivia?\nA:", ("La Paz", "Sucre"), 0, "b"),
        Item(
            FEWSHOT + "Q: What is the capital of Uruguay?\nA:", ("Montevideo", "Asuncion"), 0, "c"
        ),
        Item(
            FEWSHOT + "Q: Which planet is red?\nA:", ("Mars", "Venus", "Jupiter", "Saturn"), 0, "d"
        ),
    ],
)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fewshot_trie_rows_match_unpacked(arch, attn, dtype):
    """Items sharing a 5-shot prefix share one trie row: same log-likelihoods as one row per
    request (within the packing tolerances), with the prefix computed once."""
    tok = tiny_tokenizer()
    model = lf.load(
        tiny_model(
            arch,
            dtype=dtype,
            attn_implementation=attn,
            vocab_size=len(tok),
            max_positions=512,
        ),
        tokenizer=tok,
    )
    reqs = FEWSHOT_TASK.requests(tok)
    rows = build_rows(reqs, True)
    assert len(rows) == 1 and rows[0].parents is not None
    rng = np.random.default_rng(3)
    masks = np.concatenate(
        [np.ones((1, model.n_players), bool), rng.random((3, model.n_players)) < 0.7]
    )
    packed = NaiveExecutor(model, reqs, batch_tokens=4096, pack=True)
    plain = NaiveExecutor(model, reqs, batch_tokens=4096, pack=False)
    a, b = packed.loglik_many(masks), plain.loglik_many(masks)
    np.testing.assert_allclose(a, b, rtol=0, atol=TOL[dtype])
    assert np.array_equal(
        PrefixExecutor(model, reqs, batch_tokens=4096, pack=True).loglik_many(masks), a
    )
    real = lambda ex: sum(int(bt.n_tokens) for bt in ex.batches)  # noqa: E731
    assert real(plain) >= 3 * real(packed)  # 11 requests, the prefix computed once
