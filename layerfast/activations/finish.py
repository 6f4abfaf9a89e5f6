"""The kernels' raw partials -> the fp64 accumulators of :func:`~.reference.block_stats_ref`.

Both compiled kernels (:func:`~.cpp_block_stats.cpp_block_stats`,
:func:`~.triton_block_stats.triton_block_stats`) return the same :class:`Partials`: per real row
(token) five scalars, and per segment of ``seg_len`` consecutive positions of one sample the
channel moments of its real rows. :func:`finish` reduces those in fp64 on the CPU, once for both
kernels, so no statistic is written twice.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .reference import cos_angle_sums, empty, last_positions


class Partials(NamedTuple):
    """What a kernel returns for one batch of one block (fp32 or fp64, on the kernel's device)."""

    rows: torch.Tensor  # [5, B, T] dot(out, in), |out|^2, |in|^2, #small, #nonfinite; 0 on padding
    seg_mean: torch.Tensor  # [B, S, d] channel means of each segment's real rows (0 if none)
    seg_m2: torch.Tensor  # [B, S, d] channel sums of squared deviations per segment
    seg_len: int  # positions per segment: S = ceil(T / seg_len)


def finish(partials: Partials, mask: torch.Tensor) -> dict:
    """Partials of one batch of one block and its mask [B, T] (1 = real token) -> the
    accumulators of :func:`~.reference.block_stats_ref`, in fp64."""
    B, S, d = partials.seg_mean.shape
    T = mask.shape[1]
    seg_len = partials.seg_len
    keep = mask.bool().cpu()  # [B, T]
    rows = partials.rows.double().cpu()
    seg_mean, seg_m2 = partials.seg_mean.double().cpu(), partials.seg_m2.double().cpu()
    acc = empty(d)
    n = int(keep.sum())
    if n == 0:
        return acc
    padded = torch.nn.functional.pad(keep, (0, S * seg_len - T))  # [B, S * seg_len]
    seg_n = padded.view(B, S, seg_len).sum(2).double()  # [B, S] real rows per segment
    weighted = seg_n[..., None] * seg_mean  # [B, S, d] channel sums per segment
    # AV: per-sample token means, unbiased variance across the d units
    sample_n = seg_n.sum(1)  # [B]
    has_tokens = sample_n > 0
    means = weighted.sum(1)[has_tokens] / sample_n[has_tokens, None]  # [B', d]
    acc["n_tokens"], acc["n_entries"], acc["n_samples"] = float(n), float(n * d), float(len(means))
    acc["av_sum"] = float(means.var(dim=1, unbiased=True).sum()) if d > 1 else 0.0
    # channel moments over all real rows (Chan's merge of the segments)
    ch_mean = weighted.sum((0, 1)) / n  # [d]
    # empty segments hold zeros and get weight 0
    spread = (seg_n[..., None] * (seg_mean - ch_mean).square_()).sum((0, 1))  # [d]
    acc["ch_mean"], acc["ch_m2"] = ch_mean, seg_m2.sum((0, 1)) + spread
    # per-row scalars
    real = rows.view(5, -1) if n == B * T else rows[:, keep]  # [5, n]
    dot, ssa, ssb, small, nonfinite = real
    acc["cos_sum"], acc["angle_sum"] = cos_angle_sums(dot, ssa, ssb)
    acc["norm_sum"] = float(ssa.sqrt().sum())
    acc["small"], acc["nonfinite"] = float(small.sum()), float(nonfinite.sum())
    last = last_positions(keep)  # [B]
    rows_last = torch.nonzero(has_tokens).squeeze(1)
    acc["last_cos_sum"], acc["last_angle_sum"] = cos_angle_sums(
        *(rows[i][rows_last, last[rows_last]] for i in range(3))
    )
    return acc
