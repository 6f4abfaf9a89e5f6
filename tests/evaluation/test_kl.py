"""The label-free utility ``kl`` (:mod:`layerfast.evaluation.kl`): its per-request rows against a
plain full-vocabulary reference (linear heads through the exact m/c trick, Gemma-2's soft-capped
head through kept log-probabilities), the scorer's formula, executors, the cache key and the
combinations it refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import layerfast as lf
from layerfast.errors import UsageError
from layerfast.evaluation.kl import KLScorer, kl_scorer
from layerfast.tasks.text_task import TextTask
from tests.conftest import TINY_ITEMS, make_task
from tests.evaluation.test_generative_game import random_task
from tests.helpers.tiny_models import tiny_model
from tests.helpers.tiny_tokenizer import tiny_tokenizer

ATOL = 1e-4  # nats per request: fp32 forwards, the executors' chunked log-sum-exp and (linear
# heads) the m/c rewrite against float64 log_softmax of the model's fp32 logits
DOCS = [
    "the cat sat on the mat and the dog sat on the log",
    "Q: What is the capital of France? A: Paris",
    "élan 東京 the quick brown fox jumps over the lazy dog",
]


@pytest.fixture(scope="module")
def models():
    tok = tiny_tokenizer()
    return {
        arch: lf.load(tiny_model(arch, vocab_size=len(tok)), tokenizer=tok)
        for arch in ("llama", "gemma2")
    }


TASKS = {
    "mc": lambda: make_task(TINY_ITEMS[:4], name="tiny-kl"),
    "text": lambda: TextTask("tiny", DOCS),
}


def kl_game(model, task, **kw):
    return lf.Game(model, task, utility="kl", progress=False, **kw)


def random_masks(n_players: int, m: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = rng.random((m, n_players)) < 0.6
    masks[:, 0] = False  # never the full model
    return np.concatenate([np.ones((1, n_players), bool), masks])


def reference_kl(model, requests, keep) -> np.ndarray:
    """Per request: sum over its target positions of KL(p_full || p_keep), from float64
    log_softmax over the whole vocabulary of the model's logits, one unpadded request at a time."""
    out = []
    with torch.no_grad():
        for r in requests:
            ids = torch.tensor([r.input_ids])
            logp = torch.log_softmax(model(ids)[0].double(), dim=-1)
            logq = torch.log_softmax(model(ids, keep=keep)[0].double(), dim=-1)
            t, c = len(r.input_ids), len(r.targets)
            kl = (logp.exp() * (logp - logq)).sum(-1)  # [T]
            out.append(kl[t - c : t].sum().item())
    return np.array(out)


def scorer_formula(requests, rows, items) -> float:
    """v = -(mean over items of (summed KL of the item's requests / its scored tokens))."""
    keys = np.unique(items)
    tokens = np.array([len(r.targets) for r in requests], dtype=float)
    return -float(np.mean([rows[items == k].sum() / tokens[items == k].sum() for k in keys]))


