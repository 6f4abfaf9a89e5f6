"""The bench's sweep sample: the seed way scores what the executors score, the sublayer-run
counts it projects with are the executors' own, and the sample is what it says."""

from __future__ import annotations

import numpy as np
import pytest

from layerfast.bench.seed_way import SeedWayScorer
from layerfast.bench.sweep import (
    PATHS,
    make_scorer,
    projected_s,
    run_path,
    sample_masks,
    sublayer_runs,
    sweep_masks,
)
from layerfast.estimators.proximity import proximity_cost
from layerfast.evaluation.naive_executor import NaiveExecutor
from layerfast.evaluation.prefix_executor import trie_order

# fp32 tiny model: the seed way (full log-softmax over [B, T, V]) and the executors' chunked
# log-probs at the continuation positions differ only by summation order
FP32_LOGLIK_ATOL = 1e-4


@pytest.fixture(scope="module")
def requests(tiny_llama, tiny_task):
    return tiny_task.requests(tiny_llama.tokenizer)


def random_masks(n: int, m: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((m, n)) < 0.7


def test_seed_way_equals_naive_executor(tiny_llama, requests):
    masks = np.vstack([sweep_masks("ablation", tiny_llama.n_players), random_masks(6, 5, 1)])
    seed = SeedWayScorer(tiny_llama, requests, batch_tokens=64)
    try:
        got = seed.loglik_many(masks)
    finally:
        seed.close()
    want = NaiveExecutor(tiny_llama, requests, batch_tokens=64).loglik_many(masks)
    np.testing.assert_allclose(got, want, atol=FP32_LOGLIK_ATOL, rtol=0)
    assert not seed._handles  # hooks removed: the shared model runs plainly again


def test_seed_way_hooks_change_nothing_when_closed(tiny_llama, requests):
    before = NaiveExecutor(tiny_llama, requests).loglik_many(np.ones((1, 6), dtype=bool))
    seed = SeedWayScorer(tiny_llama, requests, batch_tokens=64)
    seed.loglik_many(np.zeros((1, 6), dtype=bool))
    seed.close()
    after = NaiveExecutor(tiny_llama, requests).loglik_many(np.ones((1, 6), dtype=bool))
    np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("which", ["ablation", "proximity", "random"])
def test_sublayer_runs_are_the_executors_counts(tiny_llama, requests, path, which):
    n = tiny_llama.n_players
    masks = random_masks(n, 9, 3) if which == "random" else sweep_masks(which, n)
    scorer = make_scorer(path, tiny_llama, requests, 64, 1 << 30)
    try:
        scorer.loglik_many(masks)
    finally:
        if path == "seed":
            scorer.close()
    n_batches = len(scorer.batches)
    assert scorer.sublayer_evaluations == sublayer_runs(masks, path) * n_batches


def test_sweep_masks_are_the_estimators():
    assert sweep_masks("ablation", 64).shape == (65, 64)
    prox = sweep_masks("proximity", 64)
    assert prox.shape == (proximity_cost(64, 3), 64) == (190, 64)
    assert prox[0].all() and not prox[1:].all(axis=1).any()


@pytest.mark.parametrize("k", [1, 2, 7, 22, 40])
def test_sample_is_consecutive_in_trie_order(k):
    full = sweep_masks("proximity", 8)
    ordered = full[trie_order(full)]
    got = sample_masks(full, k)
    assert len(got) == min(k, len(full))
    starts = [
        i for i in range(len(ordered) - len(got) + 1) if (ordered[i : i + len(got)] == got).all()
    ]
    assert starts == [(len(full) - len(got)) // 2]


def test_projection_scales_by_runs_and_items(tiny_llama, requests):
    full = sweep_masks("proximity", tiny_llama.n_players)
    scorer = make_scorer("fast", tiny_llama, requests, 64, 1 << 30)
    sample = sample_masks(full, 4)
    result = run_path("fast", scorer, sample, tiny_llama.device, 64)
    ratio = sublayer_runs(full, "fast") / sublayer_runs(sample, "fast")
    assert projected_s(result, full, sample, 3.0) == pytest.approx(result.wall_s * ratio * 3.0)
    assert projected_s(result, sample, sample, 1.0) == pytest.approx(result.wall_s)
    assert result.loglik.shape == (4, len(requests))
