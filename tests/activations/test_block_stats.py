"""The statistics op, ``block_stats``, against its reference.

The fp64 reference (``block_stats_ref``) against direct NumPy formulas on fresh random inputs (odd
shapes, 1 token, primes, hidden 1023, padding, fp32/bf16/fp16) and its batch merge against
one-shot computation: both are fp64 on the same (already rounded) values, so they agree to 1e-9
relative. Then each compiled kernel (C++ extension; Triton, under TRITON_INTERPRET=1 on the CPU)
through ``dispatch.block_stats`` against the reference, within twice the reference's own fp32
error (tolerances: :mod:`tests.activations.kernel_checks`).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from layerfast.activations.collect import summarize
from layerfast.activations.reference import block_stats_ref, empty, merge
from layerfast.errors import UsageError
from tests.activations.kernel_checks import (
    BACKEND_PARAMS,
    DTYPES,
    KERNEL_SHAPES,
    NO_EXT,
    SHAPES,
    assert_matches_reference,
    random_batch,
    run_backend,
)


def numpy_stats(x_in, x_out, mask, eps, relative):
    a_all, b_all = x_out.double().numpy(), x_in.double().numpy()
    m = mask.numpy().astype(bool)
    a, b = a_all[m], b_all[m]
    n, d = a.shape
    means = [a_all[i][m[i]].mean(0) for i in range(len(m)) if m[i].any()]
    av = sum(np.var(v, ddof=1) for v in means) if d > 1 else 0.0
    thr = eps * np.sqrt((a**2).mean(1, keepdims=True)) if relative else eps
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = (a * b).sum(1) / np.maximum(norms, 1e-12)
    last = [int(m[i].sum()) - 1 for i in range(len(m)) if m[i].any()]
    rows = [i for i in range(len(m)) if m[i].any()]
    la, lb = a_all[rows, last], b_all[rows, last]
    lnorms = np.linalg.norm(la, axis=1) * np.linalg.norm(lb, axis=1)
    lcos = (la * lb).sum(1) / np.maximum(lnorms, 1e-12)
    return {
        "n_tokens": n,
        "n_samples": len(means),
        "av_sum": av,
        "small": (np.abs(a) < thr).sum(),
        "cos_sum": cos.sum(),
        "angle_sum": (np.arccos(np.clip(cos, -1, 1)) / math.pi).sum(),
        "last_cos_sum": lcos.sum(),
        "norm_sum": np.linalg.norm(a, axis=1).sum(),
        "ch_mean": a.mean(0),
        "ch_m2": ((a - a.mean(0)) ** 2).sum(0),
    }


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relative", [False, True])
def test_reference_matches_numpy(shape, dtype, relative):
    x_in, x_out, mask = random_batch(shape, dtype, seed=sum(shape))
    got = block_stats_ref(x_in, x_out, mask, eps=0.3, relative=relative)
    want = numpy_stats(x_in, x_out, mask, 0.3, relative)
    for key, value in want.items():
        np.testing.assert_allclose(
            np.asarray(got[key], dtype=float), value, rtol=1e-9, atol=1e-9, err_msg=key
        )


@pytest.mark.parametrize("shape", [(4, 9, 17), (6, 1, 5)])
def test_merge_equals_one_shot(shape):
    x_in, x_out, mask = random_batch(shape, torch.float32, seed=7)
    whole = block_stats_ref(x_in, x_out, mask)
    acc = empty(shape[-1])
    for rows in ([0], [1, 2], list(range(3, shape[0]))):
        acc = merge(acc, block_stats_ref(x_in[rows], x_out[rows], mask[rows]))
    for key in whole:
        np.testing.assert_allclose(
            np.asarray(acc[key], float),
            np.asarray(whole[key], float),
            rtol=1e-10,
            atol=1e-9,
            err_msg=key,
        )


def test_as_zero_is_explicit_and_nonfinite_reported():
    x_in, x_out, mask = random_batch((2, 4, 6), torch.float32, seed=1)
    x_out = x_out + 10.0  # no entry near zero: AS = 0
    acc = block_stats_ref(x_in, x_out, mask)
    bad = x_out.clone()
    bad[0, 0, 0] = float("nan")
    res = summarize(
        [acc, block_stats_ref(x_in, bad, mask)], eps=1e-5, relative=False, dtype="float32"
    )
    assert res["as_zero"] == [0, 1]
    assert np.isnan(res["avss"]).all() and np.isnan(res["navss"]).all()
    assert res["nonfinite"] == [0, 1]


def test_bad_shapes_raise():
    with pytest.raises(UsageError, match=r"\[B, T, d\]"):
        block_stats_ref(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2))


# ---- compiled backends (C++ extension, Triton kernel) against the reference ----------------------


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("shape", KERNEL_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relative", [False, True])
def test_kernel_matches_reference(backend, shape, dtype, relative):
    x_in, x_out, mask = random_batch(shape, dtype, seed=hash((shape, relative)) % 1000)
    got = run_backend(backend, x_in, x_out, mask, relative=relative)
    assert_matches_reference(got, x_in, x_out, mask, eps=0.3, relative=relative)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_kernel_padding_layouts(backend):
    """Left padding, a sample with no real token, a whole batch of padding, strided views."""
    x_in, x_out, mask = random_batch((4, 37, 29), torch.bfloat16, seed=3)
    mask[0] = 0
    mask[1, :5] = 0  # left padding: the last real position is T - 1
    mask[2, ::3] = 0  # holes
    assert_matches_reference(run_backend(backend, x_in, x_out, mask), x_in, x_out, mask)
    empty_mask = torch.zeros_like(mask)
    got = run_backend(backend, x_in, x_out, empty_mask)
    assert_matches_reference(got, x_in, x_out, empty_mask)
    big_in = torch.randn(4, 74, 40).to(torch.bfloat16)
    big_out = torch.randn(4, 74, 40).to(torch.bfloat16)
    view_in, view_out = big_in[:, ::2, 3:32], big_out[:, 1::2, 5:34]  # strides along B, T only
    got = run_backend(backend, view_in, view_out, mask)
    assert_matches_reference(got, view_in, view_out, mask)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_kernel_merge_across_batches_equals_one_shot(backend):
    x_in, x_out, mask = random_batch((7, 19, 33), torch.float16, seed=11)
    acc = empty(33)
    for rows in ([0], [1, 2, 3], [4, 5, 6]):
        acc = merge(acc, run_backend(backend, x_in[rows], x_out[rows], mask[rows]))
    assert_matches_reference(acc, x_in, x_out, mask)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_kernel_reports_nonfinite_and_as_zero(backend):
    x_in, x_out, mask = random_batch((2, 5, 17), torch.float32, seed=5)
    x_out = x_out + 10.0  # nothing near zero
    clean = run_backend(backend, x_in, x_out, mask, eps=1e-5)
    bad = x_out.clone()
    bad[0, 0, 3], bad[0, 0, 4], bad[1, 0, 0] = float("nan"), float("inf"), -float("inf")
    dirty = run_backend(backend, x_in, bad, mask, eps=1e-5)
    assert dirty["nonfinite"] == block_stats_ref(x_in, bad, mask)["nonfinite"] == 3
    res = summarize([clean, dirty], eps=1e-5, relative=False, dtype="float32")
    assert res["as_zero"] == [0, 1] and np.isnan(res["avss"]).all()
    assert res["nonfinite"] == [0, 3]


@pytest.mark.skipif(NO_EXT, reason="no extension")
def test_cpp_half_conversions_cover_every_bit_pattern():
    from layerfast import _block_stats_cpp

    bits = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    for dtype in (torch.float16, torch.bfloat16):
        out = np.empty(bits.numel(), dtype=np.float32)
        _block_stats_cpp.to_float32(bits.numpy(), str(dtype).replace("torch.", ""), out)
        want = bits.view(dtype).float().numpy()
        same = (out.view(np.uint32) == want.view(np.uint32)) | (np.isnan(out) & np.isnan(want))
        assert same.all(), dtype


@pytest.mark.skipif(NO_EXT, reason="LAYERFAST_NO_EXT set")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seg_len", [128, 256, 2048, None])
@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("shape", [(3, 2311, 67), (3, 149, 2071)])
def test_cpp_long_segments_match_reference(dtype, seg_len, relative, shape):
    """Segments up to 2048 positions (the length chosen for large batches), with padding, holes
    and odd hidden sizes; from hidden 2048 on the kernel folds rows in pairs (an odd number of
    real rows per group here): a segment's shifted sums stay within the reference's error."""
    from layerfast.activations.block_stats_cpp import cpp_block_stats
    from layerfast.activations.finish import finish

    x_in, x_out, mask = random_batch(shape, dtype, seed=17 + (seg_len or 0))
    mask[1, 70 : shape[1] - 40] = 0  # a hole across segment boundaries
    x_out[2] += 40.0  # a sample whose channels sit far from 0 (the shift matters)
    for threads in (1, 2):
        partials = cpp_block_stats(
            x_in, x_out, mask.to(torch.uint8), 0.3, relative, seg_len, threads
        )
        assert partials.seg_mean.shape[1] == -(-shape[1] // partials.seg_len)
        assert_matches_reference(finish(partials, mask), x_in, x_out, mask, relative=relative)


@pytest.mark.skipif(NO_EXT, reason="LAYERFAST_NO_EXT set")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seg_len", [1, 2, 3, 5, 7, 9])
def test_cpp_short_segments_split_into_runs_match_reference(dtype, seg_len):
    """The kernel folds several rows side by side, taken from as many runs of a segment; segments
    shorter than that (1-3 rows), or whose last run is shorter, with holes, give the reference's
    statistics, and every row's own scalars (checked through the last-token fields and counts)."""
    from layerfast.activations.block_stats_cpp import cpp_block_stats
    from layerfast.activations.finish import finish

    shape = (3, 23, 97)
    x_in, x_out, mask = random_batch(shape, dtype, seed=41 + seg_len)
    mask[0, 3:11] = 0
    mask[2, 17:] = 0
    x_out[1] += 25.0
    for threads in (1, 2):
        partials = cpp_block_stats(x_in, x_out, mask.to(torch.uint8), 0.3, False, seg_len, threads)
        assert_matches_reference(finish(partials, mask), x_in, x_out, mask, relative=False)


