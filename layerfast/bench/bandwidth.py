"""The device's memory bandwidth ceilings for a given number of bytes: a copy and a plain read.

copy: ``dst.copy_(src)``, counted as bytes read plus bytes written per second (STREAM's
convention). read: ``src.sum()`` over the same bytes viewed as float32 (a memory-bound reduction
that writes nothing), bytes read per second. Both on buffers of ``n_bytes`` (1 GiB by default, out
of every cache), zero-filled (no denormals).
"""

from __future__ import annotations

import statistics

import torch

from .machine import times

DEFAULT_BYTES = 1 << 30


def ceilings(
    n_bytes: int, device: torch.device, repeat: int = 10, budget_s: float | None = None
) -> dict[str, dict]:
    """{"copy": {...}, "read": {...}}: per ceiling the seconds of each call, the bytes moved per
    call and GB/s (median)."""
    n_bytes -= n_bytes % 4
    src = torch.zeros(n_bytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    words = src.view(torch.float32)
    out = {}
    for name, fn, moved in (
        ("copy", lambda: dst.copy_(src), 2 * n_bytes),
        ("read", lambda: words.sum(), n_bytes),
    ):
        seconds = times(fn, device, repeat, budget_s)
        out[name] = {
            "seconds": seconds,
            "bytes": moved,
            "GB/s": moved / statistics.median(seconds) / 1e9,
        }
    return out
