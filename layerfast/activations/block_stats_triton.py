"""Host wrapper of the Triton statistics kernel (``layerfast/kernels/block_stats.py``): launch
grid, tile sizes, output allocation, and the launch on the tensors' own CUDA device. Importing
this module imports Triton.
"""

from __future__ import annotations

import contextlib

import torch
import triton

from ..kernels.block_stats import _block_stats_kernel
from .finish import Partials

SEG_LEN = 64  # positions per segment (one program each), before rounding to the tile
TILE_ELEMENTS = 8192  # BLOCK_T x BLOCK_D per load


def triton_block_stats(
    x_in: torch.Tensor,  # [B, T, d] block input
    x_out: torch.Tensor,  # [B, T, d] block output
    mask: torch.Tensor,  # [B, T] uint8, contiguous, 1 = real token
    eps: float,
    relative: bool,
    seg_len: int = SEG_LEN,
) -> Partials:
    """Launch the kernel; returns its raw :class:`~.finish.Partials` in fp32 on the input's device,
    with the segment length used (a power of two at least ``seg_len``).

    The input is assumed checked (:func:`layerfast.activations.dispatch.block_stats` does it):
    fp32, bf16 or fp16, both tensors alike, unit stride along d, d <= 16384, every tensor on one
    CUDA device (or on the CPU under ``TRITON_INTERPRET=1``).
    """
    B, T, d = x_out.shape
    block_d = triton.next_power_of_2(d)
    block_t = max(1, min(triton.next_power_of_2(seg_len), TILE_ELEMENTS // block_d))
    seg_len = max(block_t, triton.next_power_of_2(seg_len))
    n_seg = triton.cdiv(T, seg_len)
    dev = x_out.device
    rows = torch.empty((5, B, T), dtype=torch.float32, device=dev)
    seg_mean = torch.empty((B, n_seg, d), dtype=torch.float32, device=dev)
    seg_m2 = torch.empty((B, n_seg, d), dtype=torch.float32, device=dev)
    if B * T == 0:
        return Partials(rows.zero_(), seg_mean.zero_(), seg_m2.zero_(), seg_len)
    num_warps = 4 if block_d <= 1024 else (8 if block_d <= 4096 else 16)
    with _on_device(dev):  # Triton launches on the current CUDA device
        _launch(
            x_in, x_out, mask, rows, seg_mean, seg_m2, eps, relative, seg_len, block_t, num_warps
        )
    return Partials(rows, seg_mean, seg_m2, seg_len)


def _on_device(dev: torch.device):
    return torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext()


def _launch(x_in, x_out, mask, rows, seg_mean, seg_m2, eps, relative, seg_len, block_t, num_warps):
    B, T, d = x_out.shape
    n_seg = seg_mean.shape[1]
    _block_stats_kernel[(B * n_seg,)](
        x_in,
        x_out,
        mask,
        rows,
        seg_mean,
        seg_m2,
        T,
        d,
        n_seg,
        x_in.stride(0),
        x_in.stride(1),
        x_out.stride(0),
        x_out.stride(1),
        float(eps),
        SEG_LEN=seg_len,
        BLOCK_T=block_t,
        BLOCK_D=triton.next_power_of_2(d),
        RELATIVE=bool(relative),
        num_warps=num_warps,
    )
