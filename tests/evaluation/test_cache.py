"""The on-disk cache: resumes at batch granularity, and its key names every option that changes
the numbers (so no option change is ever served another setting's log-likelihoods)."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import torch

import layerfast as lf
from layerfast.estimators.ablation import ablation_masks
from layerfast.evaluation.cache import UtilityCache
from tests.conftest import make_tiny_llama

N = 6


def make_game(model, task, **kw):
    kw.setdefault("utility", "acc")
    return lf.Game(model, task, progress=False, **kw)


class Killed(Exception):
    pass


@pytest.mark.parametrize("commits", [0, 1, 4, 9, 13])
def test_resume_runs_only_the_batches_not_stored(tiny_llama, tiny_task, tmp_path, commits):
    """A kill after ``commits`` batch transactions: the next game runs every (coalition, batch)
    pair not stored and nothing else, and its results are bit-identical to an uninterrupted run."""
    path, masks = tmp_path / "c.sqlite", ablation_masks(N)
    killed = make_game(tiny_llama, tiny_task, cache=path, batch_tokens=64, chunk=3)
    n_batches = len(killed.executor.batches)
    assert n_batches >= 5
    original, calls = killed._cache.put_partials, []

    def put_partials(key, batch, rows):
        if len(calls) == commits:
            raise Killed  # the batch in flight is lost
        calls.append([m for m, _ in rows])
        original(key, batch, rows)

    killed._cache.put_partials = put_partials
    with pytest.raises(Killed):
        killed(masks)
    lost = killed.n_batches_run - sum(len(c) for c in calls)
    assert 1 <= lost <= 3  # one batch of the (at most 3) coalitions in flight
    cache = UtilityCache(path)
    stored = cache.count(killed.cache_key) * n_batches + cache.count_partials(killed.cache_key)
    assert stored == sum(len(c) for c in calls)

    resumed = make_game(tiny_llama, tiny_task, cache=path, batch_tokens=64, chunk=3)
    u = resumed(masks)
    assert resumed.n_batches_run == len(masks) * n_batches - stored
    fresh = make_game(tiny_llama, tiny_task, batch_tokens=64, chunk=3)
    np.testing.assert_array_equal(u, fresh(masks))
    np.testing.assert_array_equal(resumed.loglik(masks), fresh.loglik(masks))
    assert fresh.n_batches_run == len(masks) * n_batches
    assert cache.count_partials() == 0 and cache.count(resumed.cache_key) == len(masks)


def test_partials_are_written_per_batch_in_one_transaction(tiny_llama, tiny_task, tmp_path):
    path = tmp_path / "c.sqlite"
    game = make_game(tiny_llama, tiny_task, cache=path, batch_tokens=64, chunk=4)
    seen = []
    original = game._cache.put_partials

    def put_partials(key, batch, rows):
        rows = list(rows)
        with sqlite3.connect(path) as db:  # what another process sees before this commit
            before = db.execute("SELECT COUNT(*) FROM partials").fetchone()[0]
        original(key, batch, rows)
        seen.append((batch, len(rows), before))

    game._cache.put_partials = put_partials
    game(ablation_masks(N))
    n_batches = len(game.executor.batches)
    assert [b for b, _, _ in seen] == list(range(n_batches)) * 2  # chunks of 4 and 3: batches
    assert [k for _, k, _ in seen] == [4] * n_batches + [3] * n_batches  # in the outer loop
    assert [s for _, _, s in seen[:n_batches]] == [4 * b for b in range(n_batches)]


def cached_game(model, task, path, **kw):
    game = make_game(model, task, cache=path, **kw)
    game(ablation_masks(N)[:3])
    return game


def test_every_option_that_changes_the_numbers_is_in_the_key(tiny_llama, tiny_task, tmp_path):
    path = tmp_path / "c.sqlite"
    base = cached_game(tiny_llama, tiny_task, path, batch_tokens=64)
    assert base.n_forward == 3
    same = cached_game(tiny_llama, tiny_task, path, batch_tokens=64)
    assert same.n_forward == 0 and same.cache_key == base.cache_key

    variants = {
        "batch_tokens": dict(batch_tokens=4096),
        "pack": dict(batch_tokens=64, pack=False),
        "max_length": dict(batch_tokens=64, max_length=100),
    }
    keys = {base.cache_key}
    for name, kw in variants.items():
        g = cached_game(tiny_llama, tiny_task, path, **kw)
        assert g.n_forward == 3, name  # recomputed, not served base's rows
        keys.add(g.cache_key)
    # the batches really differ, so their numbers may differ in the last bits
    assert len(make_game(tiny_llama, tiny_task, batch_tokens=4096).executor.batches) < len(
        base.executor.batches
    )

    # dtype: the same weights in bf16
    bf16 = make_tiny_llama(tiny_llama.tokenizer)
    bf16.hf_model.to(torch.bfloat16)
    g = cached_game(bf16, tiny_task, path, batch_tokens=64)
    assert g.n_forward == 3 and "bfloat16" in g.cache_key[1]
    keys.add(g.cache_key)

    # vocabulary chunk of the LM head: a different running log-sum-exp
    g = make_game(tiny_llama, tiny_task, batch_tokens=64)
    g.executor.vocab_chunk = 16
    keys.add(g._make_key(64, "cpu").columns())
    assert not np.array_equal(g.loglik(np.ones(N, bool)), base.loglik(np.ones(N, bool)))

    # device: the key's third part; rows stored for the CPU are not served for another device
    assert base.cache_key[2] == "cpu"
    other_device = (*base.cache_key[:2], "cuda")
    assert UtilityCache(path).get(other_device, ["111111"]) == {}
    assert len(keys) == 1 + len(variants) + 2  # base, the variants, bf16, vocab chunk


def test_executor_is_not_in_the_key(tiny_llama, tiny_task, tmp_path):
    """prefix and naive are bit-identical (tests/evaluation/test_prefix_executor.py), so a
    naive game is served the prefix game's rows."""
    path = tmp_path / "c.sqlite"
    prefix = cached_game(tiny_llama, tiny_task, path, executor="prefix")
    naive = cached_game(tiny_llama, tiny_task, path, executor="naive")
    assert naive.cache_key == prefix.cache_key and naive.n_forward == 0
    fresh = make_game(tiny_llama, tiny_task, executor="naive")
    masks = ablation_masks(N)[:3]
    np.testing.assert_array_equal(fresh.loglik(masks), prefix.loglik(masks))


