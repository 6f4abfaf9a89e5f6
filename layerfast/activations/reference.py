"""Streaming per-block activation statistics: the plain-PyTorch reference.

One call folds one batch of one block into small fp64 accumulators; no [tokens x hidden] tensor
is kept. Padding tokens (mask 0) are excluded everywhere. Compiled kernels (C++, Triton) must
reproduce :func:`stats_ref`; :mod:`layerfast.activations.dispatch` runs them.

Accumulators (``d`` = hidden size):

* ``n_tokens``, ``n_entries`` (= n_tokens * d), ``n_samples``
* ``av_sum``: sum over samples of the unbiased variance across the d units of the sample's
  token-mean vector (AV = av_sum / n_samples)
* ``small``: count of entries with |a| < eps (absolute), or < eps * RMS of the token's vector
  when ``relative`` (AS = small / n_entries)
* ``cos_sum``, ``angle_sum``: sums over tokens of cos(block input, block output) and of
  arccos(cos) / pi; ``last_cos_sum``, ``last_angle_sum``: the same for each sample's last token
* ``norm_sum``: sum over tokens of the output's L2 norm
* ``ch_mean``, ``ch_m2``: per-channel mean [d] and sum of squared deviations [d] (Chan's merge)
* ``nonfinite``: count of NaN/inf output entries (reported, never silently absorbed)
"""
from __future__ import annotations

import math

import torch

FIELDS = ("n_tokens", "n_entries", "n_samples", "av_sum", "small", "cos_sum", "angle_sum",
          "last_cos_sum", "last_angle_sum", "norm_sum", "nonfinite")


def empty(d: int) -> dict:
    acc = {k: 0.0 for k in FIELDS}
    acc["ch_mean"] = torch.zeros(d, dtype=torch.float64)
    acc["ch_m2"] = torch.zeros(d, dtype=torch.float64)
    return acc


def stats_ref(x_in: torch.Tensor,  # [B, T, d] block input (residual stream)
              x_out: torch.Tensor,  # [B, T, d] block output
              mask: torch.Tensor,  # [B, T] 1 = real token
              eps: float = 1e-5,
              relative: bool = False) -> dict:
    """Accumulators of one batch of one block (see the module docstring)."""
    if x_in.shape != x_out.shape or x_out.ndim != 3 or mask.shape != x_out.shape[:2]:
        raise ValueError(f"expected x_in, x_out [B, T, d] and mask [B, T], got {tuple(x_in.shape)}, "
                         f"{tuple(x_out.shape)}, {tuple(mask.shape)}")
    d = x_out.shape[-1]
    keep = mask.bool()
    a = x_out.double()[keep]  # [N, d] real tokens only
    b = x_in.double()[keep]  # [N, d]
    acc = empty(d)
    n = a.shape[0]
    if n == 0:
        return acc
    acc["n_tokens"], acc["n_entries"] = float(n), float(n * d)
    acc["nonfinite"] = float((~torch.isfinite(a)).sum())
    lengths = keep.sum(1)  # [B]
    has_tokens = lengths > 0
    sums = (x_out.double() * keep[..., None]).sum(1)[has_tokens]  # [B', d]
    means = sums / lengths[has_tokens, None]  # [B', d] per-sample token means
    acc["n_samples"] = float(means.shape[0])
    acc["av_sum"] = float(means.var(dim=1, unbiased=True).sum()) if d > 1 else 0.0
    threshold = eps * a.pow(2).mean(1, keepdim=True).sqrt() if relative else eps
    acc["small"] = float((a.abs() < threshold).sum())
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)  # [N]
    angle = torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi
    acc["cos_sum"], acc["angle_sum"] = float(cos.sum()), float(angle.sum())
    rows = torch.nonzero(has_tokens).squeeze(1)
    last = (keep.shape[1] - 1 - keep.flip(1).int().argmax(1))[rows]  # last real position
    last_cos = torch.nn.functional.cosine_similarity(
        x_out.double()[rows, last], x_in.double()[rows, last], dim=1, eps=1e-12)
    acc["last_cos_sum"] = float(last_cos.sum())
    acc["last_angle_sum"] = float((torch.arccos(last_cos.clamp(-1.0, 1.0)) / math.pi).sum())
    acc["norm_sum"] = float(a.norm(dim=1).sum())
    acc["ch_mean"] = a.mean(0)
    acc["ch_m2"] = ((a - acc["ch_mean"]) ** 2).sum(0)
    return acc


def merge(acc: dict, other: dict) -> dict:
    """Combine two accumulators of the same block (Chan et al.'s parallel variance merge)."""
    out = {k: acc[k] + other[k] for k in FIELDS}
    n_a, n_b = acc["n_tokens"], other["n_tokens"]
    n = n_a + n_b
    if n == 0:
        out["ch_mean"], out["ch_m2"] = acc["ch_mean"].clone(), acc["ch_m2"].clone()
        return out
    delta = other["ch_mean"] - acc["ch_mean"]
    out["ch_mean"] = acc["ch_mean"] + delta * (n_b / n)
    out["ch_m2"] = acc["ch_m2"] + other["ch_m2"] + delta ** 2 * (n_a * n_b / n)
    return out
