"""Streaming activation statistics: the reference accumulators against direct NumPy formulas on
fresh random inputs (odd shapes, 1 token, primes, hidden 1023, padding, fp32/bf16/fp16), the
batch merge against one-shot computation, and ``lf.stats`` on a model against hidden states
captured with forward hooks on the plain HF model.

Tolerances: the reference upcasts to fp64, so against NumPy on the same (already rounded) values
it agrees to 1e-9 relative in every input dtype; the model-level check compares two fp32 forward
passes that are bit-identical, so it is held to 1e-9 as well.
"""
from __future__ import annotations

import importlib.util
import math
import os
import sys

import numpy as np
import pytest
import torch

import layerfast as lf
from layerfast.activations.collect import stats, summarize
from layerfast.activations.reference import empty, merge, stats_ref

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
    res = stats(tiny_llama, texts, batch_size=2, progress=False, eps=0.05, backend="torch")
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


def test_avss_shortcut_feeds_prune(tiny_llama):
    texts = ["the cat sat on the mat", "Athens is to Greece"]
    scores = lf.avss(tiny_llama, texts, eps=0.05, progress=False)
    full = stats(tiny_llama, texts, eps=0.05, progress=False)
    np.testing.assert_array_equal(scores, full["avss"])
    assert scores.shape == (tiny_llama.n_blocks,)
    pruned = lf.prune(tiny_llama, scores, k=1)
    assert pruned.config.num_hidden_layers == tiny_llama.n_blocks - 1


# ---- compiled backends (C++ extension, Triton kernel) against the reference ----------------------
#
# Both kernels read the stored values exactly (bf16/fp16 -> fp32 is exact), so the input dtype
# changes what is computed, not the error: the tolerance is set by the fp32 accumulation (C++: fp32
# lanes over 256 channels or 16 rows, then fp64; Triton: fp32 throughout). Float fields: relative
# 1e-5 of the field's scale (measured at most 4.8e-7 for C++, 1.4e-7 for Triton). Angles: arccos
# amplifies the fp32 rounding of cos near 1 (input and output nearly parallel: up to
# sqrt(2 * 2**-23) / pi = 1.6e-4 per token), so angle sums get an absolute 2e-4 per token
# (measured 6.3e-5, on d = 1 where cos = 1). Integer fields (token, entry, sample counts, |a| < eps
# counts, NaN/inf counts) are exact, except the relative-threshold count, whose fp32 RMS may move
# an entry across the threshold: at most 2 (measured 0).

from layerfast.activations import dispatch as stats_dispatch  # noqa: E402

KERNEL_TOL = {  # (backend, dtype) -> relative tolerance of the float fields
    ("cpp", torch.float32): 1e-5, ("cpp", torch.bfloat16): 1e-5, ("cpp", torch.float16): 1e-5,
    ("triton", torch.float32): 1e-5, ("triton", torch.bfloat16): 1e-5, ("triton", torch.float16): 1e-5,
}
ANGLE_ATOL = {"cpp": 2e-4, "triton": 2e-4}  # per token, for angle_sum / last_angle_sum
COUNTS = ("n_tokens", "n_entries", "n_samples", "small", "nonfinite")
KERNEL_SHAPES = SHAPES + [(1, 257, 97), (3, 131, 64), (2, 1, 1023), (1, 300, 5)]
BACKEND_PARAMS = [
    pytest.param("cpp", marks=pytest.mark.skipif(
        os.environ.get("LAYERFAST_NO_EXT", "0") not in ("", "0"), reason="LAYERFAST_NO_EXT set")),
    pytest.param("triton", marks=pytest.mark.skipif(
        importlib.util.find_spec("triton") is None, reason="triton not installed")),
]


def assert_acc_close(got: dict, want: dict, rtol: float, small_slack: int = 0,
                     angle_atol: float = 0.0):
    assert set(got) == set(want)
    for key, ref in want.items():
        g, r = np.asarray(got[key], dtype=float), np.asarray(ref, dtype=float)
        if key in COUNTS:
            slack = small_slack if key == "small" else 0
            assert abs(g - r) <= slack, (key, g, r)
        elif key in ("angle_sum", "last_angle_sum"):
            n = want["n_tokens" if key == "angle_sum" else "n_samples"]
            np.testing.assert_allclose(g, r, rtol=rtol, atol=angle_atol * n + 1e-12, err_msg=key)
        else:
            scale = float(np.nanmax(np.abs(r))) if r.size and np.isfinite(r).any() else 0.0
            np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * (scale + 1.0), err_msg=key)