def test_partials_of_another_layout_are_ignored(tiny_llama, tiny_task, tmp_path):
    """A stored piece whose length does not match its batch is recomputed, not trusted."""
    path = tmp_path / "c.sqlite"
    game = make_game(tiny_llama, tiny_task, cache=path, batch_tokens=64)
    cache = UtilityCache(path)
    cache.put_partials(game.cache_key, 0, [("111111", np.zeros(999))])
    cache.put_partials(game.cache_key, 10_000, [("111111", np.zeros(1))])
    got = game.loglik(np.ones(N, bool))
    want = make_game(tiny_llama, tiny_task, batch_tokens=64).loglik(np.ones(N, bool))
    np.testing.assert_array_equal(got, want)
    assert game.n_batches_run == len(game.executor.batches)
    assert cache.count_partials() == 0


def old_key(game) -> tuple[str, str, str]:
    """The key as layerfast 0.2 built it (evaluation/game.py ``_cache_key``, written out here):
    a cache written before the task contract and the CacheKey must still be read."""
    import hashlib

    parts = []
    for r in game.requests:  # 0.2 named the two indices item and choice
        parts.append(np.asarray((r.group, r.unit, len(r.input_ids), len(r.targets)), np.int64))
        parts += [np.asarray(r.input_ids, np.int64), np.asarray(r.targets, np.int64)]
    requests = hashlib.sha256(np.concatenate(parts).tobytes()).hexdigest()[:16]
    ex, model = game.executor, game.model
    options = "-".join(
        [
            "trie-filled" if ex.pack else "unpacked",
            f"L{game.truncation['max_length']}",
            f"B{game.sizing['batch_tokens']}",
            f"V{ex.vocab_chunk}",
            str(model.dtype).replace("torch.", ""),
            str(model.config._attn_implementation),
        ]
    )
    return model.fingerprint(), f"{game.task.fingerprint()}-{requests}-{options}", "cpu"


def test_caches_written_before_the_cache_key_are_read(tiny_llama, tiny_task, tmp_path):
    game = make_game(tiny_llama, tiny_task, batch_tokens=64)
    assert game.cache_key == old_key(game)
    path = tmp_path / "c.sqlite"
    rows = make_game(tiny_llama, tiny_task, batch_tokens=64).loglik(ablation_masks(N))
    UtilityCache(path).put_many(old_key(game), zip(["111111", "011111"], rows[:2]))
    reader = make_game(tiny_llama, tiny_task, batch_tokens=64, cache=path)
    np.testing.assert_array_equal(reader.loglik(ablation_masks(N)[:2]), rows[:2])
    assert reader.n_forward == 0


def test_cache_key_columns_round_trip_and_unfinished_elsewhere(tiny_llama, tiny_task, tmp_path):
    import dataclasses

    from layerfast.evaluation.cache import CacheKey

    key = make_game(tiny_llama, tiny_task, batch_tokens=64).key
    assert CacheKey.parse(key.columns()) == key
    assert CacheKey.parse(("m", "not-a-key", "cpu")) is None
    cache = UtilityCache(tmp_path / "c.sqlite")
    other = dataclasses.replace(key, batch_tokens=128)
    cache.put_partials(other, 0, [("111111", np.zeros(3)), ("011111", np.zeros(3))])
    cache.put_partials(dataclasses.replace(key, max_length=7), 0, [("111111", np.zeros(3))])
    assert cache.unfinished_elsewhere(key) == {128: 2}  # only the batch_tokens twin counts
    assert cache.unfinished_elsewhere(other) == {}
