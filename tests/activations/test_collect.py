"""``lf.stats`` and ``lf.avss`` on a model.

The torch backend's pass against the reference on hidden states captured with forward hooks on
the plain HF model: two fp32 forward passes that are bit-identical, so held to 1e-9 (these run
with ``stats_dtype="model"``; the default counts in bf16, tested on its own). Each compiled
backend on a model's real residual streams against the reference, within twice the reference's
own fp32 error (:mod:`tests.activations.kernel_checks`), and ``lf.stats`` reporting exactly those
accumulators.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import layerfast as lf
from layerfast.activations import dispatch
from layerfast.activations.collect import block_streams, stats, stats_model, summarize
from layerfast.activations.reference import block_stats_ref, empty, merge
from layerfast.errors import LayerfastWarning, UsageError
from layerfast.models.inputs import pad_right
from tests.activations.kernel_checks import BACKEND_PARAMS, assert_matches_reference
from tests.conftest import TINY_ITEMS, make_tiny_llama

METRIC_KEYS = ("av", "as", "avss", "navss", "bi", "angular", "angular_last", "norm", "channel_var")


def captured_blocks(model, ids, mask):
    """Each decoder layer's input and output from hooks on the plain HF model."""
    seen = []

    def hook(mod, args, kwargs, out):
        seen.append((kwargs.get("hidden_states", args[0] if args else None), out))

    hooks = [layer.register_forward_hook(hook, with_kwargs=True) for layer in model.blocks]
    try:
        with torch.no_grad():
            model.hf_model(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_model_pass_matches_hooked_hidden_states(tiny_llama):
    texts = [
        "the cat sat on the mat",
        "Q: What is the capital of France?\nA: Paris",
        "Athens is to Greece",
    ]
    res = stats(
        tiny_llama,
        texts,
        batch_size=2,
        progress=False,
        eps=0.05,
        backend="torch",
        stats_dtype="model",  # the hooks see the fp32 model
    )
    accs = [empty(tiny_llama.config.hidden_size) for _ in range(tiny_llama.n_blocks)]
    tok = tiny_llama.tokenizer
    for start in (0, 2):
        enc = [tok.encode(t) for t in texts[start : start + 2]]
        t_max = max(map(len, enc))
        ids = torch.tensor([e + [0] * (t_max - len(e)) for e in enc])
        mask = torch.tensor([[1] * len(e) + [0] * (t_max - len(e)) for e in enc])
        for i, (x_in, x_out) in enumerate(captured_blocks(tiny_llama, ids, mask)):
            accs[i] = merge(accs[i], block_stats_ref(x_in, x_out, mask, eps=0.05))
    want = summarize(accs, eps=0.05, relative=False, dtype="float32")
    for key in METRIC_KEYS:
        np.testing.assert_allclose(res[key], want[key], rtol=1e-9, err_msg=key)
    assert res["n_tokens"].sum() == tiny_llama.n_blocks * sum(len(tok.encode(t)) for t in texts)


def test_options_are_checked(tiny_llama):
    with pytest.raises(UsageError, match="unknown metric"):
        stats(tiny_llama, ["x y"], metrics=("avs",))
    with pytest.raises(UsageError, match="backend"):
        stats(tiny_llama, ["x y"], backend="cuda")
    with pytest.raises(UsageError, match="non-empty"):
        stats(tiny_llama, "one string")
    assert lf.stats is stats


def test_avss_shortcut_feeds_prune(tiny_llama):
    texts = ["the cat sat on the mat", "Athens is to Greece"]
    scores = lf.avss(tiny_llama, texts, eps=0.05, progress=False)
    full = stats(tiny_llama, texts, eps=0.05, progress=False)
    np.testing.assert_array_equal(scores, full["avss"])
    assert scores.shape == (tiny_llama.n_blocks,)
    pruned = lf.prune(tiny_llama, scores, k=1)
    assert pruned.config.num_hidden_layers == tiny_llama.n_blocks - 1


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_model_pass_backend_matches_reference(backend, dtype, tiny_tokenizer_fixture):
    from tests.helpers.tiny_models import tiny_model

    hf = tiny_model("qwen2", dtype=dtype, seed=4, vocab_size=len(tiny_tokenizer_fixture))
    device = "cuda" if backend == "triton" and torch.cuda.is_available() else None
    model = lf.load(hf, tokenizer=tiny_tokenizer_fixture, device=device)
    texts = ["the cat sat on the mat", "Athens is to Greece", "Q: What is the capital of France?"]
    ids, mask = pad_right([list(model.tokenizer.encode(t)) for t in texts])
    accs = [empty(model.config.hidden_size) for _ in range(model.n_blocks)]
    with torch.inference_mode():
        for block, x_in, x_out in block_streams(model, ids, mask):
            acc = dispatch.block_stats(x_in, x_out, mask.to(model.device), 0.05, False, backend)
            assert_matches_reference(acc, x_in.cpu(), x_out.cpu(), mask, eps=0.05)
            accs[block] = merge(accs[block], acc)
    got = stats(
        model,
        texts,
        batch_size=len(texts),
        progress=False,
        eps=0.05,
        backend=backend,
        stats_dtype="model",
    )
    assert got["backend"] == backend
    want = summarize(accs, eps=0.05, relative=False, dtype=got["dtype"], backend=backend)
    for key in METRIC_KEYS:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def cancelling_llama(tokenizer):
    """A tiny fp32 Llama whose branches are as large as the residual stream (init std 0.2), so
    residual additions cancel: in bf16 a few sums round to exactly 0, in fp32 none falls under
    1e-5, as on the packaged model."""
    return make_tiny_llama(tokenizer, seed=0, initializer_range=0.2)


CANCEL_TEXTS = [f"{context} {choice}" for context, choices, _ in TINY_ITEMS for choice in choices]


def test_default_counts_as_in_bf16(tiny_tokenizer_fixture):
    model = cancelling_llama(tiny_tokenizer_fixture)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LayerfastWarning)
        st = stats(model, CANCEL_TEXTS, progress=False)
        scores = lf.avss(model, CANCEL_TEXTS, progress=False)
    assert (st["dtype"], st["eps"], st["relative"]) == ("bfloat16", 1e-5, False)
    assert st["as_zero"] == [] and (st["as"] > 0).all()
    assert np.isfinite(st["avss"]).all() and np.isfinite(st["navss"]).all()
    np.testing.assert_array_equal(scores, st["avss"])
    assert model.dtype == torch.float32  # the pass ran on a copy


