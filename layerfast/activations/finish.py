"""The kernels' raw partials -> the fp64 accumulators of :func:`~.reference.block_stats_ref`.

Both compiled kernels (:func:`~.cpp_block_stats.cpp_block_stats`,
:func:`~.triton_block_stats.triton_block_stats`) return the same :class:`Partials`: per segment
of ``seg_len`` consecutive positions of one sample the channel moments of its real rows, and
either per real row (token) five scalars (Triton) or each segment's sums of them and its last
row (C++). :func:`finish` reduces those in fp64, once for both kernels, so no statistic is
written twice (but each row's cos and angle, which the C++ kernel also computes to sum them).
It runs on the partials' own device (the GPU for the Triton kernel, the CPU for the C++ one)
without data-dependent shapes, so nothing waits on the device until the end; then only the
results (eleven scalars and the two [d] channel vectors, one fp64 vector) cross to the host, in
one transfer: one device synchronisation per call.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .reference import FIELDS, cos_angle, empty, last_positions


class Partials(NamedTuple):
    """What a kernel returns for one batch of one block (fp32 or fp64, on the kernel's device).

    ``seg_sums`` and ``seg_last`` come together or not at all: the C++ kernel counts each
    segment's real rows and adds up their scalars while they are in its cache
    (``kernels/block_stats_rows.h``) and keeps the last one's, so ``finish`` reads neither the
    mask nor ``rows`` (which that kernel then writes only when asked: ``rows`` is None). On
    ~500,000 rows (1 GiB of bf16 at hidden 576, one thread) that saved ``finish`` 13-14 ms of
    passes over them, and the kernel 7 ms of page faults on a fresh [5, B, T] fp64 output. The
    Triton kernel leaves both None, and ``finish`` takes them from the mask and ``rows``.
    """

    rows: torch.Tensor | None  # [5, B, T] dot(out, in), |out|^2, |in|^2, #small, #nonfinite; 0 on
    # padding
    seg_mean: torch.Tensor  # [B, S, d] channel means of each segment's real rows (0 if none)
    seg_m2: torch.Tensor  # [B, S, d] channel sums of squared deviations per segment
    seg_len: int  # positions per segment: S = ceil(T / seg_len)
    # [B, S, 6] sums over each segment's real rows of 1, |out|, cos(out, in), arccos(cos) / pi,
    # #small, #nonfinite (fp64), or None
    seg_sums: torch.Tensor | None = None
    # [B, S, 3] dot(out, in), |out|^2, |in|^2 of each segment's last real row (0 without one)
    seg_last: torch.Tensor | None = None


def finish(partials: Partials, mask: torch.Tensor) -> dict:
    """Partials of one batch of one block and its mask [B, T] (1 = real token) -> the
    accumulators of :func:`~.reference.block_stats_ref`, in fp64, as :func:`~.reference.empty`
    makes them: Python floats, and ``ch_mean``, ``ch_m2`` fp64 CPU tensors [d], whatever device
    the partials are on.

    Every sum is taken in fp64 on the partials' device. The per-row fields come from the
    segments' sums where the kernel gave them (:func:`_row_fields`), else from the rows and the
    mask (:func:`_row_fields_from_rows`). ``seg_mean`` is read twice (the per-sample channel
    sums; its deviation from the channel mean, one [B, S, d] temporary squared in place and
    summed with the segments' weights) and ``seg_m2`` once; they are copied only when the kernel
    wrote them in fp32 (Triton's, on the GPU).
    """
    B, S, d = partials.seg_mean.shape
    if B * mask.shape[1] == 0:
        return empty(d)
    f64 = torch.float64
    device = partials.seg_mean.device
    seg_mean, seg_m2 = partials.seg_mean.to(f64), partials.seg_m2.to(f64)  # [B, S, d]
    if partials.seg_sums is not None:
        seg_n, acc, last = _row_fields(partials)
    else:
        seg_n, acc, last = _row_fields_from_rows(partials, mask.to(device=device, dtype=torch.bool))
    sample_n = seg_n.sum(1)  # [B]
    has_tokens = sample_n > 0
    n = sample_n.sum()
    acc.update(n_tokens=n, n_entries=n * d, n_samples=has_tokens.sum(dtype=f64))
    sums = torch.bmm(seg_n[:, None, :], seg_mean)[:, 0]  # [B, d] channel sums per sample
    # channel moments over all real rows (Chan's merge of the segments); empty segments hold
    # zeros and get weight 0
    ch_mean = sums.sum(0) / n.clamp_min(1)  # [d]
    # AV: per-sample token means, unbiased variance across the d units (0 for a sample with
    # no token: its means are 0), in two passes (Tensor.var took 9x as long on [228, 576]),
    # in place of the sums
    if d > 1:
        means = sums.div_(sample_n.clamp_min(1)[:, None])  # [B, d]
        acc["av_sum"] = means.sub_(means.mean(1, keepdim=True)).square_().sum() / (d - 1)
    else:
        acc["av_sum"] = torch.zeros((), dtype=f64, device=device)
    spread = torch.mm(seg_n.view(1, B * S), (seg_mean - ch_mean).square_().reshape(B * S, d))[0]
    ch_m2 = seg_m2.sum((0, 1)) + spread  # [d]
    last_cos, last_angle = cos_angle(*last)  # [B] each
    acc["last_cos_sum"] = torch.where(has_tokens, last_cos, 0).sum()
    acc["last_angle_sum"] = torch.where(has_tokens, last_angle, 0).sum()
    # with no real token every field above is 0, as in empty(d)
    host = torch.cat([torch.stack([acc[k] for k in FIELDS]), ch_mean, ch_m2]).cpu()  # one sync
    out = dict(zip(FIELDS, host[: len(FIELDS)].tolist()))
    out["ch_mean"], out["ch_m2"] = host[len(FIELDS) : len(FIELDS) + d], host[len(FIELDS) + d :]
    return out


PER_ROW = ("norm_sum", "cos_sum", "angle_sum", "small", "nonfinite")  # seg_sums[..., 1:]


def _row_fields(partials: Partials) -> tuple[torch.Tensor, dict, tuple[torch.Tensor, ...]]:
    """From the segments' sums: real rows per segment [B, S], the per-row fields (0-dim
    tensors) and (dot, |out|^2, |in|^2) of each sample's last real row, [B] each: the last one
    of its last segment that has any (anything, for a sample without a real row)."""
    seg_sums = partials.seg_sums.to(torch.float64)  # [B, S, 6]
    seg_n = seg_sums[..., 0].contiguous()  # [B, S]; strided, it sent bmm down a loop over B
    acc = dict(zip(PER_ROW, seg_sums[..., 1:].sum((0, 1)).unbind()))  # one reduction
    last_seg = last_positions(seg_n > 0)  # [B] each sample's last segment with a real row
    samples = torch.arange(seg_n.shape[0], device=seg_n.device)
    last = partials.seg_last.to(torch.float64)[samples, last_seg].unbind(1)  # [B] each
    return seg_n, acc, last


def _row_fields_from_rows(
    partials: Partials, keep: torch.Tensor
) -> tuple[torch.Tensor, dict, tuple[torch.Tensor, ...]]:
    """As :func:`_row_fields`, from the rows [5, B, T] and the mask ``keep`` [B, T] (bool). The
    per-row scalars are 0 on padding (the :class:`Partials` contract), and so is their cos, so
    their sums need no gather of the real rows; only the angle (1/2 at cos 0) is masked."""
    B, S, _ = partials.seg_mean.shape
    T = keep.shape[1]
    padded = torch.nn.functional.pad(keep, (0, S * partials.seg_len - T))  # [B, S * seg_len]
    # [B, S] real rows per segment (an int32 sum: in fp64 or int64 it copied the mask first)
    seg_n = padded.view(B, S, partials.seg_len).sum(2, dtype=torch.int32).to(torch.float64)
    dot, ssa, ssb, small, nonfinite = partials.rows.to(torch.float64)  # [B, T] each
    norm_a = ssa.sqrt()  # [B, T]
    acc = {"norm_sum": norm_a.sum()}
    cos, angle = cos_angle(dot, ssa, ssb, norm_a)  # [B, T]; norm_a is overwritten
    acc["cos_sum"] = cos.sum()
    acc["angle_sum"] = angle.masked_fill_(~keep, 0).sum()
    acc["small"], acc["nonfinite"] = small.sum(), nonfinite.sum()
    last = last_positions(keep)  # [B]
    samples = torch.arange(B, device=keep.device)
    return seg_n, acc, (dot[samples, last], ssa[samples, last], ssb[samples, last])
