"""The statistics kernels' throughput against the device's copy and read bandwidth.

Input: one batch of one block's residual streams, x_in and x_out [B, T, d] in the model's dtype
(d the model's hidden size), sized so that the kernel reads ``n_bytes`` (1 GiB by default: out of
every cache), with every token real. A kernel reads x_in and x_out once: GB/s = bytes read / time.
Measured, per backend that runs on this device: the host wrapper alone (``cpp_block_stats`` or
``triton_block_stats``: allocation and kernel) and the public op ``dispatch.block_stats`` (checks,
kernel and the fp64 ``finish`` reduction). The fp64 PyTorch reference is timed on CUDA only (on
a CPU it takes seconds per GB; it is the correctness yardstick, not a contender).

Before anything is allocated, :func:`check_kernel_bytes` refuses a size whose buffers, counted
at the step's peak (:func:`peak_bytes`), would not fit in :data:`~.memory.SAFE_SHARE` of the
device's free memory (:func:`~.memory.free_memory`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

from ..activations import dispatch
from ..errors import UsageError
from . import rows
from .bandwidth import ceilings
from .memory import SAFE_SHARE, free_memory, human

TOKENS_PER_SAMPLE = 2048
REFERENCE_BYTES = 48  # per input entry: the fp64 reference's copies and temporaries (measured)
MIB = 1 << 20


def input_shape(hidden: int, dtype: torch.dtype, n_bytes: int) -> tuple[int, int, int]:
    """[B, 2048, hidden]: B the fewest samples whose two inputs hold at least ``n_bytes``."""
    per_sample = 2 * TOKENS_PER_SAMPLE * hidden * dtype.itemsize
    return max(1, -(-n_bytes // per_sample)), TOKENS_PER_SAMPLE, hidden


def peak_bytes(hidden: int, dtype: torch.dtype, n_bytes: int, device: torch.device) -> int:
    """The most bytes the kernels step holds at once for ``n_bytes``: the larger of the two
    bandwidth buffers (:func:`~.bandwidth.ceilings`: source and copy target) and the kernel
    inputs (x_in, x_out, the mask and its uint8 copy) with the largest of what comes and goes
    beside them: the fp32 draw an input is made from, the kernels' partial sums and their
    reduction, and on CUDA the fp64 reference (:data:`REFERENCE_BYTES` per entry)."""
    batch, tokens, _ = input_shape(hidden, dtype, n_bytes)
    entries = batch * tokens * hidden
    inputs = 2 * entries * dtype.itemsize + 2 * batch * tokens
    draw = 4 * entries if dtype != torch.float32 else 0
    partials = 2 * (5 * batch * tokens * 8 + 2 * batch * -(-tokens // 64) * hidden * 8)
    reference = REFERENCE_BYTES * entries if device.type == "cuda" else 0
    return max(2 * (n_bytes - n_bytes % 4), inputs + max(draw, partials, reference))


def check_kernel_bytes(hidden: int, dtype: torch.dtype, n_bytes: int, device: torch.device) -> None:
    """A one-line UsageError naming ``--kernel-bytes`` unless :func:`peak_bytes` fits in
    :data:`~.memory.SAFE_SHARE` of the free memory of ``device``; nothing is allocated. Passes
    where the free memory cannot be read."""
    found = free_memory(device)
    if found is None:
        return
    free, source = found
    need, room = peak_bytes(hidden, dtype, n_bytes, device), int(SAFE_SHARE * free)
    if need <= room:
        return
    fits = n_bytes * room // need // MIB * MIB
    while fits >= MIB and peak_bytes(hidden, dtype, fits, device) > room:
        fits -= MIB
    advice = (
        f"use --kernel-bytes {fits // MIB}MiB or less"
        if fits >= MIB
        else "free some memory first (not even 1 MiB fits)"
    )
    raise UsageError(
        f"--kernel-bytes {human(n_bytes)} (kernel_bytes={n_bytes}): the kernels step needs "
        f"about {human(need)} of {device.type} memory at once, but only {human(free)} is free "
        f"({source}; at most {SAFE_SHARE:.0%} of it is used); {advice}"
    )


def kernel_inputs(hidden: int, dtype: torch.dtype, n_bytes: int, device: torch.device):
    """x_in, x_out [B, 2048, hidden] of ``dtype`` (random normal) and an all-ones mask [B, 2048],
    B the fewest samples whose two inputs hold at least ``n_bytes`` (:func:`input_shape`)."""
    g = torch.Generator(device=device).manual_seed(0)
    shape = input_shape(hidden, dtype, n_bytes)
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
    """(summary, rows, printed lines) of the kernels step; a UsageError before anything is
    allocated when ``n_bytes`` does not fit (:func:`check_kernel_bytes`)."""
    from .machine import times

    check_kernel_bytes(hidden, dtype, n_bytes, device)
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
    if device.type == "cpu":
        size += f" {torch.get_num_threads()} threads"
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
            rows.row(*common, "of_read", [read / s / 1e9 / read_gbs for s in seconds]),
            rows.row(*common, "read_ceiling_GB/s", read_gbs),
        ]
    return summary, out_rows, lines