def test_fp32_counting_gives_as_zero_and_warns(tiny_tokenizer_fixture):
    model = cancelling_llama(tiny_tokenizer_fixture)
    match = r"AS = 0 in block\(s\) \[0, 1, 2\].* float32.*stats_dtype='bf16'"
    with pytest.warns(LayerfastWarning, match=match):
        st = stats(model, CANCEL_TEXTS, progress=False, stats_dtype="model")
    assert (st["dtype"], st["as_zero"]) == ("float32", [0, 1, 2])
    assert np.isnan(st["avss"]).all()
    with pytest.warns(LayerfastWarning, match="AS = 0"):
        scores = lf.avss(model, CANCEL_TEXTS, progress=False, stats_dtype="fp32")
    np.testing.assert_array_equal(scores, st["avss"])  # the model's own dtype: no copy, same


def test_stats_dtype_values(tiny_llama):
    assert stats_model(tiny_llama, "model") is tiny_llama
    assert stats_model(tiny_llama, None) is tiny_llama
    assert stats_model(tiny_llama, torch.float32) is tiny_llama
    copy = stats_model(tiny_llama, "bf16")
    assert copy is not tiny_llama and copy.dtype == torch.bfloat16
    assert stats_model(copy, "bfloat16") is copy
    assert tiny_llama.dtype == torch.float32
    with pytest.raises(UsageError, match="unknown dtype 'bf17'"):
        stats(tiny_llama, ["x y"], stats_dtype="bf17")
