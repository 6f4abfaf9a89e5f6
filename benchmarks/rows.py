"""``benchmarks/results.csv``: the rows of :mod:`layerfast.bench.rows` (its columns, its
quantiles), appended by every script in this folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from layerfast.bench.rows import COLUMNS, quantiles, row
from layerfast.bench.rows import append as append_to

__all__ = ["COLUMNS", "RESULTS", "append", "quantiles", "row"]

RESULTS = Path(__file__).resolve().with_name("results.csv")


def append(rows: Sequence[dict], path: Path = RESULTS) -> None:
    """Append ``rows`` to ``benchmarks/results.csv`` (or ``path``), stamped with commit and date."""
    append_to(rows, path)
    print(f"{len(rows)} rows appended to {path}")
