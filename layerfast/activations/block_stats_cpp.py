"""Host wrapper of the C++/OpenMP statistics kernel, the optional extension
``layerfast._block_stats_cpp`` (``layerfast/kernels/block_stats.cpp``): NumPy views of the tensors
(no copy) and output allocation. Importing this module fails with ImportError when the extension is
not built; :func:`layerfast.activations.dispatch.available` says so without importing it here.
"""

from __future__ import annotations

import torch

from .. import _block_stats_cpp
from .finish import Partials

SEG_LEN = 128  # positions per segment, the unit of OpenMP parallelism


def cpp_block_stats(
    x_in: torch.Tensor,  # [B, T, d] block input
    x_out: torch.Tensor,  # [B, T, d] block output
    mask: torch.Tensor,  # [B, T] uint8, contiguous, 1 = real token
    eps: float,
    relative: bool,
    seg_len: int = SEG_LEN,
    n_threads: int | None = None,
) -> Partials:
    """Run the kernel; returns its raw :class:`~.finish.Partials` in fp64 on the CPU.

    The input is assumed checked (:func:`layerfast.activations.dispatch.block_stats` does it):
    CPU tensors of fp32, bf16 or fp16, both alike, unit stride along d (any strides for B and T).
    ``n_threads`` defaults to ``torch.get_num_threads()``.
    """
    B, T, d = x_out.shape
    n_seg = -(-T // seg_len)
    rows = torch.empty((5, B, T), dtype=torch.float64)
    seg_mean = torch.empty((B, n_seg, d), dtype=torch.float64)
    seg_m2 = torch.empty((B, n_seg, d), dtype=torch.float64)
    threads = torch.get_num_threads() if n_threads is None else n_threads
    dtype = str(x_out.dtype).removeprefix("torch.")
    _block_stats_cpp.block_stats(
        _buffer(x_in),
        _buffer(x_out),
        dtype,
        mask.numpy(),
        float(eps),
        bool(relative),
        seg_len,
        rows.numpy(),
        seg_mean.numpy(),
        seg_m2.numpy(),
        threads,
    )
    return Partials(rows, seg_mean, seg_m2, seg_len)


def _buffer(x: torch.Tensor):
    """A NumPy view of ``x`` without a copy; 16-bit floats are viewed as int16 bit patterns."""
    x = x.detach()
    return (x if x.dtype == torch.float32 else x.view(torch.int16)).numpy()
