"""Benchmark rows: every measurement is one row per (bench, provider, size, dtype, device,
metric), as Liger-Kernel keeps its benchmark data; ``layerfast bench`` writes them to its output
folder and the scripts in ``benchmarks/`` append them to ``benchmarks/results.csv``.

Columns: ``bench`` (which benchmark), ``provider`` (the implementation or path measured),
``size`` (the input size, as the benchmark names it), ``dtype``, ``device``, ``metric`` (with its
unit, e.g. ``ms``, ``GB/s``, ``peak_MB``), ``p50``/``p20``/``p80`` (median and 20th/80th
percentiles over the repeats; all three equal for a single measurement), ``commit`` (short hash
of HEAD, ``+dirty`` with uncommitted changes) and ``date`` (UTC, ISO 8601).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from pathlib import Path

from . import machine

COLUMNS = (
    "bench",
    "provider",
    "size",
    "dtype",
    "device",
    "metric",
    "p50",
    "p20",
    "p80",
    "commit",
    "date",
)


def quantiles(samples: Sequence[float]) -> dict[str, float]:
    """p50, p20, p80 of ``samples`` (linear interpolation between order statistics)."""
    values = sorted(float(s) for s in samples)
    if not values:
        raise ValueError("no samples")

    def at(q: float) -> float:
        pos = q * (len(values) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(values) - 1)
        return values[lo] + (values[hi] - values[lo]) * (pos - lo)

    return {"p50": at(0.5), "p20": at(0.2), "p80": at(0.8)}


def row(
    bench: str,
    provider: str,
    size: str,
    dtype: str,
    device: str,
    metric: str,
    samples: Sequence[float] | float,
) -> dict:
    """One row; ``samples`` is one measurement or the repeats of one."""
    values = [samples] if isinstance(samples, (int, float)) else samples
    return {
        "bench": bench,
        "provider": provider,
        "size": size,
        "dtype": dtype,
        "device": device,
        "metric": metric,
        **quantiles(values),
    }


def append(rows: Sequence[dict], path: Path) -> None:
    """Append ``rows`` (from :func:`row`) to ``path``, with the header when the file is new or
    empty; commit and date are filled in here."""
    stamp = {"commit": machine.commit(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        for r in rows:
            writer.writerow({**r, **stamp})
