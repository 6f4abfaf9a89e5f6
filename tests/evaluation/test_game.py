"""The Game on a tiny random Llama: masks, memo, exactness against HF logits, SQLite resume."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import torch

import layerfast as lf
from layerfast.coalitions import coalition_keys
from layerfast.errors import UsageError
from layerfast.tasks import Task
from tests.helpers.tiny_tokenizer import tiny_tokenizer

N = 6  # players of the tiny 3-block Llama


def make_game(model, task, **kw):
    kw.setdefault("utility", "acc")
    return lf.Game(model, task, progress=False, **kw)


def count_calls(monkeypatch, game, fail_after=None):
    """Wrap game.executor.loglik_many: record the masks it runs; raise (a simulated kill) when a
    call would take the count past ``fail_after``."""
    seen = []
    original = game.executor.loglik_many

    def loglik_many(masks, tick=None, **kw):
        keys = ["".join("1" if b else "0" for b in keep) for keep in masks]
        if fail_after is not None and len(seen) + len(keys) > fail_after:
            raise KeyboardInterrupt("simulated kill")
        seen.extend(keys)
        return original(masks, tick=tick, **kw)

    monkeypatch.setattr(game.executor, "loglik_many", loglik_many)
    return seen


def masks_for(*rows):
    return np.array([[c == "1" for c in r] for r in rows], dtype=bool)


def test_players(tiny_llama):
    assert tiny_llama.players == ["attn0", "mlp0", "attn1", "mlp1", "attn2", "mlp2"]
    assert tiny_llama.n_players == N


@pytest.mark.parametrize(
    "bad",
    [
        np.ones((2, N - 1), bool),
        np.ones((2, N + 1), bool),
        np.ones(N + 2, bool),
        np.ones((1, 2, N), bool),
        np.ones((N, 1), bool),
    ],
)
def test_wrong_mask_shape(tiny_llama, tiny_task, bad):
    game = make_game(tiny_llama, tiny_task)
    with pytest.raises(ValueError, match=rf"\[m, {N}\]"):
        game(bad)
    assert game.n_forward == 0


@pytest.mark.parametrize(
    "bad",
    [
        np.full((1, N), 2),
        np.full((2, N), 0.5),
        np.array([["1"] * N]),
    ],
)
def test_non_bool_mask_values(tiny_llama, tiny_task, bad):
    game = make_game(tiny_llama, tiny_task)
    with pytest.raises(ValueError, match=rf"bool.*\[m, {N}\]"):
        game(bad)
    assert game.n_forward == 0


def test_mask_errors_are_usage_errors(tiny_llama, tiny_task):
    game = make_game(tiny_llama, tiny_task)
    with pytest.raises(UsageError, match="attn0..mlp2"):
        game(np.ones((1, N + 1), bool))
    with pytest.raises(UsageError, match="values such as"):
        game(np.full((1, N), np.nan))


def test_zero_one_masks_and_1d_mask_accepted(tiny_llama, tiny_task):
    game = make_game(tiny_llama, tiny_task)
    as_int = game(np.ones((1, N), dtype=int))
    as_1d = game(np.ones(N, dtype=bool))
    assert as_int.shape == as_1d.shape == (1,)
    assert as_int.dtype == np.float64
    assert as_int[0] == as_1d[0]
    assert game.n_forward == 1
    assert game(np.zeros((0, N), bool)).shape == (0,)


def test_duplicates_evaluated_once(tiny_llama, tiny_task, monkeypatch):
    game = make_game(tiny_llama, tiny_task, utility="logprob")
    seen = count_calls(monkeypatch, game)
    masks = masks_for("111111", "011111", "111111", "011111", "111111", "110111")
    u = game(masks)
    assert game.n_forward == 3 and sorted(seen) == ["011111", "110111", "111111"]
    assert u[0] == u[2] == u[4] and u[1] == u[3]
    # asking again costs nothing
    again = game(masks[::-1])
    assert game.n_forward == 3 and len(seen) == 3
    np.testing.assert_array_equal(again, u[::-1])


def reference_loglik(model, task, keep=None):
    """Per-request summed log-probs from full-vocabulary log_softmax of the model's logits, one
    unpadded request at a time (no batching, no chunking)."""
    out = []
    with torch.no_grad():
        for r in task.requests(model.tokenizer):
            ids = torch.tensor([r.input_ids])
            if keep is None:
                logits = model.hf_model(ids).logits[0]  # the untouched HF forward
            else:
                logits = model(ids, keep=keep)[0]
            logp = torch.log_softmax(logits.double(), dim=-1)
            c = len(r.targets)
            positions = torch.arange(len(r.input_ids) - c, len(r.input_ids))
            out.append(logp[positions, torch.tensor(r.targets)].sum().item())
    return np.array(out)


def test_full_mask_matches_independent_log_softmax(tiny_llama, tiny_task):
    assert tiny_llama.dtype == torch.float32
    game = make_game(tiny_llama, tiny_task, batch_tokens=256)  # several padded batches
    assert len(game.executor.batches) > 1
    full = np.ones(N, bool)
    ref = reference_loglik(tiny_llama, tiny_task)
    np.testing.assert_allclose(game.loglik(full)[0], ref, rtol=0, atol=1e-5)

    # utilities computed here from the reference log-likelihoods
    offsets = np.cumsum([0] + [len(it.choices) for it in tiny_task.items])
    acc, acc_norm, logprob = [], [], []
    for it, a, b in zip(tiny_task.items, offsets[:-1], offsets[1:]):
        v = ref[a:b]
        acc.append(float(np.argmax(v) == it.gold))
        acc_norm.append(float(np.argmax(v / np.array([len(c) for c in it.choices])) == it.gold))
        logprob.append(v[it.gold])
    # only compare accuracies where no two choices are within the tolerance (no near ties)
    gaps = [np.min(np.diff(np.sort(ref[a:b]))) for a, b in zip(offsets[:-1], offsets[1:])]
    assert min(gaps) > 1e-4
    assert game(full)[0] == pytest.approx(np.mean(acc), abs=1e-12)
    assert game.with_utility("acc_norm")(full)[0] == pytest.approx(np.mean(acc_norm), abs=1e-12)
    assert game.with_utility("logprob")(full)[0] == pytest.approx(np.mean(logprob), abs=1e-5)
    assert game.n_forward == 1


def test_switched_off_player_changes_loglik(tiny_llama, tiny_task):
    game = make_game(tiny_llama, tiny_task)
    masks = np.ones((N + 1, N), bool)
    masks[np.arange(1, N + 1), np.arange(N)] = False
    ll = game.loglik(masks)
    for j in range(N):
        assert np.max(np.abs(ll[1 + j] - ll[0])) > 1e-4, tiny_llama.players[j]
    # and the executor agrees with the SublayerModel forward with the same keep-mask
    np.testing.assert_allclose(
        ll[2], reference_loglik(tiny_llama, tiny_task, keep=masks[2]), rtol=0, atol=1e-5
    )


SWEEP = masks_for(
    "111111",
    "011111",
    "101111",
    "110111",
    "111011",
    "111101",
    "111110",
    "001111",
    "100111",
    "000000",
)


@pytest.mark.parametrize("k, chunk", [(0, 1), (4, 1), (4, 3)])
def test_resume_after_kill(tiny_llama, tiny_task, tmp_path, monkeypatch, k, chunk):
    """A kill between chunks loses nothing: every finished chunk is already on disk (kills inside
    a chunk: tests/evaluation/test_cache.py and test_kill_resume.py)."""
    path = tmp_path / "utilities.sqlite"
    m = len(SWEEP)
    killed = make_game(tiny_llama, tiny_task, cache=path)
    killed.chunk = chunk
    done = count_calls(monkeypatch, killed, fail_after=k)
    with pytest.raises(KeyboardInterrupt):
        killed(SWEEP)
    k = (k // chunk) * chunk  # coalitions of the chunks that finished before the kill
    assert len(done) == k

    resumed = make_game(tiny_llama, tiny_task, cache=path)
    new = count_calls(monkeypatch, resumed)
    u = resumed(SWEEP)
    assert len(new) == m - k and resumed.n_forward == m - k
    assert set(new).isdisjoint(done) and len(set(new) | set(done)) == m

    uninterrupted = make_game(tiny_llama, tiny_task)  # memory only
    np.testing.assert_array_equal(u, uninterrupted(SWEEP))
    np.testing.assert_array_equal(resumed.loglik(SWEEP), uninterrupted.loglik(SWEEP))
    assert uninterrupted.n_forward == m

    # a third game on the same file runs nothing, whatever utility it scores
    third = make_game(tiny_llama, tiny_task, cache=path, utility="margin")
    third_seen = count_calls(monkeypatch, third)
    third(SWEEP)
    assert third_seen == [] and third.n_forward == 0


def test_cache_rows_are_keyed_by_coalition_key(tiny_llama, tiny_task, tmp_path):
    """The on-disk key of a coalition is its '0'/'1' string, so rows written earlier are reused."""
    path = tmp_path / "c.sqlite"
    game = make_game(tiny_llama, tiny_task, cache=path)
    game(SWEEP[:3])
    with sqlite3.connect(path) as db:
        stored = {row[0] for row in db.execute("SELECT mask FROM coalitions")}
    assert stored == set(coalition_keys(SWEEP[:3])) == {"111111", "011111", "101111"}


def test_cache_key_changes_with_task_and_tokenisation(
    tiny_llama, tiny_task, task_factory, tmp_path, model_factory
):
    path = tmp_path / "c.sqlite"
    masks = SWEEP[:3]
    base = make_game(tiny_llama, tiny_task, cache=path)
    base(masks)
    assert base.n_forward == 3

    same = make_game(tiny_llama, tiny_task, cache=path)
    same(masks)
    assert same.n_forward == 0

    # a different task (one gold label changed) is recomputed
    rows = [(it.context, list(it.choices), it.gold) for it in tiny_task.items]
    rows[0] = (rows[0][0], rows[0][1], 1)
    other_task = make_game(tiny_llama, task_factory(rows, name="tiny"), cache=path)
    other_task(masks)
    assert other_task.n_forward == 3

    # the same task with another delimiter tokenises differently: recomputed
    nodelim = Task(tiny_task.name, tiny_task.items, delimiter="")
    g = make_game(tiny_llama, nodelim, cache=path)
    g(masks)
    assert g.n_forward == 3

    # the same weights and task with another tokenizer: recomputed
    other_tok = tiny_tokenizer(vocab_size=300)
    assert tiny_task.requests(other_tok) != tiny_task.requests(tiny_llama.tokenizer)
    retok = lf.load(tiny_llama.hf_model, tokenizer=other_tok)
    g = make_game(retok, tiny_task, cache=path)
    g(masks)
    assert g.n_forward == 3

    # other weights: recomputed
    other_model = model_factory(tiny_llama.tokenizer, seed=1)
    g = make_game(other_model, tiny_task, cache=path)
    g(masks)
    assert g.n_forward == 3

    # and the first key is still served
    again = make_game(tiny_llama, tiny_task, cache=path)
    np.testing.assert_array_equal(again(masks), base(masks))
    assert again.n_forward == 0


def test_with_utility_shares_the_memo(tiny_llama, tiny_task, monkeypatch):
    acc = make_game(tiny_llama, tiny_task, utility="acc")
    seen = count_calls(monkeypatch, acc)
    masks = SWEEP[:5]
    u_acc = acc(masks)
    assert len(seen) == 5
    assert acc.chance == pytest.approx(tiny_task.chance)

    norm = acc.with_utility("acc_norm")
    u_norm = norm(masks)
    assert len(seen) == 5 and norm.n_forward == acc.n_forward == 5  # no new forward passes
    assert norm.utility == "acc_norm" and acc.utility == "acc"
    fresh = make_game(tiny_llama, tiny_task, utility="acc_norm")
    np.testing.assert_array_equal(u_norm, fresh(masks))
    np.testing.assert_array_equal(u_acc, acc(masks))

    smooth = acc.with_utility("logprob")
    assert smooth.chance is None
    smooth(masks)
    assert len(seen) == 5
    with pytest.raises(ValueError, match="unknown utility"):
        acc.with_utility("f1")


def test_unknown_utility_and_executor(tiny_llama, tiny_task):
    with pytest.raises(ValueError, match="unknown utility"):
        make_game(tiny_llama, tiny_task, utility="accuracy")
    with pytest.raises(ValueError, match="executor"):
        make_game(tiny_llama, tiny_task, executor="magic")
