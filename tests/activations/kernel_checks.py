"""Shared by the statistics tests: random batches, the compiled backends to run, and the check of
a kernel's accumulators against the reference's own error.

Tolerance, in the form of flash-attention's tests: for every float field,
``max |kernel - ref64| <= 2 * max |ref32 - ref64| + atol`` (max over the field's elements), where
ref64 is the fp64 reference and ref32 the same reference with fp32 accumulation
(``block_stats_ref(..., acc_dtype=torch.float32)``): the kernels accumulate in fp32, so they may
be off by about what fp32 accumulation itself costs. Both kernels read the stored values exactly
(bf16/fp16 -> fp32 is exact), so the input dtype changes what is computed, not the error.

``atol`` is ATOL_ULPS fp32 unit roundoffs (2**-24) of the field's scale, the size of the terms
summed into it: the token count for cos and angle sums (each term at most 1), the sample count
for their last-token versions, the field itself for norm_sum and av_sum (positive terms), and the
largest channel's |mean| + std for ch_mean, its M2 for ch_m2. It covers fields where ref32 happens
to round exactly like ref64 (a one-token batch, means of a few values), and the C++ kernel's
one-pass channel moments (shifted sums: their fp32 terms are about twice the two-pass
deviations, measured up to 7x ref32's error on ch_m2, within 0.7 of the bound). At 16 ulps that
is 1e-6 of the scale, a tenth of the relative 1e-5 these tests held before.

Counts (tokens, entries, samples, |a| < eps, NaN/inf) are exact. The one exception is the count
of entries under a *relative* threshold (eps x the token's RMS): an fp32 RMS moves an entry that
sits at the threshold across it by chance, and whether ref32 does too says nothing about the
kernel (it rounds the RMS differently), so the reference's own error is not meaningful there;
that count may be off by 2 (none seen).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import torch

from layerfast.activations import dispatch
from layerfast.activations.reference import block_stats_ref

SHAPES = [(1, 1, 1), (1, 1, 7), (3, 5, 8), (2, 13, 1023), (5, 7, 31)]
KERNEL_SHAPES = SHAPES + [(1, 257, 97), (3, 131, 64), (2, 1, 1023), (1, 300, 5)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
COUNTS = ("n_tokens", "n_entries", "n_samples", "small", "nonfinite")
RELATIVE_SMALL_SLACK = 2
ATOL_ULPS = 16
FP32_UNIT_ROUNDOFF = 2.0**-24
NO_EXT = os.environ.get("LAYERFAST_NO_EXT", "0") not in ("", "0")
BACKEND_PARAMS = [
    pytest.param("cpp", marks=pytest.mark.skipif(NO_EXT, reason="LAYERFAST_NO_EXT set")),
    pytest.param(
        "triton",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("triton") is None, reason="triton not installed"
        ),
    ),
]


def random_batch(shape, dtype, seed):
    """x_in, x_out [B, T, d] of ``dtype`` (5% exact zeros in x_out) and a long mask [B, T] with
    right padding on odd rows."""
    g = torch.Generator().manual_seed(seed)
    b, t, d = shape
    x_in = torch.randn(shape, generator=g).to(dtype)
    x_out = (torch.randn(shape, generator=g) * 3).to(dtype)
    x_out[torch.rand(shape, generator=g) < 0.05] = 0  # some exact zeros for AS
    mask = torch.ones((b, t), dtype=torch.long)
    for row in range(b):
        mask[row, 1 + (row * 7) % t :] = 0 if row % 2 else 1  # right padding on odd rows
    return x_in, x_out, mask


def run_backend(backend, x_in, x_out, mask, eps=0.3, relative=False):
    """``dispatch.block_stats`` on ``backend`` (the Triton one on CUDA when there is a GPU)."""
    if backend == "triton" and torch.cuda.is_available():
        x_in, x_out, mask = x_in.cuda(), x_out.cuda(), mask.cuda()
    return dispatch.block_stats(
        x_in, x_out, mask, eps, relative, dispatch.resolve(backend, x_out.device, x_out.dtype)
    )


def field_scale(key: str, ref64: dict) -> float:
    """The size of the terms summed into accumulator ``key`` (see the module docstring)."""
    if key in ("cos_sum", "angle_sum"):
        return ref64["n_tokens"]
    if key in ("last_cos_sum", "last_angle_sum"):
        return ref64["n_samples"]
    if key in ("norm_sum", "av_sum"):
        return abs(ref64[key])
    m2 = ref64["ch_m2"].numpy()
    if ref64["n_tokens"] == 0 or not m2.size:
        return 0.0
    if key == "ch_m2":
        return float(np.nanmax(np.abs(m2)))
    return float(np.nanmax(np.abs(ref64["ch_mean"].numpy()) + np.sqrt(m2 / ref64["n_tokens"])))


def assert_matches_reference(got: dict, x_in, x_out, mask, eps=0.3, relative=False):
    """``got`` (a kernel's accumulators over this batch) against the reference, within twice
    the reference's own fp32 error plus ATOL_ULPS (see the module docstring)."""
    ref64 = block_stats_ref(x_in, x_out, mask, eps, relative)
    ref32 = block_stats_ref(x_in, x_out, mask, eps, relative, acc_dtype=torch.float32)
    assert set(got) == set(ref64)
    for key, want in ref64.items():
        g, r64, r32 = (np.asarray(v, dtype=float) for v in (got[key], want, ref32[key]))
        if key in COUNTS:
            slack = RELATIVE_SMALL_SLACK if key == "small" and relative else 0
            assert abs(g - r64) <= slack, (key, g, r64)
            continue
        nan = np.isnan(r64)
        assert np.array_equal(np.isnan(g), nan), (key, g, r64)
        if nan.all():
            continue
        err = np.max(np.abs(g - r64)[~nan])
        ref_err = np.max(np.abs(r32 - r64)[~nan])
        atol = ATOL_ULPS * FP32_UNIT_ROUNDOFF * field_scale(key, ref64)
        assert err <= 2 * ref_err + atol, (
            key,
            f"error {err:.3g} > 2 x ref32's {ref_err:.3g} + atol {atol:.3g}",
        )
