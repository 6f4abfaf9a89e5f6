"""Free memory of the device the benchmark's kernels run on, and sizes as people write them.

Host: ``MemAvailable`` of ``/proc/meminfo`` (what can be allocated without swapping, page cache
counted as free), capped by the cgroup's memory limit less its usage when one is set (a
container); elsewhere ``os.sysconf`` (available physical pages). CUDA: ``torch.cuda.mem_get_info``
plus what torch's caching allocator holds reserved but unused (this process can reuse it).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

SAFE_SHARE = 0.8  # the share of the free memory a benchmark may take
_CGROUP_V2 = Path("/sys/fs/cgroup")
_CGROUP_V1 = Path("/sys/fs/cgroup/memory")
_NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63


def free_memory(device: torch.device) -> tuple[int, str] | None:
    """(free bytes, where that number comes from) on ``device``; None where it is unknown."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        if torch.cuda.is_initialized():
            free += max(0, torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
        return int(free), f"free on {device}"
    return host_free()


def host_free() -> tuple[int, str] | None:
    """(bytes, source) of the host's available memory, the smaller of the system's and the
    cgroup's; None where neither can be read."""
    found = []
    meminfo = _meminfo("MemAvailable")
    if meminfo is not None:
        found.append((meminfo, "MemAvailable in /proc/meminfo"))
    else:
        try:
            pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            if pages > 0:
                found.append((int(pages), "available physical pages (sysconf)"))
        except (AttributeError, OSError, ValueError):
            pass
    cgroup = _cgroup_free()
    if cgroup is not None:
        found.append((cgroup, "the cgroup's memory limit less its use"))
    return min(found) if found else None


def _meminfo(field: str) -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_free() -> int | None:
    """The cgroup's limit less what it holds (page cache not counted), or None without one."""
    for limit, usage, inactive in (
        (_CGROUP_V2 / "memory.max", _CGROUP_V2 / "memory.current", "inactive_file"),
        (_CGROUP_V1 / "memory.limit_in_bytes", _CGROUP_V1 / "memory.usage_in_bytes", None),
    ):
        try:
            cap = limit.read_text().strip()
            if cap == "max" or int(cap) >= _NO_LIMIT:
                return None
            used = int(usage.read_text())
            stat = limit.with_name("memory.stat").read_text().split("\n")
            key = inactive or "total_inactive_file"
            cache = next((int(ln.split()[1]) for ln in stat if ln.startswith(key + " ")), 0)
            return max(0, int(cap) - max(0, used - cache))
        except (OSError, ValueError, IndexError):
            continue
    return None


def human(n_bytes: float) -> str:
    """``1 TiB``, ``1.5 GiB``, ``96 MiB``: a byte count in the largest binary unit it fills."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.3g} {unit}"
    return f"{int(n_bytes)} B"
