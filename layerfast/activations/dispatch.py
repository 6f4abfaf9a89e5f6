"""The one place that picks a statistics backend and runs it.

Backends, all producing the accumulators of :mod:`layerfast.activations.reference` for one batch of one block:

* ``torch``: :func:`layerfast.activations.reference.stats_ref` (fp64, any float dtype, any device);
* ``cpp``: the C++/OpenMP extension ``layerfast._stats_cpp`` (``csrc/block_stats.cpp``), CPU tensors;
* ``triton``: the Triton kernel ``layerfast.kernels.block_stats`` (``kernels/block_stats.py``), CUDA tensors,
  or CPU tensors under ``TRITON_INTERPRET=1``.

The two kernels return per-row scalars and per-segment channel moments; :func:`finish` turns
those into accumulators in fp64, once for both. The kernels take float32, bfloat16 and float16
with unit stride along the hidden dimension; anything else raises rather than being copied.

Choice: ``backend="auto"`` (the default) reads ``LAYERFAST_BACKEND`` (auto|triton|cpp|torch); an
``auto`` that is left picks Triton on CUDA, C++ on the CPU, each when available and the dtype is
one it takes, else the reference. A backend asked for by name that cannot run raises.
"""
from __future__ import annotations

import importlib
import os

import torch

from .reference import empty, stats_ref

BACKENDS = ("auto", "triton", "cpp", "torch")
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
ENV = "LAYERFAST_BACKEND"
CPP_SEG_LEN = 128


def _import(name: str):
    try:
        return importlib.import_module(name), ""
    except Exception as exc:  # ImportError, or a Triton that fails to initialise
        return None, f"{type(exc).__name__}: {exc}"


