"""The thread-count rule of :mod:`layerfast.threads` (issue 13, item 9): one thread for small
work, every available core above the threshold; the CLI side is in tests/cli/test_cli.py."""

from __future__ import annotations

import os

import pytest
import torch

from layerfast import threads


def test_small_work_gets_one_thread_large_work_every_core():
    # the tiny test models (hidden 32) and the packaged SmolLM2-135M (hidden 576), 2048 tokens
    assert threads.choose(32, 2048, cores=2) == 1
    assert threads.choose(576, 2048, cores=2) == 2
    assert threads.choose(576, 2048, cores=16) == 16
    assert threads.choose(576, 64, cores=16) == 1  # few tokens per batch: small work again


def test_threshold_is_on_tokens_times_hidden_squared():
    hidden = 256
    tokens = threads.WORK_THRESHOLD // hidden**2
    assert threads.work(hidden, tokens) == threads.WORK_THRESHOLD
    assert threads.choose(hidden, tokens, cores=4) == 4
    assert threads.choose(hidden, tokens - 1, cores=4) == 1


def test_hidden_size_of_models_and_configs(tiny_llama):
    assert threads.hidden_size(tiny_llama) == 32
    assert threads.hidden_size(tiny_llama.hf_model) == 32
    assert threads.hidden_size(tiny_llama.hf_model.config) == 32
    assert threads.choose(tiny_llama, 2048, cores=2) == 1
    with pytest.raises(TypeError):
        threads.hidden_size("a string")


def test_available_respects_affinity_and_omp(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.available() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert threads.available() == 2
    assert threads.choose(576, 2048) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert threads.available() == 4


def test_apply_and_restore():
    before = torch.get_num_threads()
    try:
        assert threads.apply(2) == 2 and torch.get_num_threads() == 2
        threads.apply(3)
        assert torch.get_num_threads() == 3
        threads.restore()
        assert torch.get_num_threads() == before
        threads.restore()  # nothing to restore: no change
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)
