"""The sampling design of ``kernel_ht``: coalitions stratified by size, paired with their
complements, drawn without replacement; the strata a budget can cover are enumerated.

Stratum s (s = 1..floor(n/2)) holds the *pairs* (z, complement of z) with |z| = s: C(n, s)
pairs, or C(n, n/2)/2 for s = n/2 (z and its complement have the same size, so one of the two
is the representative: the one that keeps player 0). A plan gives every stratum either all its
pairs (enumerated) or a simple random sample of m_s of them, allocated in proportion to the
stratum's Shapley-kernel mass (n-1)/(s(n-s)), counted once for s = n/2. The sample of a stratum
is the first m_s pairs of one random order of the stratum (a generator per stratum, seeded from
the caller's), so a plan for double the budget draws a superset of the smaller plan's pairs
(checked for n = 4..20 up to 2,000 pairs): doubling the budget re-uses every coalition already
evaluated. A small increase may not (rounding can move a pair between strata);
``KernelHTEstimator.union_cost`` counts the coalitions of several budgets together.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import comb

import numpy as np

__all__ = ["Plan", "plan_strata", "stratum_pairs", "n_pair_strata", "populations"]


def n_pair_strata(n: int) -> int:
    """Number of size strata of pairs for n >= 2 players: floor(n/2)."""
    return n // 2


def _population(n: int, s: int) -> int:
    return comb(n, s) // 2 if 2 * s == n else comb(n, s)


def populations(n: int) -> list[int]:
    """Pairs in each size stratum s = 1..floor(n/2), N_s (Python ints: exact at any n)."""
    return [_population(n, s) for s in range(1, n_pair_strata(n) + 1)]


@dataclass
class Plan:
    """Pairs per stratum for a budget.

    Attributes:
        n: players.
        sizes: the strata, s = 1..floor(n/2).
        population: pairs in each stratum, N_s (float64: C(n, s) passes int64 from n = 65).
        take: pairs used from each stratum, m_s (= N_s where enumerated).
        enumerated: bool per stratum.
        mass: Shapley-kernel weight of one *coalition* of size s, mu(s) = (n-1)/(C(n,s) s (n-s))
            (the exact values are the weighted least-squares fit with these weights).
    """

    n: int
    sizes: np.ndarray
    population: np.ndarray
    take: np.ndarray
    enumerated: np.ndarray
    mass: np.ndarray

    @property
    def n_pairs(self) -> int:
        return int(self.take.sum())

    @property
    def expansion(self) -> np.ndarray:
        """Horvitz-Thompson weight of a pair in each stratum: N_s / m_s (1 where enumerated)."""
        return self.population / np.maximum(self.take, 1)


def plan_strata(n: int, n_pairs: int, min_take: int = 2) -> Plan:
    """How many pairs to take from each stratum with ``n_pairs`` pairs in all (n >= 2).

    Proportional allocation to the strata's kernel mass; a stratum whose share reaches its
    population is enumerated and the rest re-allocated among the others (the "border trick":
    small and large coalitions first, they carry most of the kernel's weight). Every sampled
    stratum then gets at least ``min_take`` pairs (2: the stratum's variance needs two) where the
    budget allows, taken from the largest allocations; below that every stratum gets at least one
    (where ``n_pairs`` >= the number of strata), so no stratum is left out of the estimate.
    """
    sizes = np.arange(1, n_pair_strata(n) + 1)
    # populations overflow int64 from n = 65 (C(66, 33) > 2^63): float64, exact below 2^53
    pop = np.array([float(x) for x in populations(n)])
    weight = np.array([(0.5 if 2 * s == n else 1.0) / (s * (n - s)) for s in sizes])
    mass = np.array([(n - 1) / (comb(n, int(s)) * int(s) * (n - int(s))) for s in sizes])
    take = np.zeros(len(sizes), dtype=np.int64)
    enum = np.zeros(len(sizes), dtype=bool)
    left = int(min(int(n_pairs), pop.sum()))
    while True:  # enumerate the strata whose proportional share covers them
        open_ = ~enum
        if not open_.any():
            break
        share = left * weight / weight[open_].sum()
        full = open_ & (share >= pop)
        if not full.any():
            break
        s = int(np.flatnonzero(full)[0])
        enum[s] = True
        take[s] = int(pop[s])
        left -= int(pop[s])
    open_ = np.flatnonzero(~enum)
    if len(open_) and left > 0:
        raw = left * weight[open_] / weight[open_].sum()
        m = np.floor(raw).astype(np.int64)
        for k in np.argsort(-(raw - m))[: left - int(m.sum())]:
            m[k] += 1
        floor_ = min_take if left >= min_take * len(open_) else (1 if left >= len(open_) else 0)
        m = np.minimum(m, pop[open_]).astype(np.int64)
        for k in range(len(open_)):
            need = min(floor_, int(pop[open_[k]])) - int(m[k])
            while need > 0:
                donor = int(np.argmax(m - np.minimum(floor_, pop[open_])))
                if m[donor] <= floor_:
                    break
                m[donor] -= 1
                m[k] += 1
                need -= 1
        take[open_] = m
    return Plan(n, sizes, pop, take, enum, mass)


def stratum_pairs(n: int, s: int, m: int, rng: np.random.Generator | None) -> np.ndarray:
    """The first ``m`` pairs of stratum s in a random order (all of them, in lexicographic
    order, for ``rng`` None): representatives z, bool [m, n] (the pair is z and ~z). ``m`` must
    not exceed the stratum's population (:func:`plan_strata` ensures it)."""
    if rng is not None and m > _population(n, s):
        raise ValueError(f"stratum {s} of n={n} has {_population(n, s)} pairs, not {m}")
    if rng is None:
        out = []
        for c in combinations(range(n), s):
            if 2 * s == n and 0 not in c:
                continue
            z = np.zeros(n, dtype=bool)
            z[list(c)] = True
            out.append(z)
        return np.array(out, dtype=bool).reshape(-1, n)
    seen: set[bytes] = set()
    out = []
    while len(out) < m:
        z = np.zeros(n, dtype=bool)
        z[rng.choice(n, size=s, replace=False)] = True
        if 2 * s == n and not z[0]:
            z = ~z
        key = np.packbits(z).tobytes()
        if key not in seen:
            seen.add(key)
            out.append(z)
    return np.array(out, dtype=bool).reshape(-1, n)
