"""The linear algebra of the pairwise Shapley interaction index (numpy only).

Every v(T) enters the pairwise SII of every pair (i, j) with the coefficient
m_ij(T) = (-1)^(2 - k) w(|T| - k), k = |T n {i, j}|, w(s) = 1 / ((n - 1) C(n - 2, s)); so
the index of a set of evaluated coalitions (enumerated, or drawn with probability q(T) and
weighted by 1 / q(T)) is a weighted sum of their utilities, which :func:`pair_sums` computes for
all pairs at once (three indicator products per block of coalitions). :func:`plan_sizes` picks
the sizes the ``sampled`` method enumerates and the proposal over the others; see
:mod:`.interaction_index`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations

import numpy as np

__all__ = [
    "sii_weight",
    "size_probs",
    "coefficients",
    "scaled_coefficients",
    "pair_sums",
    "Design",
    "sii_design",
    "sizes_masks",
    "plan_sizes",
]

ROWS_PER_BLOCK = 65536  # coalitions per block of the pair sums (memory: rows x n floats)


def sii_weight(n: int, s: int) -> float:
    """w(s) = s!(n-s-2)!/(n-1)! = 1/((n-1) C(n-2, s)) for 0 <= s <= n-2, else 0."""
    return 1.0 / ((n - 1) * math.comb(n - 2, s)) if 0 <= s <= n - 2 else 0.0


def size_probs(n: int, sizes: list[int]) -> np.ndarray:
    """The proposal over ``sizes``: p(t) proportional to sqrt(h(t)) (see
    :mod:`.interaction_index`)."""
    h = []
    for t in sizes:
        x = 2.0 / (t * (n - t)) if 1 <= t <= n - 1 else 0.0
        x += 1.0 / (t * (t - 1)) if t >= 2 else 0.0
        x += 1.0 / ((n - t) * (n - t - 1)) if t <= n - 2 else 0.0
        h.append(math.sqrt(x))
    h = np.asarray(h)
    return h / h.sum()


def coefficients(n: int, sizes: np.ndarray) -> np.ndarray:
    """m_ij(T) for coalitions of ``sizes`` by k = |T n {i, j}| = 0, 1, 2: float [m, 3]."""
    table = np.array([[sii_weight(n, t), -sii_weight(n, t - 1), sii_weight(n, t - 2)]
                      for t in range(n + 1)])  # fmt: skip
    return table[np.asarray(sizes, dtype=np.int64)]


def scaled_coefficients(n: int, sizes: np.ndarray, probs: dict[int, float]) -> np.ndarray:
    """m_ij(T) / q(T), q(T) = p(t) / C(n, t): float [m, 3], in closed form (no C(n, t))."""
    t = np.asarray(sizes, dtype=np.float64)
    p = np.array([probs[int(s)] for s in sizes])
    with np.errstate(divide="ignore", invalid="ignore"):
        a0 = np.where(t <= n - 2, n / ((n - t) * (n - t - 1)), 0.0)
        a1 = np.where((t >= 1) & (t <= n - 1), -n / (t * (n - t)), 0.0)
        a2 = np.where(t >= 2, n / (t * (t - 1)), 0.0)
    return np.stack([a0, a1, a2], axis=1) / p[:, None]


def pair_sums(masks: np.ndarray, y: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """sum_l y_l M_l with M_l[i, j] = coef[l, |T_l n {i, j}|]: float [n, n] (diagonal unused)."""
    n = masks.shape[1]
    out = np.zeros((n, n))
    for start in range(0, masks.shape[0], ROWS_PER_BLOCK):
        z = masks[start : start + ROWS_PER_BLOCK].astype(np.float64)
        o = 1.0 - z
        w = y[start : start + ROWS_PER_BLOCK, None] * coef[start : start + ROWS_PER_BLOCK]
        cross = (z * w[:, 1:2]).T @ o
        out += (o * w[:, 0:1]).T @ o + (z * w[:, 2:3]).T @ z + cross + cross.T
    return out


@dataclass
class Design:
    """The coalitions a method evaluated (``masks``, bool [m, n]) and how the index follows
    from their utilities: ``combine(y)`` -> (values, stderr), each float [n, n]."""

    masks: np.ndarray
    combine: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    info: dict
    y: np.ndarray | None = None  # the utilities of ``masks``, float [m]


def sii_design(masks: np.ndarray, coef: np.ndarray, sampled: np.ndarray, info: dict) -> Design:
    """SII from enumerated rows (coefficients m_ij(T)) and sampled rows (m_ij(T) / q(T)).

    With sampled rows the utilities first lose an additive control g(T) = b_0 + sum_{l in T}
    b_l, least squares on the enumerated rows: an additive game has SII 0 over the full sum,
    so I(v) = I(v - g), and g depends only on the enumerated coalitions (not random), so the
    estimate stays unbiased while the sampled part sees only v - g (the interactions and
    higher orders). stderr is the sample standard deviation of the sampled rows' contributions
    / sqrt(rows)."""
    m = int(sampled.sum())
    features = np.c_[np.ones(len(masks)), masks.astype(np.float64)] if m else None
    fit = np.linalg.pinv(features[~sampled]) if m else None  # [n + 1, enumerated rows]

    def combine(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if m:  # the additive control: fitted on the enumerated rows, which are not random
            d = y - features @ (fit @ y[~sampled])
        else:  # all enumerated: a constant keeps the rounding small
            d = y - float(np.mean(y))
        values = pair_sums(masks[~sampled], d[~sampled], coef[~sampled])
        stderr = np.zeros_like(values)
        if m:
            zs, ds, cs = masks[sampled], d[sampled], coef[sampled]
            mean = pair_sums(zs, ds, cs) / m
            values += mean
            if m >= 2:
                second = pair_sums(zs, ds**2, cs**2) / m
                stderr = np.sqrt(np.maximum(second - mean**2, 0.0) / (m - 1))
            else:
                stderr = np.full_like(values, np.nan)
        return values, stderr

    return Design(masks, combine, info)


def sizes_masks(n: int, t: int) -> np.ndarray:
    """Every coalition of size t: bool [C(n, t), n]."""
    combos = list(combinations(range(n), t))
    out = np.zeros((len(combos), n), dtype=bool)
    if t:
        out[np.repeat(np.arange(len(combos)), t), np.asarray(combos).reshape(-1)] = True
    return out


def plan_sizes(n: int, budget: int) -> tuple[list[int], list[int], np.ndarray]:
    """(enumerated sizes, sampled sizes, proposal over the sampled sizes) for ``budget``.

    Sizes 0 and n always; sizes 1 and n-1 next when that leaves >= 2n coalitions to sample (with
    them the additive control of :func:`sii_design` fits an additive game exactly); then, small
    and large sizes first, every size t whose C(n, t) coalitions fit the share p(t) of the
    budget left that the proposal would give it (the border trick)."""
    if n < 63 and budget >= 2**n:
        return list(range(n + 1)), [], np.zeros(0)
    exact, rest, left = [0, n], list(range(1, n)), budget - 2
    if n >= 4 and left - 2 * n >= 2 * n:
        exact, rest, left = [0, 1, n - 1, n], list(range(2, n - 1)), left - 2 * n
    while rest:
        p = dict(zip(rest, size_probs(n, rest)))
        for t in sorted(rest, key=lambda s: (min(s, n - s), s)):  # small and large sizes first
            count = math.comb(n, t)
            if p[t] * left >= count and (left - count >= 2 or len(rest) == 1):
                exact.append(t)
                rest.remove(t)
                left -= count
                break
        else:
            break
    return sorted(exact), rest, size_probs(n, rest) if rest else np.zeros(0)
