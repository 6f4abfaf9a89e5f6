"""Streaming per-block activation statistics as one Triton kernel: one read of a block's input
and output residual streams per call.

Same contract as the C++ kernel (``csrc/block_stats.cpp``): per-row scalars ``rows`` [5, B, T] (dot
product of output and input, |output|^2, |input|^2, count of |output| < threshold, count of
NaN/inf outputs) and per-segment channel moments ``seg_mean``/``seg_m2`` [B, S, d] over
``seg_len`` consecutive positions of one sample; ``layerfast.activations.dispatch.finish`` turns them
into the accumulators of :mod:`layerfast.activations.reference`. Each program owns one segment and whole rows
(d padded to a power of two), so the relative threshold (eps x the row's RMS) needs no second
read. Loads upcast to fp32 and everything accumulates in fp32; within a segment the channel moments
are merged chunk by chunk with Chan's formula.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_HIDDEN = 16384
TILE_ELEMENTS = 8192  # BLOCK_T x BLOCK_D per load


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
        a = tl.load(x_out_ptr + b * out_stride_b + t[:, None] * out_stride_t + cols[None, :],
                    mask=tile, other=0.0).to(tl.float32)
        x = tl.load(x_in_ptr + b * in_stride_b + t[:, None] * in_stride_t + cols[None, :],
                    mask=tile, other=0.0).to(tl.float32)
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


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def block_stats(x_in: torch.Tensor,  # [B, T, d] block input
                x_out: torch.Tensor,  # [B, T, d] block output
                mask: torch.Tensor,  # [B, T] uint8, 1 = real token
                eps: float,
                relative: bool,
                seg_len: int = 64,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Launch the kernel; returns (rows [5, B, T], seg_mean [B, S, d], seg_m2 [B, S, d]) in fp32
    and the segment length used (a power of two at least ``seg_len``)."""
    if x_in.dtype not in DTYPES or x_out.dtype != x_in.dtype:
        raise TypeError(f"the Triton statistics kernel takes float32, bfloat16 or float16 (both "
                        f"tensors alike), got {x_in.dtype} and {x_out.dtype}")
    if x_in.ndim != 3 or x_in.shape != x_out.shape or mask.shape != x_out.shape[:2]:
        raise ValueError(f"expected x_in, x_out [B, T, d] and mask [B, T], got {tuple(x_in.shape)}, "
                         f"{tuple(x_out.shape)}, {tuple(mask.shape)}")
    if x_in.stride(-1) != 1 or x_out.stride(-1) != 1:
        raise ValueError("the Triton statistics kernel needs unit stride along the hidden dimension")
    if mask.dtype != torch.uint8 or not mask.is_contiguous():
        raise TypeError("mask must be a contiguous uint8 tensor")
    devices = {x_in.device, x_out.device, mask.device}
    if len(devices) != 1:
        raise ValueError(f"x_in, x_out and mask must be on one device, got {sorted(map(str, devices))}")
    if x_out.device.type != "cuda" and not interpreted():
        raise ValueError("the Triton kernel runs on CUDA tensors (or on the CPU with TRITON_INTERPRET=1)")
    B, T, d = x_out.shape
    if d > MAX_HIDDEN:
        raise ValueError(f"hidden size {d} exceeds the Triton kernel's {MAX_HIDDEN}; use the cpp or "
                         "torch backend")
    block_d = triton.next_power_of_2(d)
    block_t = max(1, min(triton.next_power_of_2(seg_len), TILE_ELEMENTS // block_d))
    seg_len = max(block_t, triton.next_power_of_2(seg_len))
    n_seg = triton.cdiv(T, seg_len)
    dev = x_out.device
    rows = torch.empty((5, B, T), dtype=torch.float32, device=dev)
    seg_mean = torch.empty((B, n_seg, d), dtype=torch.float32, device=dev)
    seg_m2 = torch.empty((B, n_seg, d), dtype=torch.float32, device=dev)
    if B * T == 0:
        return rows.zero_(), seg_mean.zero_(), seg_m2.zero_(), seg_len
    num_warps = 4 if block_d <= 1024 else (8 if block_d <= 4096 else 16)
    _block_stats_kernel[(B * n_seg,)](
        x_in, x_out, mask, rows, seg_mean, seg_m2,
        T, d, n_seg, x_in.stride(0), x_in.stride(1), x_out.stride(0), x_out.stride(1), float(eps),
        SEG_LEN=seg_len, BLOCK_T=block_t, BLOCK_D=block_d, RELATIVE=bool(relative),
        num_warps=num_warps,
    )
    return rows, seg_mean, seg_m2, seg_len
