"""Rank agreement between importance scores, and ablation-derived scores."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..errors import UsageError

__all__ = ["spearman", "kendall", "ablation_scores", "rank_order", "top_k_overlap"]


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(getattr(a, "values", a), dtype=np.float64).reshape(-1)
    b = np.asarray(getattr(b, "values", b), dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise UsageError(f"score vectors differ in length: {a.shape[0]} vs {b.shape[0]}")
    if a.shape[0] < 2:
        raise UsageError("need at least two scores to compare rankings")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise UsageError("scores must be finite")
    return a, b


def _correlation(test, a: Any, b: Any) -> tuple[float, float]:
    a, b = _pair(a, b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = test(a, b)
    return float(r[0]), float(r[1])


def spearman(a: Any, b: Any) -> tuple[float, float]:
    """Spearman's rho and its two-sided p-value (ties get average ranks).

    ``a``/``b`` are score vectors or objects with a ``values`` attribute (e.g. ShapleyResult).
    If one vector is constant the correlation is undefined and (nan, nan) is returned.
    """
    from scipy.stats import spearmanr

    return _correlation(spearmanr, a, b)


def kendall(a: Any, b: Any) -> tuple[float, float]:
    """Kendall's tau-b (tie-corrected) and two-sided p-value; (nan, nan) for a constant vector."""
    from scipy.stats import kendalltau

    return _correlation(kendalltau, a, b)


def ablation_scores(full: Any, values_without: Any = None) -> np.ndarray:
    """Importance from a single-ablation sweep: drop_l = v(N) - v(N \\ {l}).

    Accepts ``(full, values_without)`` or a single ablation result object with ``.full`` and
    ``.values`` (v(N \\ {l}) per player).
    """
    if values_without is None:
        if not (hasattr(full, "full") and hasattr(full, "values")):
            raise TypeError("pass (full, values_without) or an object with .full and .values")
        full, values_without = full.full, full.values
    vw = np.asarray(values_without, dtype=np.float64).reshape(-1)
    return float(full) - vw


def rank_order(scores: Any, players: list[str] | None = None) -> list:
    """Indices (or names) sorted from the most to the least important (stable for ties)."""
    s = np.asarray(getattr(scores, "values", scores), dtype=np.float64).reshape(-1)
    order = np.argsort(-s, kind="stable").tolist()
    if players is None:
        players = getattr(scores, "players", None)
    return [players[i] for i in order] if players is not None else order


def top_k_overlap(a: Any, b: Any, k: int) -> float:
    """Fraction of the k highest-scored players that two score vectors share."""
    a, b = _pair(a, b)
    if not 1 <= k <= a.shape[0]:
        raise UsageError(f"k must be in 1..{a.shape[0]}")
    ta = set(np.argsort(-a, kind="stable")[:k].tolist())
    tb = set(np.argsort(-b, kind="stable")[:k].tolist())
    return len(ta & tb) / k
