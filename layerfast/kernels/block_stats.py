"""Streaming per-block activation statistics as one Triton kernel: one read of a block's input
and output residual streams per launch.

This module holds only the ``@triton.jit`` function; its host wrapper (grid, allocation) is
:func:`layerfast.activations.block_stats_triton.triton_block_stats`, and the input checks are done
once, in :func:`layerfast.activations.dispatch.block_stats`.

Same contract as the C++ kernel (``layerfast/kernels/block_stats.cpp``), the
:class:`layerfast.activations.finish.Partials`: per-row scalars ``rows`` [5, B, T] (dot product of
output and input, |output|^2, |input|^2, count of |output| < threshold, count of NaN/inf outputs)
and per-segment channel moments ``seg_mean``/``seg_m2`` [B, S, d] over ``SEG_LEN`` consecutive
positions of one sample. Each program owns one segment and whole rows (d padded to a power of
two, ``BLOCK_D``), so the relative threshold (eps x the row's RMS) needs no second read. Loads
upcast to fp32 and everything accumulates in fp32; within a segment the channel moments are
merged chunk by chunk (``BLOCK_T`` rows) with Chan's formula.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _block_stats_kernel(
    x_in_ptr,  # [B, T, d] block input, unit stride along d
    x_out_ptr,  # [B, T, d] block output, unit stride along d
    mask_ptr,  # [B, T] uint8, contiguous
    rows_ptr,  # [5, B, T] fp32 out
    mean_ptr,  # [B, S, d] fp32 out
    m2_ptr,  # [B, S, d] fp32 out
    T,
    d,
    S,
    in_stride_b,
    in_stride_t,
    out_stride_b,
    out_stride_t,
    eps,
    SEG_LEN: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
    RELATIVE: tl.constexpr,
):
    seg = tl.program_id(0).to(tl.int64)  # int64 offsets: B * T * d may pass 2**31
    b = seg // S
    t_start = (seg % S) * SEG_LEN
    n_rows = tl.num_programs(0) // S * T  # B * T
    cols = tl.arange(0, BLOCK_D)  # [BLOCK_D]
    col_ok = cols < d
    n = tl.zeros([1], dtype=tl.float32)
    mean = tl.zeros([BLOCK_D], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i in range(0, SEG_LEN, BLOCK_T):
        t = t_start + i + tl.arange(0, BLOCK_T)  # [BLOCK_T]
        in_range = t < T
        keep = tl.load(mask_ptr + b * T + t, mask=in_range, other=0) != 0  # [BLOCK_T]
        tile = keep[:, None] & col_ok[None, :]  # [BLOCK_T, BLOCK_D]
        a = tl.load(
            x_out_ptr + b * out_stride_b + t[:, None] * out_stride_t + cols[None, :],
            mask=tile,
            other=0.0,
        ).to(tl.float32)
        x = tl.load(
            x_in_ptr + b * in_stride_b + t[:, None] * in_stride_t + cols[None, :],
            mask=tile,
            other=0.0,
        ).to(tl.float32)
        dot = tl.sum(a * x, axis=1)  # [BLOCK_T]
        ssa = tl.sum(a * a, axis=1)
        ssb = tl.sum(x * x, axis=1)
        nonfinite = tl.sum(((a - a) != 0.0).to(tl.float32), axis=1)  # NaN/inf give NaN
        if RELATIVE:
            threshold = eps * tl.sqrt(ssa / d)  # [BLOCK_T]
        else:
            threshold = tl.zeros([BLOCK_T], dtype=tl.float32) + eps
        small = tl.sum(((tl.abs(a) < threshold[:, None]) & tile).to(tl.float32), axis=1)
        row = b * T + t
        tl.store(rows_ptr + row, dot, mask=in_range)
        tl.store(rows_ptr + n_rows + row, ssa, mask=in_range)
        tl.store(rows_ptr + 2 * n_rows + row, ssb, mask=in_range)
        tl.store(rows_ptr + 3 * n_rows + row, small, mask=in_range)
        tl.store(rows_ptr + 4 * n_rows + row, nonfinite, mask=in_range)
        # this chunk's channel moments, then Chan's merge into the segment's
        n_chunk = tl.sum(keep.to(tl.float32), axis=0)
        chunk_mean = tl.sum(a, axis=0) / tl.maximum(n_chunk, 1.0)  # [BLOCK_D]
        dev = tl.where(tile, a - chunk_mean[None, :], 0.0)
        chunk_m2 = tl.sum(dev * dev, axis=0)
        n_new = n + n_chunk
        weight = n_chunk / tl.maximum(n_new, 1.0)
        delta = chunk_mean - mean
        mean = mean + delta * weight
        m2 = m2 + chunk_m2 + delta * delta * (n * weight)
        n = n_new
    tl.store(mean_ptr + seg * d + cols, mean, mask=col_ok)
    tl.store(m2_ptr + seg * d + cols, m2, mask=col_ok)