@pytest.mark.skipif(NO_EXT, reason="LAYERFAST_NO_EXT set")
def test_cpp_segment_length_keeps_every_thread_busy():
    from layerfast.activations.block_stats_cpp import (
        MAX_SEG_LEN,
        MIN_SEG_LEN,
        SEGMENTS_PER_THREAD,
        segment_length,
    )

    assert segment_length(64, 2048, 2) == MAX_SEG_LEN  # 64 segments of a whole sample each
    assert segment_length(1, 153, 2) == MIN_SEG_LEN  # a small batch keeps the shortest
    assert segment_length(1, 200_000, 16) == MAX_SEG_LEN
    for batch, tokens, threads in [(1, 2048, 2), (3, 5000, 4), (8, 1024, 8), (2, 77, 1)]:
        seg_len = segment_length(batch, tokens, threads)
        assert MIN_SEG_LEN <= seg_len <= MAX_SEG_LEN and seg_len & (seg_len - 1) == 0
        n_seg = batch * -(-tokens // seg_len)
        assert seg_len == MIN_SEG_LEN or n_seg >= SEGMENTS_PER_THREAD * threads
        longer = batch * -(-tokens // (2 * seg_len))
        assert seg_len == MAX_SEG_LEN or seg_len >= tokens or longer < SEGMENTS_PER_THREAD * threads