def available() -> dict[str, str]:
    """Each backend -> "" when it can run here, else why not."""
    _, cpp_reason = _import("layerfast._stats_cpp")
    if cpp_reason:
        cpp_reason = ("the C++ extension is not built (reinstall without LAYERFAST_NO_EXT, with a "
                      f"C++ compiler): {cpp_reason}")
    _, triton_reason = _import("layerfast.kernels.block_stats")
    if not triton_reason and not torch.cuda.is_available() and not _interpreted():
        triton_reason = "no CUDA device (set TRITON_INTERPRET=1 to run the kernel on the CPU)"
    return {"torch": "", "cpp": cpp_reason, "triton": triton_reason}


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    """The backend that :func:`block_stats` will use for tensors on ``device`` of ``dtype``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown statistics backend {backend!r}; choose from {list(BACKENDS)}")
    if backend == "auto":
        backend = os.environ.get(ENV, "auto") or "auto"
        if backend not in BACKENDS:
            raise ValueError(f"{ENV}={backend!r} is not one of {list(BACKENDS)}")
    reasons = available()
    if backend == "auto":
        if dtype not in KERNEL_DTYPES:
            return "torch"
        wanted = "triton" if device.type == "cuda" else "cpp"
        return wanted if not reasons[wanted] else "torch"
    if reasons[backend]:
        raise RuntimeError(f"statistics backend {backend!r} is not available: {reasons[backend]}")
    if backend != "torch" and dtype not in KERNEL_DTYPES:
        raise TypeError(f"the {backend} statistics kernel takes float32, bfloat16 or float16, got "
                        f"{dtype}; use backend='torch' for other dtypes")
    if backend == "cpp" and device.type != "cpu":
        raise ValueError(f"the cpp statistics backend runs on CPU tensors, got {device}")
    if backend == "triton" and device.type != "cuda" and not _interpreted():
        raise ValueError(f"the triton statistics backend runs on CUDA tensors, got {device}")
    return backend


def block_stats(x_in: torch.Tensor,  # [B, T, d] block input (residual stream)
                x_out: torch.Tensor,  # [B, T, d] block output
                mask: torch.Tensor,  # [B, T] 1 = real token
                eps: float = 1e-5,
                relative: bool = False,
                backend: str = "torch") -> dict:
    """Accumulators of one batch of one block with a resolved backend (see :func:`resolve`)."""
    if backend == "torch":
        return stats_ref(x_in, x_out, mask, eps, relative)
    if x_in.ndim != 3 or x_in.shape != x_out.shape or mask.shape != x_out.shape[:2]:
        raise ValueError(f"expected x_in, x_out [B, T, d] and mask [B, T], got {tuple(x_in.shape)}, "
                         f"{tuple(x_out.shape)}, {tuple(mask.shape)}")
    if x_in.dtype != x_out.dtype:
        raise TypeError(f"x_in and x_out dtypes differ: {x_in.dtype} vs {x_out.dtype}")
    mask8 = mask.to(device=x_out.device, dtype=torch.uint8).contiguous()
    if backend == "cpp":
        rows, seg_mean, seg_m2, seg_len = _run_cpp(x_in, x_out, mask8, eps, relative)
    elif backend == "triton":
        from ..kernels.block_stats import block_stats as triton_block_stats
        rows, seg_mean, seg_m2, seg_len = triton_block_stats(x_in, x_out, mask8, eps, relative)
    else:
        raise ValueError(f"unknown statistics backend {backend!r}")
    return finish(rows, seg_mean, seg_m2, mask8, seg_len)


def _run_cpp(x_in, x_out, mask, eps, relative):
    from .. import _stats_cpp
    if x_in.stride(-1) != 1 or x_out.stride(-1) != 1:
        raise ValueError("the cpp statistics kernel needs unit stride along the hidden dimension")
    B, T, d = x_out.shape
    n_seg = -(-T // CPP_SEG_LEN)
    rows = torch.empty((5, B, T), dtype=torch.float64)
    seg_mean = torch.empty((B, n_seg, d), dtype=torch.float64)
    seg_m2 = torch.empty((B, n_seg, d), dtype=torch.float64)
    _stats_cpp.block_stats(_buffer(x_in), _buffer(x_out), str(x_out.dtype).replace("torch.", ""),
                           mask.numpy(), float(eps), bool(relative), CPP_SEG_LEN, rows.numpy(),
                           seg_mean.numpy(), seg_m2.numpy(), torch.get_num_threads())
    return rows, seg_mean, seg_m2, CPP_SEG_LEN


def _buffer(x: torch.Tensor):
    """A NumPy view of ``x`` without a copy; 16-bit floats are viewed as int16 bit patterns."""
    x = x.detach()
    return (x if x.dtype == torch.float32 else x.view(torch.int16)).numpy()


def finish(rows: torch.Tensor,  # [5, B, T] dot, |out|^2, |in|^2, small, nonfinite per row
           seg_mean: torch.Tensor,  # [B, S, d] channel means per segment of seg_len positions
           seg_m2: torch.Tensor,  # [B, S, d] channel sums of squared deviations per segment
           mask: torch.Tensor,  # [B, T] 1 = real token
           seg_len: int) -> dict:
    """Kernel outputs -> the accumulators of :func:`layerfast.activations.reference.stats_ref`, in fp64."""
    B, S, d = seg_mean.shape
    T = mask.shape[1]
    keep = mask.bool().cpu()  # [B, T]
    rows, seg_mean, seg_m2 = rows.double().cpu(), seg_mean.double().cpu(), seg_m2.double().cpu()
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
    acc["cos_sum"], acc["angle_sum"] = _cos_angle_sums(dot, ssa, ssb)
    acc["norm_sum"] = float(ssa.sqrt().sum())
    acc["small"], acc["nonfinite"] = float(small.sum()), float(nonfinite.sum())
    last = T - 1 - keep.flip(1).int().argmax(1)  # [B] last real position of each sample
    rows_last = torch.nonzero(has_tokens).squeeze(1)
    acc["last_cos_sum"], acc["last_angle_sum"] = _cos_angle_sums(
        *(rows[i][rows_last, last[rows_last]] for i in range(3)))
    return acc


def _cos_angle_sums(dot: torch.Tensor, ssa: torch.Tensor, ssb: torch.Tensor) -> tuple[float, float]:
    """Sums over rows of cos(out, in) and arccos(cos) / pi from dot products and squared norms."""
    cos = dot / (ssa.sqrt().clamp_min(1e-12) * ssb.sqrt().clamp_min(1e-12))
    return float(cos.sum()), float((torch.arccos(cos.clamp(-1.0, 1.0)) / torch.pi).sum())
