"""The executors and ``lf.Game`` on the test device, with a tiny random Llama (eager and SDPA
attention, fp32 and bf16).

* The prefix-cached executor against the naive one, bit for bit, over ablation,
  proximity-window and random coalitions (duplicates, the empty and the full one included), with
  and without packing, for state budgets that keep every state, none, and one per batch.
* Packed rows (``pack=True``) against unpacked ones, within the tolerance below.
* ``lf.Game`` end to end: its log-likelihoods and utilities equal a direct executor run on the
  same batches, and a second Game on the same cache file serves them without a forward pass.

The CPU versions are :mod:`tests.evaluation.test_prefix_executor` and
:mod:`tests.evaluation.test_batching` (whose task this file uses).

Tolerances, by dtype (per-request summed log-likelihoods, magnitude ~80 nats here):

=========  ===============  ==================  ============================================
dtype      prefix vs naive  packed vs unpacked  Game vs direct executor run
=========  ===============  ==================  ============================================
float32    0 (bit for bit)  2e-5, decisions =   0 (bit for bit; utilities equal)
bfloat16   0 (bit for bit)  0.05                0 (bit for bit; utilities equal)
=========  ===============  ==================  ============================================

Prefix and naive run the same kernels on the same batches (the prefix one only resumes from a
kept state), so they agree exactly on any device. Packed and unpacked rows run different matrix
shapes, so they agree to rounding: the bounds are ``docs/design.md``'s (measured on the CPU at
most 3.4e-6 and 0.011), and in fp32 the acc / acc_norm / acc_bytes decisions must agree too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import layerfast as lf
from layerfast.evaluation.naive_executor import NaiveExecutor
from layerfast.evaluation.prefix_executor import PrefixExecutor
from layerfast.tasks.scoring import Scorer
from tests.evaluation.test_batching import TASK
from tests.helpers.tiny_models import tiny_model

pytestmark = pytest.mark.gpu

PACK_ATOL = {torch.float32: 2e-5, torch.bfloat16: 0.05}
DTYPES = list(PACK_ATOL)
IMPLS = ["sdpa", "eager"]
AMPLE_BUDGET = 1 << 30  # bytes of kept states per batch: every state kept
BATCH_TOKENS = 48  # several batches for the 6-item task
DECISIONS = ("acc", "acc_norm", "acc_bytes")
UTILITIES = ("acc", "acc_norm", "acc_bytes", "logprob", "margin")


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def ablation_masks(n: int) -> np.ndarray:
    """The full coalition, then N minus each player."""
    return np.concatenate([np.ones((1, n), bool), ~np.eye(n, dtype=bool)])


def proximity_masks(n: int, window: int) -> np.ndarray:
    """The full coalition and N minus every contiguous run of 1..window players."""
    rows = [np.ones(n, dtype=bool)]
    for k in range(1, window + 1):
        for start in range(n - k + 1):
            row = np.ones(n, dtype=bool)
            row[start : start + k] = False
            rows.append(row)
    return np.array(rows)


def random_masks(n: int, seed: int) -> np.ndarray:
    """17 random coalitions of varied density, 4 of them again, and the full and empty ones."""
    rng = np.random.default_rng(seed)
    randoms = rng.random((17, n)) < rng.uniform(0.2, 0.9, size=(17, 1))
    full, empty = np.ones((1, n), bool), np.zeros((1, n), bool)
    return np.concatenate([randoms, randoms[:4], full, empty, full])


def mask_sets(n: int) -> dict[str, np.ndarray]:
    return {
        "ablation": ablation_masks(n),
        "proximity3": proximity_masks(n, 3),
        "random": random_masks(n, seed=5),
    }


@pytest.fixture(scope="module")
def llama(device, tiny_tokenizer_fixture):
    """``llama(impl, dtype)`` -> a tiny random Llama SublayerModel on the device, built once."""
    built: dict = {}

    def get(impl: str, dtype: torch.dtype):
        if (impl, dtype) not in built:
            hf = tiny_model(
                "llama", attn_implementation=impl, vocab_size=len(tiny_tokenizer_fixture)
            )
            built[impl, dtype] = lf.load(hf.to(device, dtype), tokenizer=tiny_tokenizer_fixture)
        return built[impl, dtype]

    yield get
    built.clear()


@pytest.mark.parametrize("pack", [False, True], ids=["unpacked", "packed"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("impl", IMPLS)
def test_prefix_bit_identical_to_naive(device, llama, impl, dtype, pack):
    model = llama(impl, dtype)
    assert (model.device.type, model.dtype) == (device.type, dtype)
    requests = TASK.requests(model.tokenizer)
    naive = NaiveExecutor(model, requests, batch_tokens=BATCH_TOKENS, pack=pack)
    assert naive.pack == pack, naive.packing_note
    assert len(naive.batches) > 1
    # every state kept, none, and one per batch (1.5 states of the largest batch)
    largest = max(b.input_ids.numel() for b in naive.batches) * model.config.hidden_size
    budgets = {"ample": AMPLE_BUDGET, "none": 0, "one": int(1.5 * largest * dtype.itemsize)}
    for name, masks in mask_sets(model.n_players).items():
        naive.sublayer_evaluations = 0
        expected = naive.loglik_many(masks)
        assert np.isfinite(expected).all(), name
        if name == "ablation":  # each removal changes the scores (the masks reach the model)
            assert not any(np.array_equal(expected[0], row) for row in expected[1:])
        for budget_name, budget in budgets.items():
            prefix = PrefixExecutor(
                model, requests, batch_tokens=BATCH_TOKENS, pack=pack, memory_budget=budget
            )
            got = prefix.loglik_many(masks)
            worst = np.abs(got - expected).max()
            assert np.array_equal(got, expected), (name, budget_name, f"max diff {worst:.3g}")
            assert prefix.sublayer_evaluations <= naive.sublayer_evaluations, name
            if budget_name != "ample":
                assert prefix.recomputed_steps > 0, (name, budget_name)
            else:
                assert prefix.recomputed_steps == 0, name


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("impl", IMPLS)
def test_packed_matches_unpacked(device, llama, impl, dtype):
    model = llama(impl, dtype)
    requests = TASK.requests(model.tokenizer)
    rng = np.random.default_rng(1)
    masks = np.concatenate(
        [np.ones((1, model.n_players), bool), rng.random((3, model.n_players)) < 0.7]
    )
    packed_ex, plain_ex = (
        PrefixExecutor(model, requests, batch_tokens=64, pack=pack) for pack in (True, False)
    )
    assert packed_ex.pack and not plain_ex.pack
    real_tokens = [
        sum(int(b.input_ids.ne(0).sum()) for b in ex.batches) for ex in (packed_ex, plain_ex)
    ]
    assert real_tokens[0] < real_tokens[1]
    packed, plain = packed_ex.loglik_many(masks), plain_ex.loglik_many(masks)
    worst = np.abs(packed - plain).max()
    assert worst <= PACK_ATOL[dtype], f"max |packed - unpacked| = {worst:.3g}"
    if dtype == torch.float32:
        scorer = Scorer(TASK)
        for u in DECISIONS:
            for a, b in zip(packed, plain, strict=True):
                assert np.array_equal(scorer.predictions(a, u), scorer.predictions(b, u)), u


@pytest.mark.parametrize("pack", [False, True], ids=["unpacked", "packed"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_game_equals_direct_executor_run(device, llama, tiny_task, tmp_path, dtype, pack):
    model = llama("sdpa", dtype)
    masks = random_masks(model.n_players, seed=9)
    cache = tmp_path / "cache.sqlite"
    options = dict(batch_tokens=64, pack=pack, progress=False)
    game = lf.Game(model, tiny_task, utility="acc_norm", cache=cache, chunk=5, **options)
    assert game.executor.name == "prefix" and game.executor.pack == pack
    assert game.cache_key[2] == device.type
    loglik = game.loglik(masks)
    assert game.n_forward == len(np.unique(masks, axis=0))
    values = {u: game.with_utility(u)(masks) for u in UTILITIES}  # from the memo

    direct = NaiveExecutor(model, game.requests, batch_tokens=64, pack=pack)
    assert len(direct.batches) == len(game.executor.batches) > 1
    want = direct.loglik_many(masks)
    assert np.array_equal(loglik, want), f"max diff {np.abs(loglik - want).max():.3g}"
    scorer = Scorer(tiny_task)
    for u in UTILITIES:
        expected = np.array([scorer(row, u) for row in want])
        assert np.array_equal(values[u], expected), u

    again = lf.Game(model, tiny_task, utility="acc_norm", cache=cache, **options)
    assert np.array_equal(again.loglik(masks), want)
    assert again.n_forward == 0
