"""Batch size and the prefix executor's memory budget: fixed on the CPU, from the free memory on
CUDA (faked here: a config and a free-byte count, or ``torch.cuda.mem_get_info`` replaced), and
a warning when a cache holds unfinished work for another batch size."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import LlamaConfig

import layerfast as lf
from layerfast.cli import build_parser, main
from layerfast.cli.checks import check_flags
from layerfast.cli.values import batch_tokens as flag_batch_tokens
from layerfast.cli.values import memory_budget as flag_memory_budget
from layerfast.errors import LayerfastWarning, UsageError
from layerfast.evaluation import sizing
from layerfast.evaluation.batching import FILL_TOKENS, batch_rows, build_rows
from layerfast.evaluation.logprobs import DEFAULT_VOCAB_CHUNK
from layerfast.evaluation.sizing import (
    CPU_BATCH_TOKENS,
    CPU_MEMORY_BUDGET,
    MAX_BATCH_TOKENS,
    MIB,
    MIN_BATCH_TOKENS,
    batch_tokens_for,
    bytes_per_token,
    longest_row,
    memory_budget_for,
    resolve_sizes,
)

GIB = 1 << 30
FREE = [int(g * GIB) for g in (0.25, 0.5, 1, 3, 7, 13, 40, 78, 139, 1000)]


def config(hidden=4096, vocab=128256, inter=14336, heads=32, kv=8, attn="sdpa", **kw):
    c = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=inter,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        num_hidden_layers=1,
        **kw,
    )
    c._attn_implementation = attn
    return c


def fake(cfg=None, dtype=torch.bfloat16, device="cuda:0", device_map=None):
    """What sizing reads of a SublayerModel: config, dtype, device, hf_model.hf_device_map."""
    hf = SimpleNamespace(hf_device_map=device_map) if device_map else SimpleNamespace()
    return SimpleNamespace(
        config=cfg or config(), dtype=dtype, device=torch.device(device), hf_model=hf
    )


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def make_game(model, task, **kw):
    kw.setdefault("utility", "acc")
    return lf.Game(model, task, progress=False, **kw)


# --- the CPU: today's values, exactly ------------------------------------------------------------
def test_cpu_auto_keeps_2048_tokens_and_1_gib(tiny_llama, tiny_task):
    assert (CPU_BATCH_TOKENS, CPU_MEMORY_BUDGET) == (2048, 1 << 30)
    tokens, budget, how = resolve_sizes(tiny_llama, "auto", None)
    assert (tokens, budget) == (2048, 1 << 30) and "CPU" in how
    assert batch_tokens_for(tiny_llama, None) == 2048
    assert memory_budget_for(tiny_llama, None) == 1 << 30
    game = make_game(tiny_llama, tiny_task)
    assert game.sizing["batch_tokens"] == 2048 and game.sizing["memory_budget"] == 1 << 30
    assert game.executor.memory_budget == 1 << 30
    assert "B2048-" in game.cache_key[1]  # the key CPU caches were written under


def test_cpu_auto_never_reads_cuda_memory(tiny_llama, monkeypatch):
    def boom(*args):
        raise AssertionError("mem_get_info read for a model on the CPU")

    monkeypatch.setattr(torch.cuda, "mem_get_info", boom)
    assert resolve_sizes(tiny_llama)[:2] == (2048, 1 << 30)


# --- CUDA: from the free memory and the model's shape --------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seq_len", [1, 37, 2048])
def test_cuda_batch_tokens_are_clamped_powers_of_two_growing_with_free_memory(dtype, seq_len):
    model = fake(dtype=dtype)
    values = [batch_tokens_for(model, free, seq_len) for free in FREE]
    assert all(is_power_of_two(v) and MIN_BATCH_TOKENS <= v <= MAX_BATCH_TOKENS for v in values)
    assert values == sorted(values) and values[0] < values[-1], values
    assert values[0] == MIN_BATCH_TOKENS and values[-1] == MAX_BATCH_TOKENS
    # the forward's estimate at the chosen size fits its share of the free memory
    per_token = sizing.SAFETY * bytes_per_token(model.config, dtype, seq_len)
    for free, v in zip(FREE, values):
        if MIN_BATCH_TOKENS < v:
            assert v * per_token <= sizing.FORWARD_SHARE * free
        if v < MAX_BATCH_TOKENS:  # and twice it would not
            assert 2 * v * per_token > sizing.FORWARD_SHARE * free


def test_cuda_batch_tokens_shrink_with_hidden_vocab_and_eager_attention():
    free = 20 * GIB

    def tokens(**kw):
        return batch_tokens_for(fake(config(**kw)), free, 512)

    by_hidden = [tokens(hidden=h, inter=4 * h, heads=h // 128, kv=h // 128) for h in (1024, 4096)]
    by_hidden += [tokens(hidden=h, inter=4 * h, heads=h // 128, kv=h // 128) for h in (8192,)]
    assert by_hidden == sorted(by_hidden, reverse=True) and by_hidden[0] > by_hidden[-1]
    # a small model's log-prob step: vocabularies up to the LM head's chunk grow its logits
    small = dict(hidden=256, inter=512, heads=4, kv=4)
    by_vocab = [tokens(vocab=v, **small) for v in (500, 2000, DEFAULT_VOCAB_CHUNK, 200_000)]
    assert by_vocab == sorted(by_vocab, reverse=True) and by_vocab[0] > by_vocab[-1]
    per = [bytes_per_token(config(vocab=v, **small), torch.bfloat16) for v in (500, 2000, 8192)]
    assert per[0] < per[1] < per[2]
    # beyond the chunk the vocabulary is walked chunk by chunk: no more memory per token
    assert bytes_per_token(config(vocab=8192, **small), torch.bfloat16) == bytes_per_token(
        config(vocab=200_000, **small), torch.bfloat16
    )
    assert tokens(attn="eager") <= tokens(attn="sdpa")
    assert bytes_per_token(config(attn="eager"), torch.bfloat16, 512) > bytes_per_token(
        config(attn="sdpa"), torch.bfloat16, 512
    )


def test_cuda_memory_budget_takes_what_the_forward_leaves():
    model = fake()
    budgets = [memory_budget_for(model, free) for free in FREE]
    assert all(b % MIB == 0 and b >= 0 for b in budgets)
    assert budgets == sorted(budgets) and budgets[0] == 0 and budgets[-1] > 0
    free = 78 * GIB
    assert memory_budget_for(model, free) == (free // 2 - sizing.MARGIN) // MIB * MIB
    # a batch given by hand that needs more than half leaves less for the states
    big = memory_budget_for(model, free, batch_tokens=MAX_BATCH_TOKENS * 4, seq_len=512)
    assert big < memory_budget_for(model, free, batch_tokens=256, seq_len=512)


def test_cuda_resolve_reads_the_smallest_free_memory_of_the_models_devices(monkeypatch):
    free = {0: 70 * GIB, 1: 9 * GIB, 2: 500 * GIB}
    asked = []

    def mem_get_info(device):
        asked.append(torch.device(device).index)
        return free[torch.device(device).index], 80 * GIB

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    model = fake()
    tokens, budget, how = resolve_sizes(model, "auto", "AUTO", seq_len=300)
    assert tokens == batch_tokens_for(model, free[0], 300)
    assert budget == memory_budget_for(model, free[0], tokens, 300)
    assert "70.0 GiB free on cuda:0" in how

    spread = fake(device_map={"embed": 0, "layers.0": 1, "layers.1": "cuda:2", "head": "cpu"})
    spread_map = spread.hf_model.hf_device_map
    spread_map["offloaded"] = "disk"
    asked.clear()
    tokens, budget, how = resolve_sizes(spread, None, None, seq_len=300)
    assert sorted(asked) == [0, 1, 2]
    assert tokens == batch_tokens_for(spread, free[1], 300) < batch_tokens_for(model, free[0], 300)
    assert "on cuda:1" in how

    # a value given by hand is used as given; the other is still chosen from the free memory
    tokens, budget, how = resolve_sizes(model, 4096, "auto", seq_len=300)
    assert tokens == 4096 and budget == memory_budget_for(model, free[0], 4096, 300)
    assert "batch_tokens given" in how and "memory_budget auto" in how
    asked.clear()
    assert resolve_sizes(model, 100, 0)[:2] == (100, 0) and not asked


# --- explicit values and bad ones ----------------------------------------------------------------
def test_explicit_values_pass_through_to_the_executor(tiny_llama, tiny_task):
    game = make_game(tiny_llama, tiny_task, batch_tokens=64, memory_budget=5000)
    assert game.sizing == {
        "batch_tokens": 64,
        "memory_budget": 5000,
        "how": "batch_tokens given; memory_budget given",
    }
    assert game.executor.memory_budget == 5000 and "-B64-" in game.cache_key[1]
    assert all(b.input_ids.numel() <= 64 for b in game.executor.batches)
    naive = make_game(tiny_llama, tiny_task, executor="naive", batch_tokens=64.0, memory_budget=0)
    assert naive.sizing["batch_tokens"] == 64 and naive.cache_key == game.cache_key


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "many", "4GiB", [64]])
def test_bad_batch_tokens_is_a_usage_error_naming_it(tiny_llama, tiny_task, bad):
    with pytest.raises(UsageError, match="batch_tokens"):
        make_game(tiny_llama, tiny_task, batch_tokens=bad)


@pytest.mark.parametrize("bad", [-1, 0.5, False, "4GiB", "lots"])
def test_bad_memory_budget_is_a_usage_error_naming_it(tiny_llama, tiny_task, bad):
    with pytest.raises(UsageError, match="memory_budget"):
        make_game(tiny_llama, tiny_task, memory_budget=bad)


def test_longest_row_is_the_longest_row_the_batches_hold(tiny_llama, tiny_task, task_factory):
    game = make_game(tiny_llama, tiny_task)
    for pack in (True, False):
        rows = batch_rows(game.requests, pack, FILL_TOKENS)  # short trie rows filled side by side
        assert longest_row(game.requests, pack) == max(len(r.input_ids) for r in rows), pack
        held = max(b.input_ids.shape[1] for b in game.executor.batches)
        assert not pack or longest_row(game.requests, pack) == held
    # choices left-truncated to different contexts: one row per choice, bounded from above
    long = task_factory([("the cat sat on the mat " * 6, ["dog", "lazy dog fox"], 0)], "long")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LayerfastWarning)
        game = make_game(tiny_llama, long, max_length=20)
    rows = build_rows(game.requests, True)
    assert longest_row(game.requests, True) >= max(len(r.input_ids) for r in rows)


# --- resuming: a cache whose only difference is batch_tokens -------------------------------------
def test_warns_when_the_cache_holds_unfinished_work_for_another_batch_size(
    tiny_llama, tiny_task, tmp_path
):
    path = tmp_path / "c.sqlite"
    killed = make_game(tiny_llama, tiny_task, cache=path, batch_tokens=64)
    n = len(killed.executor.batches[0].request_index)
    killed._cache.put_partials(
        killed.cache_key, 0, [("111111", np.zeros(n)), ("011111", np.ones(n))]
    )

    with pytest.warns(LayerfastWarning, match=r"2 unfinished .*batch_tokens=64.*--batch-tokens 64"):
        make_game(tiny_llama, tiny_task, cache=path, batch_tokens=128)
    with pytest.warns(LayerfastWarning, match="batch_tokens=64"):
        make_game(tiny_llama, tiny_task, cache=path)  # auto: 2048 on the CPU
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayerfastWarning)
        resumed = make_game(tiny_llama, tiny_task, cache=path, batch_tokens=64)  # the same key
        make_game(tiny_llama, tiny_task, cache=path, batch_tokens=128, pack=False)  # more differs
        make_game(tiny_llama, tiny_task, batch_tokens=128)  # no cache
    assert resumed._cache.get_partials(resumed.cache_key, ["111111"])["111111"][0].shape == (n,)

    # finished coalitions leave no partials behind, so no warning
    other = tmp_path / "finished.sqlite"
    make_game(tiny_llama, tiny_task, cache=other, batch_tokens=64)(np.ones((1, 6), bool))
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayerfastWarning)
        make_game(tiny_llama, tiny_task, cache=other, batch_tokens=128)


# --- the command line ----------------------------------------------------------------------------
def parse(*argv):
    args = build_parser().parse_args(["ablate", *argv])
    check_flags(args)
    return args


@pytest.mark.parametrize(
    "text, want",
    [
        ("4GiB", 4 << 30),
        ("512MiB", 512 << 20),
        ("1.5gib", 3 << 29),
        ("2 GB", 2 * 10**9),
        ("1073741824", 1 << 30),
        ("0", 0),
        ("auto", None),
        ("Auto", None),
    ],
)
def test_memory_budget_flag(text, want):
    assert flag_memory_budget(parse("--memory-budget", text)) == want


def test_batch_tokens_flag():
    assert flag_batch_tokens(parse()) is None  # default: auto
    assert flag_batch_tokens(parse("--batch-tokens", "auto")) is None
    assert flag_batch_tokens(parse("--batch-tokens", "4096")) == 4096
    assert flag_memory_budget(parse()) is None


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--memory-budget", "4GB?"),
        ("--memory-budget", "-1GiB"),
        ("--memory-budget", "GiB"),
        ("--memory-budget", "4 parsecs"),
        ("--batch-tokens", "0"),
        ("--batch-tokens", "-3"),
        ("--batch-tokens", "2.5"),
        ("--batch-tokens", "lots"),
    ],
)
def test_bad_sizing_flags_fail_before_the_model_loads(flag, value, capsys, tmp_path, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("the model loaded although a flag was bad")

    monkeypatch.setattr(lf, "load", no_load)
    with pytest.raises(UsageError, match=flag):
        parse(f"{flag}={value}")  # "=": argparse would read -1GiB as a flag
    rc = main(["ablate", "--out", str(tmp_path / "out"), "--no-progress", f"{flag}={value}"])
    err = capsys.readouterr().err
    assert rc == 2 and flag in err and repr(value) in err, err
    assert not (tmp_path / "out").exists()
