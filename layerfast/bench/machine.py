"""Where a benchmark ran, and how it is timed and its memory measured.

Timing: on CUDA, CUDA events around the call (the device's own clock); on the CPU,
``time.perf_counter``. Every timed call follows one warm-up call (allocations, Triton compiles).
Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above what was allocated before; on the
CPU the rise of the resident set (``VmHWM`` after resetting it through ``/proc/self/clear_refs``,
Linux only), with glibc told to hand freed blocks back at once so the resident set follows live
memory.
"""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def describe(device: torch.device, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """The machine record every output carries: device name, cores, memory, library versions,
    dtype, date (UTC) and the checkout's commit."""
    import transformers

    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": str(device),
        "device_name": _device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "triton": _version("triton"),
        "dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
        "commit": commit(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["device_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores)"


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001 (a missing or broken optional library)
        return None


def commit() -> str:
    """Short hash of the source tree's HEAD (``+dirty`` with uncommitted changes outside
    ``benchmarks/results.csv``), or "unknown" outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = _git(root, "rev-parse", "--short", "HEAD").strip()
        dirty = _git(
            root,
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":!benchmarks/results.csv",
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty.strip() else "")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, check=True, capture_output=True, text=True, timeout=10
    ).stdout


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timer(device: torch.device) -> Callable[[Callable[[], Any]], float]:
    """A function that runs ``fn()`` once and returns its seconds on ``device``'s clock."""
    if device.type == "cuda":

        def run(fn: Callable[[], Any]) -> float:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end) / 1e3

        return run

    def run(fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    return run


def times(
    fn: Callable[[], Any],
    device: torch.device,
    repeat: int,
    budget_s: float | None = None,
    warm_up: bool = True,
) -> list[float]:
    """Seconds of ``repeat`` calls of ``fn`` after one warm-up call (none with ``warm_up=False``,
    for a caller that has just run it); with ``budget_s``, stops early (after at least 3 calls)
    once the calls so far have used the budget."""
    run = timer(device)
    if warm_up:
        run(fn)
    out: list[float] = []
    for _ in range(repeat):
        out.append(run(fn))
        if budget_s is not None and len(out) >= 3 and sum(out) > budget_s:
            break
    return out


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.mb``: the most memory held above the
    level at entry, in MiB (None where it cannot be measured: a CPU that is not Linux)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mb: float | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
        elif _procfs():
            _return_freed_memory()
            self._before = _status_kb("VmRSS") * 1024
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := the current resident set
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif _procfs():
            peak = _status_kb("VmHWM") * 1024
        else:
            return
        self.mb = max(peak - self._before, 0) / 2**20


def _procfs() -> bool:
    return Path("/proc/self/clear_refs").exists()


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


_MALLOPT_DONE = False


def _return_freed_memory() -> None:
    """glibc: serve blocks above 64 KiB by mmap (returned at free), as
    ``MALLOC_MMAP_THRESHOLD_=65536`` would; once per process, nothing elsewhere."""
    global _MALLOPT_DONE
    if _MALLOPT_DONE:
        return
    _MALLOPT_DONE = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 65536)  # M_MMAP_THRESHOLD
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass
