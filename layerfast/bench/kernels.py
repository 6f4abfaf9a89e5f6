"""The statistics kernels' throughput against the device's copy and read bandwidth.

Input: one batch of one block's residual streams, x_in and x_out [B, T, d] in the model's dtype
(d the model's hidden size), sized so that the kernel reads ``n_bytes`` (1 GiB by default: out of
every cache), with every token real. A kernel reads x_in and x_out once: GB/s = bytes read / time.
Measured, per backend that runs on this device: the host wrapper alone (``cpp_block_stats`` or
``triton_block_stats``: allocation and kernel) and the public op ``dispatch.block_stats`` (checks,
kernel and the fp64 ``finish`` reduction). The fp64 PyTorch reference is timed on CUDA only (on
a CPU it takes seconds per GB; it is the correctness yardstick, not a contender).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

from ..activations import dispatch
from . import rows
from .bandwidth import ceilings

TOKENS_PER_SAMPLE = 2048


def kernel_inputs(hidden: int, dtype: torch.dtype, n_bytes: int, device: torch.device):
    """x_in, x_out [B, 2048, hidden] of ``dtype`` (random normal) and an all-ones mask [B, 2048],
    B the fewest samples whose two inputs hold at least ``n_bytes``."""
    per_sample = 2 * TOKENS_PER_SAMPLE * hidden * dtype.itemsize
    batch = max(1, -(-n_bytes // per_sample))
    g = torch.Generator(device=device).manual_seed(0)
    shape = (batch, TOKENS_PER_SAMPLE, hidden)
    x_in = torch.randn(shape, generator=g, device=device, dtype=torch.float32).to(dtype)
    x_out = torch.randn(shape, generator=g, device=device, dtype=torch.float32).to(dtype)
    mask = torch.ones(shape[:2], dtype=torch.uint8, device=device)
    return x_in, x_out, mask


def providers(x_in, x_out, mask) -> dict[str, Callable[[], object]]:
    """Name -> call, for every backend that runs on ``x_in``'s device."""
    device = x_in.device
    reasons = dispatch.available()
    out: dict[str, Callable[[], object]] = {}
    if device.type == "cpu" and not reasons["cpp"]:
        from ..activations.block_stats_cpp import cpp_block_stats

        out["cpp kernel"] = lambda: cpp_block_stats(x_in, x_out, mask, 1e-5, False)
        out["cpp + finish"] = lambda: dispatch.block_stats(x_in, x_out, mask, 1e-5, False, "cpp")
    if device.type == "cuda" and not reasons["triton"]:
        from ..activations.block_stats_triton import triton_block_stats

        out["triton kernel"] = lambda: triton_block_stats(x_in, x_out, mask, 1e-5, False)
        out["triton + finish"] = lambda: dispatch.block_stats(
            x_in, x_out, mask, 1e-5, False, "triton"
        )
    if device.type == "cuda":
        from ..activations.reference import block_stats_ref

        out["torch reference (fp64)"] = lambda: block_stats_ref(x_in, x_out, mask, 1e-5, False)
    return out


def measure(
    hidden: int,
    dtype: torch.dtype,
    device: torch.device,
    n_bytes: int,
    repeat: int,
    budget_s: float,
    bar=None,
) -> tuple[dict, list[dict], list[str]]:
    """(summary, rows, printed lines) of the kernels step."""
    from .machine import times

    limits = ceilings(n_bytes, device, repeat, budget_s / 6)
    if bar is not None:
        bar.update(1)
    x_in, x_out, mask = kernel_inputs(hidden, dtype, n_bytes, device)
    read = 2 * x_in.numel() * x_in.element_size()
    timed = {}
    calls = providers(x_in, x_out, mask)
    for name, fn in calls.items():
        timed[name] = times(fn, device, repeat, budget_s / (2 * max(len(calls), 1)))
        if bar is not None:
            bar.update(1)
    dtype_name = str(dtype).removeprefix("torch.")
    size = "x".join(map(str, x_in.shape))
    copy_gbs, read_gbs = limits["copy"]["GB/s"], limits["read"]["GB/s"]
    lines = [
        f"statistics kernels: [{size}] {dtype_name} x2 = {read / 1e9:.2f} GB read per call, "
        f"{device}",
        f"  {'provider':<24} {'ms':>9} {'GB/s':>8} {'of copy':>8} {'of read':>8}",
    ]
    out_rows, summary = [], {"input_shape": list(x_in.shape), "bytes_read": read}
    for name, limit in limits.items():
        ms = 1e3 * statistics.median(limit["seconds"])
        lines.append(f"  {name + ' (ceiling)':<24} {ms:9.2f} {limit['GB/s']:8.1f}")
        summary[f"{name}_GB/s"] = limit["GB/s"]
        common = ("bandwidth", name, f"{limit['bytes'] / 2**30:.2f} GiB moved", "uint8")
        out_rows += [
            rows.row(*common, str(device), "ms", [1e3 * s for s in limit["seconds"]]),
            rows.row(
                *common, str(device), "GB/s", [limit["bytes"] / s / 1e9 for s in limit["seconds"]]
            ),
        ]
    for name, seconds in timed.items():
        gbs = read / statistics.median(seconds) / 1e9
        lines.append(
            f"  {name:<24} {1e3 * statistics.median(seconds):9.2f} {gbs:8.1f} "
            f"{100 * gbs / copy_gbs:7.1f}% {100 * gbs / read_gbs:7.1f}%"
        )
        summary[name] = {
            "ms": 1e3 * statistics.median(seconds),
            "GB/s": gbs,
            "of_copy": gbs / copy_gbs,
            "of_read": gbs / read_gbs,
        }
        common = ("block_stats", name, size, dtype_name, str(device))
        out_rows += [
            rows.row(*common, "ms", [1e3 * s for s in seconds]),
            rows.row(*common, "GB/s", [read / s / 1e9 for s in seconds]),
            rows.row(*common, "of_copy", [read / s / 1e9 / copy_gbs for s in seconds]),
        ]
    return summary, out_rows, lines