def tolerances(backend: str) -> dict:
    return {"rtol": KERNEL_TOL[(backend, torch.float32)], "angle_atol": ANGLE_ATOL[backend]}


def run_backend(backend, x_in, x_out, mask, eps=0.3, relative=False):
    if backend == "triton" and torch.cuda.is_available():  # on a GPU machine: real CUDA
        x_in, x_out, mask = x_in.cuda(), x_out.cuda(), mask.cuda()
    return stats_dispatch.block_stats(x_in, x_out, mask, eps, relative,
                                      stats_dispatch.resolve(backend, x_out.device, x_out.dtype))


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("shape", KERNEL_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relative", [False, True])
def test_kernel_matches_reference(backend, shape, dtype, relative):
    x_in, x_out, mask = random_batch(shape, dtype, seed=hash((shape, relative)) % 1000)
    got = run_backend(backend, x_in, x_out, mask, relative=relative)
    want = stats_ref(x_in, x_out, mask, eps=0.3, relative=relative)
    slack = 2 if relative else 0
    assert_acc_close(got, want, KERNEL_TOL[(backend, dtype)], small_slack=slack,
                     angle_atol=ANGLE_ATOL[backend])


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_kernel_padding_layouts(backend):
    """Left padding, a sample with no real token, a whole batch of padding, strided views."""
    x_in, x_out, mask = random_batch((4, 37, 29), torch.bfloat16, seed=3)
    mask[0] = 0
    mask[1, :5] = 0  # left padding: the last real position is T - 1
    mask[2, ::3] = 0  # holes
    want = stats_ref(x_in, x_out, mask, eps=0.3)
    assert_acc_close(run_backend(backend, x_in, x_out, mask), want, **tolerances(backend))
    empty_mask = torch.zeros_like(mask)
    got = run_backend(backend, x_in, x_out, empty_mask)
    assert_acc_close(got, stats_ref(x_in, x_out, empty_mask, eps=0.3), **tolerances(backend))
    big_in, big_out = torch.randn(4, 74, 40).to(torch.bfloat16), torch.randn(4, 74, 40).to(torch.bfloat16)
    view_in, view_out = big_in[:, ::2, 3:32], big_out[:, 1::2, 5:34]  # strides along B, T only
    want = stats_ref(view_in, view_out, mask, eps=0.3)
    assert_acc_close(run_backend(backend, view_in, view_out, mask), want, **tolerances(backend))


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_kernel_merge_across_batches_equals_one_shot(backend):
    x_in, x_out, mask = random_batch((7, 19, 33), torch.float16, seed=11)
    acc = empty(33)
    for rows in ([0], [1, 2, 3], [4, 5, 6]):
        acc = merge(acc, run_backend(backend, x_in[rows], x_out[rows], mask[rows]))
    assert_acc_close(acc, stats_ref(x_in, x_out, mask, eps=0.3), **tolerances(backend))


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_kernel_reports_nonfinite_and_as_zero(backend):
    x_in, x_out, mask = random_batch((2, 5, 17), torch.float32, seed=5)
    x_out = x_out + 10.0  # nothing near zero
    clean = run_backend(backend, x_in, x_out, mask, eps=1e-5)
    bad = x_out.clone()
    bad[0, 0, 3], bad[0, 0, 4], bad[1, 0, 0] = float("nan"), float("inf"), -float("inf")
    dirty = run_backend(backend, x_in, bad, mask, eps=1e-5)
    assert dirty["nonfinite"] == stats_ref(x_in, bad, mask)["nonfinite"] == 3
    res = summarize([clean, dirty], eps=1e-5, relative=False, dtype="float32")
    assert res["as_zero"] == [0, 1] and np.isnan(res["avss"]).all()
    assert res["nonfinite"] == [0, 3]


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_kernel_refuses_what_it_does_not_take(backend):
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    mask = torch.ones(2, 3)
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        stats_dispatch.resolve(backend, x.device, x.dtype)
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        stats_dispatch.block_stats(x, x, mask, backend=backend)
    y = torch.randn(2, 8, 3).transpose(1, 2)  # [2, 3, 8], stride 3 along d
    with pytest.raises(ValueError, match="unit stride"):
        stats_dispatch.block_stats(y, y, mask, backend=backend)
    with pytest.raises(TypeError, match="dtypes differ"):
        stats_dispatch.block_stats(y.float(), y.half(), mask, backend=backend)
    with pytest.raises(ValueError, match=r"\[B, T, d\]"):
        stats_dispatch.block_stats(torch.zeros(3, 8), torch.zeros(3, 8), mask, backend=backend)


@pytest.mark.skipif(os.environ.get("LAYERFAST_NO_EXT", "0") not in ("", "0"), reason="no extension")
def test_cpp_half_conversions_cover_every_bit_pattern():
    from layerfast import _stats_cpp

    bits = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    for dtype in (torch.float16, torch.bfloat16):
        out = np.empty(bits.numel(), dtype=np.float32)
        _stats_cpp.to_float32(bits.numpy(), str(dtype).replace("torch.", ""), out)
        want = bits.view(dtype).float().numpy()
        same = (out.view(np.uint32) == want.view(np.uint32)) | (np.isnan(out) & np.isnan(want))
        assert same.all(), dtype


def test_backend_choice(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("LAYERFAST_BACKEND", raising=False)
    reasons = stats_dispatch.available()
    auto = "cpp" if not reasons["cpp"] else "torch"
    assert stats_dispatch.resolve("auto", cpu, torch.bfloat16) == auto
    assert stats_dispatch.resolve("auto", cpu, torch.float64) == "torch"
    monkeypatch.setenv("LAYERFAST_BACKEND", "torch")
    assert stats_dispatch.resolve("auto", cpu, torch.float32) == "torch"
    monkeypatch.setenv("LAYERFAST_BACKEND", "cuda")
    with pytest.raises(ValueError, match="LAYERFAST_BACKEND"):
        stats_dispatch.resolve("auto", cpu, torch.float32)
    with pytest.raises(ValueError, match="unknown statistics backend"):
        stats_dispatch.resolve("tritton", cpu, torch.float32)
    monkeypatch.setattr(stats_dispatch, "available",
                        lambda: {"torch": "", "cpp": "not built", "triton": "no CUDA"})
    monkeypatch.delenv("LAYERFAST_BACKEND")
    assert stats_dispatch.resolve("auto", cpu, torch.float32) == "torch"
    with pytest.raises(RuntimeError, match="not built"):
        stats_dispatch.resolve("cpp", cpu, torch.float32)


def test_compiled_backends_are_installed():
    """The README's install builds the C++ extension and installs Triton (Linux): a failed build
    must show here rather than as a silent fallback to the slow reference."""
    reasons = stats_dispatch.available()
    if os.environ.get("LAYERFAST_NO_EXT", "0") in ("", "0"):
        assert reasons["cpp"] == "", reasons["cpp"]
    if sys.platform == "linux":
        assert importlib.util.find_spec("triton") is not None, "pip install -e '.[test]' installs triton"


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_model_pass_backend_matches_torch(backend, dtype, tiny_tokenizer_fixture):
    from tests.helpers.tiny_models import tiny_model

    hf = tiny_model("qwen2", dtype=dtype, seed=4, vocab_size=len(tiny_tokenizer_fixture))
    device = "cuda" if backend == "triton" and torch.cuda.is_available() else None
    model = lf.load(hf, tokenizer=tiny_tokenizer_fixture, device=device)
    texts = ["the cat sat on the mat", "Athens is to Greece", "Q: What is the capital of France?"]
    want = stats(model, texts, batch_size=2, progress=False, eps=0.05, backend="torch")
    got = stats(model, texts, batch_size=2, progress=False, eps=0.05, backend=backend)
    assert got["backend"] == backend and want["backend"] == "torch"
    for key in ("av", "as", "avss", "bi", "angular", "angular_last", "norm", "channel_var"):
        np.testing.assert_allclose(got[key], want[key], rtol=KERNEL_TOL[(backend, dtype)] * 10,
                                   atol=1e-6, err_msg=key)
