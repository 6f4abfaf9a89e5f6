"""Host wrapper of the C++/OpenMP statistics kernel, the optional extension
``layerfast._block_stats_cpp`` (``layerfast/kernels/block_stats.cpp``): NumPy views of the tensors
(no copy) and output allocation. Importing this module fails with ImportError when the extension is
not built; :func:`layerfast.activations.dispatch.available` says so without importing it here.
"""

from __future__ import annotations

import torch

from .. import _block_stats_cpp
from .finish import Partials

MIN_SEG_LEN, MAX_SEG_LEN = 128, 2048  # positions per segment, the unit of OpenMP parallelism
SEGMENTS_PER_THREAD = 4  # enough segments for the dynamic schedule to even out the threads


def segment_length(batch: int, tokens: int, threads: int) -> int:
    """Positions per segment for [batch, tokens] rows on ``threads`` threads: the longest power
    of two from 128 to 2048 that still gives every thread :data:`SEGMENTS_PER_THREAD` segments
    (128 when even that does not). Each segment costs a reset and a write of its [d] channel
    moments, and ``finish`` reads its partials, so at hidden 576 segments of 2048 rows ran the
    kernel 1.6x and finish 2x faster than segments of 128 (1 GiB of bf16, 2 threads)."""
    seg_len = MIN_SEG_LEN
    while (
        seg_len < MAX_SEG_LEN
        and seg_len < tokens
        and batch * -(-tokens // (2 * seg_len)) >= SEGMENTS_PER_THREAD * threads
    ):
        seg_len *= 2
    return seg_len


def cpp_block_stats(
    x_in: torch.Tensor,  # [B, T, d] block input
    x_out: torch.Tensor,  # [B, T, d] block output
    mask: torch.Tensor,  # [B, T] uint8, contiguous, 1 = real token
    eps: float,
    relative: bool,
    seg_len: int | None = None,
    n_threads: int | None = None,
    with_rows: bool = False,
) -> Partials:
    """Run the kernel; returns its raw :class:`~.finish.Partials` in fp64 on the CPU: each
    segment's sums of its rows' scalars and its last real row (``seg_sums``, ``seg_last``), which
    is all ``finish`` needs of the rows, and the per-row scalars ``rows`` only ``with_rows`` (the
    tests look at them). Written, those [5, B, T] fp64 rows cost their page faults on every call:
    7 ms of the kernel's ~60 on 1 GiB of bf16 at hidden 576 (466,944 rows, one thread).

    The input is assumed checked (:func:`layerfast.activations.dispatch.block_stats` does it):
    CPU tensors of fp32, bf16 or fp16, both alike, unit stride along d (any strides for B and T).
    ``n_threads`` defaults to ``torch.get_num_threads()``, ``seg_len`` to
    :func:`segment_length`.
    """
    B, T, d = x_out.shape
    threads = torch.get_num_threads() if n_threads is None else n_threads
    seg_len = segment_length(B, T, threads) if seg_len is None else seg_len
    n_seg = -(-T // seg_len)
    rows = torch.empty((5, B, T) if with_rows else (0,), dtype=torch.float64)
    seg_mean = torch.empty((B, n_seg, d), dtype=torch.float64)
    seg_m2 = torch.empty((B, n_seg, d), dtype=torch.float64)
    seg_sums = torch.empty((B, n_seg, 6), dtype=torch.float64)
    seg_last = torch.empty((B, n_seg, 3), dtype=torch.float64)
    dtype = str(x_out.dtype).removeprefix("torch.")
    _block_stats_cpp.block_stats(
        numpy_view(x_in),
        numpy_view(x_out),
        dtype,
        mask.numpy(),
        float(eps),
        bool(relative),
        seg_len,
        rows.numpy(),
        seg_mean.numpy(),
        seg_m2.numpy(),
        seg_sums.numpy(),
        seg_last.numpy(),
        threads,
    )
    return Partials(rows if with_rows else None, seg_mean, seg_m2, seg_len, seg_sums, seg_last)


def numpy_view(x: torch.Tensor):
    """A NumPy view of ``x`` without a copy; 16-bit floats are viewed as int16 bit patterns."""
    x = x.detach()
    return (x if x.dtype == torch.float32 else x.view(torch.int16)).numpy()
