"""Streaming per-block activation statistics: the plain-PyTorch reference, :func:`block_stats_ref`.

One call folds one batch of one block into small fp64 accumulators; no [tokens x hidden] tensor
is kept. Padding tokens (mask 0) are excluded everywhere. The compiled kernels (C++, Triton) must
reproduce :func:`block_stats_ref`; :mod:`layerfast.activations.dispatch` runs them, and
:mod:`layerfast.activations.finish` turns their partial sums into these same accumulators.

Accumulators (``d`` = hidden size):

* ``n_tokens``, ``n_entries`` (= n_tokens * d), ``n_samples``
* ``av_sum``: sum over samples of the unbiased variance across the d units of the sample's
  token-mean vector (AV = av_sum / n_samples)
* ``small``: count of entries with |a| < eps (absolute), or < eps * RMS of the token's vector
  when ``relative`` (AS = small / n_entries)
* ``cos_sum``, ``angle_sum``: sums over tokens of cos(block input, block output) and of
  arccos(cos) / pi; ``last_cos_sum``, ``last_angle_sum``: the same for each sample's last token
* ``norm_sum``: sum over tokens of the output's L2 norm
* ``ch_mean``, ``ch_m2``: per-channel mean [d] and sum of squared deviations [d] (Chan's merge),
  fp64 CPU tensors whatever the input's device, so accumulators of any backend merge
* ``nonfinite``: count of NaN/inf output entries (reported, never silently absorbed)

All but ``ch_mean`` and ``ch_m2`` are Python floats.
"""

from __future__ import annotations

import torch

from ..errors import UsageError

FIELDS = (
    "n_tokens",
    "n_entries",
    "n_samples",
    "av_sum",
    "small",
    "cos_sum",
    "angle_sum",
    "last_cos_sum",
    "last_angle_sum",
    "norm_sum",
    "nonfinite",
)


def empty(d: int) -> dict:
    """Accumulators of no token for hidden size ``d`` (the identity of :func:`merge`)."""
    acc = {k: 0.0 for k in FIELDS}
    acc["ch_mean"] = torch.zeros(d, dtype=torch.float64)
    acc["ch_m2"] = torch.zeros(d, dtype=torch.float64)
    return acc


def check_shapes(x_in: torch.Tensor, x_out: torch.Tensor, mask: torch.Tensor) -> None:
    """Raise :class:`~layerfast.errors.UsageError` unless x_in, x_out are [B, T, d], mask [B, T]."""
    if x_in.shape != x_out.shape or x_out.ndim != 3 or mask.shape != x_out.shape[:2]:
        raise UsageError(
            f"expected x_in, x_out [B, T, d] and mask [B, T], got "
            f"{tuple(x_in.shape)}, {tuple(x_out.shape)}, {tuple(mask.shape)}"
        )


def last_positions(keep: torch.Tensor) -> torch.Tensor:
    """[B, T] bool mask -> [B] index of each sample's last real position (T - 1 for a sample
    with none; callers drop those samples)."""
    return keep.shape[1] - 1 - keep.flip(1).view(torch.uint8).argmax(1)  # no int copy


def cos_angle(
    dot: torch.Tensor,  # [...] dot products of output and input rows
    ssa: torch.Tensor,  # [...] squared norms of the output rows
    ssb: torch.Tensor,  # [...] squared norms of the input rows
    norm_a: torch.Tensor | None = None,  # [...] ssa.sqrt() where the caller has it: overwritten
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, cos(out, in) and arccos(cos) / pi (norms clamped at 1e-12), each [...].

    Three new tensors (the rest in place), two with ``norm_a``: over the ~500,000 rows of a 1 GB
    batch each fresh fp64 temporary cost about as much as the arithmetic (its pages are faulted
    in)."""
    norm_a = ssa.sqrt() if norm_a is None else norm_a
    norms = norm_a.clamp_min_(1e-12).mul_(ssb.sqrt().clamp_min_(1e-12))
    cos = torch.div(dot, norms, out=norms) if dot.dtype == norms.dtype else dot / norms
    return cos, cos.clamp(-1.0, 1.0).arccos_().div_(torch.pi)


def cos_angle_sums(
    dot: torch.Tensor,  # [N] dot products of output and input rows
    ssa: torch.Tensor,  # [N] squared norms of the output rows
    ssb: torch.Tensor,  # [N] squared norms of the input rows
) -> tuple[float, float]:
    """Sums over rows of cos(out, in) and of arccos(cos) / pi (see :func:`cos_angle`)."""
    cos, angle = cos_angle(dot, ssa, ssb)
    return float(cos.sum()), float(angle.sum())


def block_stats_ref(
    x_in: torch.Tensor,  # [B, T, d] block input (residual stream)
    x_out: torch.Tensor,  # [B, T, d] block output
    mask: torch.Tensor,  # [B, T] 1 = real token
    eps: float = 1e-5,
    relative: bool = False,
    acc_dtype: torch.dtype = torch.float64,
) -> dict:
    """Accumulators of one batch of one block (see the module docstring), in fp64.

    ``acc_dtype`` is the dtype of the sums over channels and tokens; what is computed from those
    sums (cos, arccos, norms, thresholds, the variance across units of the sample means) is fp64
    either way. fp64 is the reference; fp32 accumulates as the compiled kernels do, and its
    distance to the fp64 result is the yardstick the tests hold the kernels to.
    """
    check_shapes(x_in, x_out, mask)
    d = x_out.shape[-1]
    keep = mask.bool()
    a_all, b_all = x_out.to(acc_dtype), x_in.to(acc_dtype)  # [B, T, d]
    a, b = a_all[keep], b_all[keep]  # [N, d] real tokens only
    acc = empty(d)
    n = a.shape[0]
    if n == 0:
        return acc
    acc["n_tokens"], acc["n_entries"] = float(n), float(n * d)
    acc["nonfinite"] = float((~torch.isfinite(a)).sum())
    lengths = keep.sum(1)  # [B]
    has_tokens = lengths > 0
    sums = (a_all * keep[..., None]).sum(1)[has_tokens].double()  # [B', d]
    means = sums / lengths[has_tokens, None]  # [B', d] per-sample token means
    acc["n_samples"] = float(means.shape[0])
    acc["av_sum"] = float(means.var(dim=1, unbiased=True).sum()) if d > 1 else 0.0
    ssa = (a * a).sum(1).double()  # [N]
    threshold = eps * (ssa / d).sqrt()[:, None] if relative else eps
    acc["small"] = float((a.abs() < threshold).sum())
    acc["cos_sum"], acc["angle_sum"] = cos_angle_sums(
        (a * b).sum(1).double(), ssa, (b * b).sum(1).double()
    )
    rows = torch.nonzero(has_tokens).squeeze(1)
    last = last_positions(keep)[rows]
    la, lb = a_all[rows, last], b_all[rows, last]  # [B', d]
    acc["last_cos_sum"], acc["last_angle_sum"] = cos_angle_sums(
        *((u * v).sum(1).double() for u, v in ((la, lb), (la, la), (lb, lb)))
    )
    acc["norm_sum"] = float(ssa.sqrt().sum())
    ch_mean = a.sum(0).double() / n  # [d]
    acc["ch_mean"] = ch_mean.cpu()
    acc["ch_m2"] = ((a - ch_mean.to(acc_dtype)) ** 2).sum(0).double().cpu()
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
    out["ch_m2"] = acc["ch_m2"] + other["ch_m2"] + delta**2 * (n_a * n_b / n)
    return out
