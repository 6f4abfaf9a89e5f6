"""Streaming activation statistics: the reference accumulators against direct NumPy formulas on
fresh random inputs (odd shapes, 1 token, primes, hidden 1023, padding, fp32/bf16/fp16), the
batch merge against one-shot computation, and ``lf.stats`` on a model against hidden states
captured with forward hooks on the plain HF model.

Tolerances: the reference upcasts to fp64, so against NumPy on the same (already rounded) values
it agrees to 1e-9 relative in every input dtype; the model-level check compares two fp32 forward
passes that are bit-identical, so it is held to 1e-9 as well.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import layerfast as lf
from layerfast.activation_stats import stats, summarize
from layerfast.stats_ref import empty, merge, stats_ref

SHAPES = [(1, 1, 1), (1, 1, 7), (3, 5, 8), (2, 13, 1023), (5, 7, 31)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def random_batch(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    b, t, d = shape
    x_in = torch.randn(shape, generator=g).to(dtype)
    x_out = (torch.randn(shape, generator=g) * 3).to(dtype)
    x_out[torch.rand(shape, generator=g) < 0.05] = 0  # some exact zeros for AS
    mask = torch.ones((b, t), dtype=torch.long)
    for row in range(b):
        mask[row, 1 + (row * 7) % t:] = 0 if row % 2 else 1  # right padding on odd rows
    return x_in, x_out, mask


def numpy_stats(x_in, x_out, mask, eps, relative):
    a_all, b_all = x_out.double().numpy(), x_in.double().numpy()
    m = mask.numpy().astype(bool)
    a, b = a_all[m], b_all[m]
    n, d = a.shape
    means = [a_all[i][m[i]].mean(0) for i in range(len(m)) if m[i].any()]
    av = sum(np.var(v, ddof=1) for v in means) if d > 1 else 0.0
    thr = eps * np.sqrt((a ** 2).mean(1, keepdims=True)) if relative else eps
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    last = [int(m[i].sum()) - 1 for i in range(len(m)) if m[i].any()]
    rows = [i for i in range(len(m)) if m[i].any()]
    la, lb = a_all[rows, last], b_all[rows, last]
    lcos = (la * lb).sum(1) / np.maximum(np.linalg.norm(la, axis=1) * np.linalg.norm(lb, axis=1), 1e-12)
    return {"n_tokens": n, "n_samples": len(means), "av_sum": av, "small": (np.abs(a) < thr).sum(),
            "cos_sum": cos.sum(), "angle_sum": (np.arccos(np.clip(cos, -1, 1)) / math.pi).sum(),
            "last_cos_sum": lcos.sum(), "norm_sum": np.linalg.norm(a, axis=1).sum(),
            "ch_mean": a.mean(0), "ch_m2": ((a - a.mean(0)) ** 2).sum(0)}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relative", [False, True])
def test_reference_matches_numpy(shape, dtype, relative):
    x_in, x_out, mask = random_batch(shape, dtype, seed=sum(shape))
    got = stats_ref(x_in, x_out, mask, eps=0.3, relative=relative)
    want = numpy_stats(x_in, x_out, mask, 0.3, relative)
    for key, value in want.items():
        np.testing.assert_allclose(np.asarray(got[key], dtype=float), value, rtol=1e-9, atol=1e-9,
                                   err_msg=key)


@pytest.mark.parametrize("shape", [(4, 9, 17), (6, 1, 5)])
def test_merge_equals_one_shot(shape):
    x_in, x_out, mask = random_batch(shape, torch.float32, seed=7)
    whole = stats_ref(x_in, x_out, mask)
    acc = empty(shape[-1])
    for rows in ([0], [1, 2], list(range(3, shape[0]))):
        acc = merge(acc, stats_ref(x_in[rows], x_out[rows], mask[rows]))
    for key in whole:
        np.testing.assert_allclose(np.asarray(acc[key], float), np.asarray(whole[key], float),
                                   rtol=1e-10, atol=1e-9, err_msg=key)


def test_as_zero_is_explicit_and_nonfinite_reported():
    x_in, x_out, mask = random_batch((2, 4, 6), torch.float32, seed=1)
    x_out = x_out + 10.0  # no entry near zero: AS = 0
    acc = stats_ref(x_in, x_out, mask)
    bad = x_out.clone()
    bad[0, 0, 0] = float("nan")
    res = summarize([acc, stats_ref(x_in, bad, mask)], eps=1e-5, relative=False, dtype="float32")
    assert res["as_zero"] == [0, 1]
    assert np.isnan(res["avss"]).all() and np.isnan(res["navss"]).all()
    assert res["nonfinite"] == [0, 1]


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\[B, T, d\]"):
        stats_ref(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2))


def captured_blocks(model, ids, mask):
    """Each decoder layer's input and output from hooks on the plain HF model."""
    seen = []
    hooks = [layer.register_forward_hook(
        lambda mod, args, kwargs, out: seen.append((kwargs.get("hidden_states", args[0] if args else None), out)),
        with_kwargs=True) for layer in model.blocks]
    try:
        with torch.no_grad():
            model.hf_model(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_model_pass_matches_hooked_hidden_states(tiny_llama):
    texts = ["the cat sat on the mat", "Q: What is the capital of France?\nA: Paris",
             "Athens is to Greece"]
    res = stats(tiny_llama, texts, batch_size=2, progress=False, eps=0.05)
    accs = [empty(tiny_llama.config.hidden_size) for _ in range(tiny_llama.n_blocks)]
    tok = tiny_llama.tokenizer
    for start in (0, 2):
        enc = [tok.encode(t) for t in texts[start:start + 2]]
        t_max = max(map(len, enc))
        ids = torch.tensor([e + [0] * (t_max - len(e)) for e in enc])
        mask = torch.tensor([[1] * len(e) + [0] * (t_max - len(e)) for e in enc])
        for i, (x_in, x_out) in enumerate(captured_blocks(tiny_llama, ids, mask)):
            accs[i] = merge(accs[i], stats_ref(x_in, x_out, mask, eps=0.05))
    want = summarize(accs, eps=0.05, relative=False, dtype="float32")
    for key in ("av", "as", "avss", "navss", "bi", "angular", "angular_last", "norm", "channel_var"):
        np.testing.assert_allclose(res[key], want[key], rtol=1e-9, err_msg=key)
    assert res["n_tokens"].sum() == tiny_llama.n_blocks * sum(len(tok.encode(t)) for t in texts)


def test_options_are_checked(tiny_llama):
    with pytest.raises(ValueError, match="unknown metric"):
        stats(tiny_llama, ["x y"], metrics=("avs",))
    with pytest.raises(ValueError, match="backend"):
        stats(tiny_llama, ["x y"], backend="cuda")
    with pytest.raises(ValueError, match="non-empty"):
        stats(tiny_llama, "one string")
    assert lf.stats is stats
