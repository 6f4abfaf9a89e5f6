"""Shared fixtures: an in-memory tokenizer, a tiny random Llama as a SublayerModel, a tiny task.

Everything here is built locally in well under a second; nothing is downloaded. The model and
task are session-scoped: tests must not modify them (build a Game per test instead).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# Make `tests.helpers.tiny_tokenizer` / `tests.helpers.tiny_models` importable under a plain
# `pytest` run too.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from layerfast.tasks import Item, Task  # noqa: E402
from tests.helpers.tiny_tokenizer import tiny_tokenizer  # noqa: E402

# The test models are tiny: with several intra-op threads on a busy 2-core machine each matmul
# waits on thread hand-offs (a forward pass went from ~20 ms to ~2 s). One thread is fastest.
torch.set_num_threads(1)

# Without CUDA the Triton kernels run in Triton's interpreter; it must be chosen before they load.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


# The device suite (tests/gpu, marked gpu) runs where CUDA is, or on the device that
# LAYERFAST_TEST_DEVICE names (``cpu`` with TRITON_INTERPRET=1: the dry run that keeps it alive).
TEST_DEVICE_ENV = "LAYERFAST_TEST_DEVICE"
GPU_SKIP_REASON = "needs CUDA (or LAYERFAST_TEST_DEVICE=cpu for the dry run)"


def pytest_collection_modifyitems(config, items):
    """``LAYERFAST_OFFLINE=1`` skips the tests marked slow (they download packaged data); tests
    marked gpu are skipped without CUDA unless ``LAYERFAST_TEST_DEVICE`` names a device."""
    if os.environ.get("LAYERFAST_OFFLINE") == "1":
        skip = pytest.mark.skip(reason="LAYERFAST_OFFLINE=1: slow tests download data")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)
    if not torch.cuda.is_available() and not os.environ.get(TEST_DEVICE_ENV, "").strip():
        skip_gpu = pytest.mark.skip(reason=GPU_SKIP_REASON)
        for item in items:
            if item.get_closest_marker("gpu") is not None:
                item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_tokenizer_fixture():
    return tiny_tokenizer()


def make_tiny_llama(tokenizer, seed: int = 0, **config_overrides):
    """A seeded random 3-block LlamaForCausalLM (6 players) wrapped as a SublayerModel;
    ``config_overrides`` go to its LlamaConfig (e.g. ``initializer_range``)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import layerfast as lf

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        **config_overrides,
    )
    torch.manual_seed(seed)
    hf_model = LlamaForCausalLM(config).float().eval()
    return lf.load(hf_model, tokenizer=tokenizer)


@pytest.fixture(scope="session")
def tiny_llama(tiny_tokenizer_fixture):
    return make_tiny_llama(tiny_tokenizer_fixture)


# (context, choices, gold): 12 items with 2, 3 and 4 choices, words the tiny tokenizer knows,
# choices of different lengths (so acc and acc_norm can differ) and a few non-ASCII ones.
TINY_ITEMS = [
    ("Q: What is the capital of France?\nA:", ["Paris", "Lima", "Quito"], 0),
    ("Q: What is the capital of Peru?\nA:", ["Lima", "Caracas"], 0),
    ("Athens is to Greece as Baghdad is to", ["Iraq", "Greece", "Mars", "Paris"], 0),
    ("The quick brown fox jumps over the", ["lazy dog", "cat"], 0),
    ("the cat sat on the", ["mat", "log", "dog"], 0),
    ("Which planet is known as the red planet?", ["Venus", "Mars", "Jupiter", "Saturn"], 1),
    ("Q: What is the capital of Venezuela?\nA:", ["Bogota", "Caracas", "Sucre"], 1),
    ("the dog sat on the", ["log", "mat"], 0),
    ("Q: What is the capital of Japan?\nA:", ["Москва", "東京", "Lima", "Paris"], 1),
    ("Q: What is the capital of Uruguay?\nA:", ["Montevideo", "Asuncion"], 0),
    ("A word borrowed from French:", ["élan", "dog", "fox"], 0),
    ("Q: What is the capital of Bolivia?\nA:", ["Santiago", "La Paz", "Quito", "Lima"], 1),
]


def make_task(rows=TINY_ITEMS, name: str = "tiny") -> Task:
    items = [
        Item(ctx, tuple(choices), gold, f"{name}-{i}")
        for i, (ctx, choices, gold) in enumerate(rows)
    ]
    return Task(name, items)


@pytest.fixture(scope="session")
def tiny_task():
    return make_task()


@pytest.fixture(scope="session")
def task_factory():
    """``task_factory(rows, name)`` -> Task from (context, choices, gold) rows."""
    return make_task


@pytest.fixture(scope="session")
def model_factory():
    """``model_factory(tokenizer, seed)`` -> a tiny random Llama SublayerModel."""
    return make_tiny_llama
