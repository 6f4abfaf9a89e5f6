"""Mean and standard error over the i.i.d. sampling units of the Monte Carlo estimators."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["unit_mean_stderr"]


def unit_mean_stderr(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over i.i.d. units.

    Args:
        units: float [k, n], one row per unit (a permutation or an antithetic pair), one column
            per player.

    Returns:
        (mean, stderr), float64 [n] each; stderr = sample std / sqrt(k), NaN with k < 2
        (both NaN with k = 0).
    """
    units = np.asarray(units, dtype=np.float64)
    k = units.shape[0]
    if k == 0:
        n = units.shape[1] if units.ndim == 2 else 0
        return np.full(n, np.nan), np.full(n, np.nan)
    mean = units.mean(axis=0)
    if k < 2:
        return mean, np.full(mean.shape, np.nan)
    se = units.std(axis=0, ddof=1) / math.sqrt(k)
    return mean, se
