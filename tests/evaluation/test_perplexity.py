"""Perplexity against the plain HF forward with a full log-softmax, and under a coalition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from layerfast.evaluation.perplexity import perplexity

TEXTS = [
    "the cat sat on the mat and the dog sat on the log",
    "Q: What is the capital of France?\nA: Paris",
    "x",
]


def reference(model, texts, keep=None):
    tok = model.tokenizer
    nll, n = 0.0, 0
    for text in texts:
        ids = [tok.bos_token_id] + tok.encode(text)
        if len(ids) < 2:
            continue
        x = torch.tensor([ids])
        with torch.no_grad():
            logits = model(x, keep=keep) if keep is not None else model.hf_model(x).logits
        lp = torch.log_softmax(logits[0, :-1].float(), -1)[torch.arange(len(ids) - 1), x[0, 1:]]
        nll -= lp.double().sum().item()
        n += len(ids) - 1
    return math.exp(nll / n)


def test_matches_full_softmax(tiny_llama):
    assert perplexity(tiny_llama, TEXTS, batch_size=2) == pytest.approx(
        reference(tiny_llama, TEXTS), rel=1e-5
    )


def test_coalition_changes_it(tiny_llama):
    keep = np.ones(tiny_llama.n_players, bool)
    keep[1] = False
    got = perplexity(tiny_llama, TEXTS, keep=keep)
    assert got == pytest.approx(reference(tiny_llama, TEXTS, keep=keep), rel=1e-5)
    assert got != pytest.approx(perplexity(tiny_llama, TEXTS), rel=1e-6)


def test_bad_input(tiny_llama):
    with pytest.raises(TypeError):
        perplexity(tiny_llama, "one string")
    with pytest.raises(ValueError, match="two or more tokens"):
        perplexity(tiny_llama, [""])