@pytest.mark.parametrize("task_kind", list(TASKS))
@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_kl_rows_match_full_vocabulary_reference(models, arch, task_kind):
    model = models[arch]
    assert model.dtype == torch.float32
    assert bool(model.adapter.logit_softcap) == (arch == "gemma2")  # both head paths
    game = kl_game(model, TASKS[task_kind](), batch_tokens=64)
    masks = random_masks(model.n_players)
    rows = game.loglik(masks)
    assert rows.shape == (len(masks), len(game.requests))
    ref = np.stack([reference_kl(model, game.requests, keep) for keep in masks])
    np.testing.assert_allclose(rows, ref, rtol=0, atol=ATOL)
    assert (ref[1:].sum(axis=1) > 100 * ATOL).all()  # the masks change the distributions
    # items: multiple-choice items (request groups) or documents (text windows' units)
    if task_kind == "text":
        items = np.array([r.unit for r in game.requests])
        assert len(np.unique(items)) == len(DOCS) == game.n_items
    else:
        items = np.array([r.group for r in game.requests])
        assert len(np.unique(items)) == 4 == game.n_items
    v = game(masks)
    want = [scorer_formula(game.requests, row, items) for row in rows]
    np.testing.assert_allclose(v, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(game.item_values(masks).mean(axis=1), v, rtol=0, atol=1e-12)
    assert game.utility == "kl" and game.chance is None


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_full_model_scores_zero_and_removal_scores_below(models, arch):
    model = models[arch]
    game = kl_game(model, TASKS["mc"]())
    n = model.n_players
    masks = np.ones((n + 1, n), bool)
    masks[np.arange(1, n + 1), np.arange(n)] = False  # the full model less one sublayer each
    rows, v = game.loglik(masks), game(masks)
    assert np.abs(rows[0]).max() < ATOL and abs(v[0]) < ATOL
    assert (v[1:] < -10 * ATOL).all(), v
    assert (rows[1:] > -ATOL).all()  # a KL divergence is never negative


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_prefix_and_naive_executors_are_bit_identical(models, arch):
    model, task = models[arch], TASKS["text"]()
    masks = random_masks(model.n_players, m=5, seed=1)
    prefix = kl_game(model, task, batch_tokens=64)
    naive = kl_game(model, task, batch_tokens=64, executor="naive")
    assert prefix.executor.name != naive.executor.name
    np.testing.assert_array_equal(prefix.loglik(masks), naive.loglik(masks))


def test_cache_key_and_file_keep_kl_apart(models, tmp_path):
    model, task = models["llama"], TASKS["mc"]()
    path = tmp_path / "c.sqlite"
    masks = random_masks(model.n_players)
    kl = kl_game(model, task, cache=path)
    ll = lf.Game(model, task, utility="logprob", progress=False, cache=path)
    assert kl.key.layout.endswith("-kl") and not ll.key.layout.endswith("-kl")
    assert kl.key.layout.removesuffix("-kl") == ll.key.layout
    assert kl.cache_key != ll.cache_key
    kl_rows, ll_rows = kl.loglik(masks), ll.loglik(masks)
    assert kl.n_forward == ll.n_forward == len(masks)  # the second game found nothing to reuse

    kl2 = kl_game(model, task, cache=path)
    ll2 = lf.Game(model, task, utility="logprob", progress=False, cache=path)
    np.testing.assert_array_equal(kl2.loglik(masks), kl_rows)
    np.testing.assert_array_equal(ll2.loglik(masks), ll_rows)
    assert kl2.n_forward == ll2.n_forward == 0  # both from the file
    assert not np.allclose(kl_rows, ll_rows)
    assert (kl_rows >= -ATOL).all() and (ll_rows < 0).all()


def test_refused_combinations(models):
    model, task = models["llama"], TASKS["mc"]()
    with pytest.raises(UsageError, match="utility 'kl' runs in this process.*workers"):
        kl_game(model, task, workers=2)
    game = kl_game(model, task)
    for other in ("acc", "logprob"):
        with pytest.raises(UsageError, match=f"scores only utility 'kl', not '{other}'"):
            game.with_utility(other)
    assert game.with_utility("kl").utility == "kl"
    with pytest.raises(UsageError, match="not 'nll'"):
        kl_game(model, TASKS["text"]()).with_utility("nll")


def test_kl_on_a_generative_task_refused(models):
    model, gen = models["llama"], random_task(2)
    with pytest.raises(UsageError, match="'kl'") as info:
        kl_game(model, gen)
    assert "\n" not in str(info.value)
    # the KL scorer itself names the task and says why
    with pytest.raises(UsageError, match="'rand-gen' is generative") as info:
        kl_scorer(gen, [])
    assert "\n" not in str(info.value)


def test_kl_scorer_checks_row_length():
    requests = make_task(TINY_ITEMS[:2]).requests(tiny_tokenizer())
    scorer = KLScorer(requests)
    with pytest.raises(ValueError, match=f"expected {len(requests)} KL sums"):
        scorer(np.zeros(len(requests) + 1))
    assert scorer(np.zeros(len(requests))) == 0.0
