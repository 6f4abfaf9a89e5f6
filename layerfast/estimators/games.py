"""Synthetic games with known Shapley values, for tests, documentation and benchmarks.

Every game is a callable ``game(masks)`` on bool [m, n] (True = player kept) returning float64
[m], with ``n_players``, ``players`` and ``chance`` attributes, and a ``shapley_values()``
method giving the exact values by a closed form (or a combinatorial sum that does not
enumerate coalitions):

* :class:`AdditiveGame` -- v(S) = c + sum_{i in S} w_i; phi = w.
* :class:`UnanimityGame` -- sum of unanimity games with Harsanyi dividends d_T:
  v(S) = c + sum_{T subseteq S} d_T; phi_i = sum_{T containing i} d_T / |T|.
* :class:`CornerstoneGame` -- a removal game: the value sits at ``chance`` unless all
  cornerstone players are present; then chance + a + sum of the other present players' weights.
* :class:`WeightedVotingGame` -- v(S) = 1 if sum_{i in S} w_i >= quota else 0 (integer
  weights; exact values by a dynamic programme over (size, weight)).
* :class:`GloveGame` -- v(S) = min(#left gloves in S, #right gloves in S).
* :class:`TableGame` / :func:`random_game` -- an arbitrary utility table over all 2^n
  coalitions (n <= 20); exact values by enumeration.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ..coalitions import as_masks
from .exact import shapley_from_table

__all__ = [
    "SyntheticGame",
    "AdditiveGame",
    "UnanimityGame",
    "CornerstoneGame",
    "WeightedVotingGame",
    "GloveGame",
    "TableGame",
    "random_game",
    "random_unanimity_game",
]


def _shapley_weight(n: int, s: int) -> float:
    """|S|! (n - |S| - 1)! / n! for a coalition S of size s not containing the player."""
    return math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n)


class SyntheticGame:
    """Base class: masks bool [m, n] -> float64 [m]; counts calls and evaluated coalitions."""

    def __init__(
        self, n_players: int, chance: float | None = None, players: list[str] | None = None
    ):
        self.n_players = int(n_players)
        self.players = (
            list(players) if players is not None else [f"p{i}" for i in range(self.n_players)]
        )
        self.chance = chance
        self.n_calls = 0
        self.n_coalitions = 0

    def _masks(self, masks) -> np.ndarray:
        return as_masks(masks, self.n_players, players=self.players)

    def __call__(self, masks) -> np.ndarray:
        masks = self._masks(masks)
        self.n_calls += 1
        self.n_coalitions += masks.shape[0]
        return np.asarray(self.value(masks), dtype=np.float64)

    def value(self, masks: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def shapley_values(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class AdditiveGame(SyntheticGame):
    """v(S) = intercept + sum_{i in S} w_i. Shapley values: w."""

    def __init__(self, weights: Iterable[float], intercept: float = 0.0, **kw):
        self.weights = np.asarray(list(weights), dtype=np.float64)
        self.intercept = float(intercept)
        super().__init__(len(self.weights), **kw)

    def value(self, masks):
        return self.intercept + masks.astype(np.float64) @ self.weights

    def shapley_values(self):
        return self.weights.copy()


class UnanimityGame(SyntheticGame):
    """v(S) = intercept + sum_T d_T [T subseteq S] (Harsanyi dividends d_T).

    phi_i = sum_{T containing i} d_T / |T| (the dividend of T is split equally among T).
    """

    def __init__(self, n_players: int, dividends: dict, intercept: float = 0.0, **kw):
        super().__init__(n_players, **kw)
        self.dividends = {tuple(sorted(int(i) for i in T)): float(d) for T, d in dividends.items()}
        if any(len(T) == 0 for T in self.dividends):
            raise ValueError("use intercept for the empty coalition")
        self.intercept = float(intercept)
        self._T = np.zeros((len(self.dividends), self.n_players), dtype=bool)
        for r, T in enumerate(self.dividends):
            self._T[r, list(T)] = True
        self._d = np.array(list(self.dividends.values()), dtype=np.float64)

    def value(self, masks):
        # T subseteq S  <=>  no player of T is missing from S
        missing = (~masks).astype(np.int64) @ self._T.T.astype(np.int64)  # [m, |dividends|]
        return self.intercept + (missing == 0).astype(np.float64) @ self._d

    def shapley_values(self):
        phi = np.zeros(self.n_players)
        for T, d in self.dividends.items():
            for i in T:
                phi[i] += d / len(T)
        return phi


class CornerstoneGame(SyntheticGame):
    """Removal game with "cornerstone" players.

    v(S) = chance                                   if some cornerstone is missing from S,
    v(S) = chance + a + sum_{i in S, i not cornerstone} w_i   otherwise.

    Removing any cornerstone drops the utility to chance (and it stays there for every subset),
    so truncated Monte Carlo is exact on this game. It is a sum of unanimity games
    (a on C, w_i on C u {i}), hence
    phi_c = a/|C| + sum_i w_i/(|C|+1) for a cornerstone c, and phi_i = w_i/(|C|+1) otherwise.
    """

    def __init__(
        self,
        n_players: int,
        cornerstones: Iterable[int],
        weights=None,
        base: float = 0.3,
        chance: float = 0.25,
        **kw,
    ):
        super().__init__(n_players, chance=chance, **kw)
        self.cornerstones = sorted(int(c) for c in cornerstones)
        if not self.cornerstones:
            raise ValueError("at least one cornerstone is required")
        self.base = float(base)
        w = np.zeros(self.n_players) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (self.n_players,):
            raise ValueError("weights must have one entry per player")
        w = w.copy()
        w[self.cornerstones] = 0.0
        self.weights = w
        self._cmask = np.zeros(self.n_players, dtype=bool)
        self._cmask[self.cornerstones] = True

    def value(self, masks):
        ok = np.all(masks[:, self._cmask], axis=1)
        return self.chance + ok * (self.base + masks.astype(np.float64) @ self.weights)

    def shapley_values(self):
        k = len(self.cornerstones)
        phi = self.weights / (k + 1)
        phi[self.cornerstones] = self.base / k + self.weights.sum() / (k + 1)
        return phi


class WeightedVotingGame(SyntheticGame):
    """v(S) = 1 if sum_{i in S} w_i >= quota else 0, with non-negative integer weights.

    Exact Shapley values by counting, for every player i, the coalitions S (not containing i)
    of each size s with quota - w_i <= w(S) < quota (dynamic programme over (size, weight)):
    phi_i = sum_s s!(n-s-1)!/n! * #{such S of size s}.
    """

    def __init__(self, weights: Iterable[int], quota: int, **kw):
        w = np.asarray(list(weights))
        if not np.all(w == np.round(w)) or np.any(w < 0):
            raise ValueError("weights must be non-negative integers")
        self.weights = w.astype(np.int64)
        self.quota = int(quota)
        super().__init__(len(self.weights), **kw)

    def value(self, masks):
        return (masks.astype(np.int64) @ self.weights >= self.quota).astype(np.float64)

    def shapley_values(self):
        n, W = self.n_players, int(self.weights.sum())
        phi = np.zeros(n)
        for i in range(n):
            # cnt[s, x] = number of coalitions of the other players with size s and weight x
            cnt = np.zeros((n, W + 1), dtype=np.int64)
            cnt[0, 0] = 1
            for j in range(n):
                if j == i:
                    continue
                wj = int(self.weights[j])
                new = cnt.copy()
                new[1:, wj:] += cnt[:-1, : W + 1 - wj]
                cnt = new
            lo, hi = max(0, self.quota - int(self.weights[i])), self.quota  # lo <= w(S) < hi
            for s in range(n):
                swing = int(sum(cnt[s, lo : min(hi, W + 1)]))
                phi[i] += _shapley_weight(n, s) * swing
        return phi


class GloveGame(SyntheticGame):
    """v(S) = min(|S n L|, |S n R|) for a partition of the players into left (L) and right (R)
    glove holders.

    Exact values by a sum over the numbers (l, r) of other left/right players in S: a left
    player's marginal contribution is 1 iff r > l; the number of such S is C(|L|-1, l) C(|R|, r).
    """

    def __init__(self, left: Iterable[int], n_players: int, **kw):
        super().__init__(n_players, **kw)
        self.left = np.zeros(self.n_players, dtype=bool)
        self.left[list(left)] = True

    def value(self, masks):
        nl = np.sum(masks & self.left, axis=1)
        nr = np.sum(masks & ~self.left, axis=1)
        return np.minimum(nl, nr).astype(np.float64)

    def shapley_values(self):
        n = self.n_players
        a, b = int(self.left.sum()), n - int(self.left.sum())

        def side(own: int, other: int) -> float:
            tot = 0.0
            for l in range(own):  # other players of my side in S
                for r in range(other + 1):  # players of the other side in S
                    if r > l:
                        tot += (
                            math.comb(own - 1, l) * math.comb(other, r) * _shapley_weight(n, l + r)
                        )
            return tot

        phi = np.where(self.left, side(a, b) if a else 0.0, side(b, a) if b else 0.0)
        return phi.astype(np.float64)


class TableGame(SyntheticGame):
    """A game given by its full utility table (index = coalition integer, bit i = player i)."""

    MAX_PLAYERS = 20

    def __init__(self, table, **kw):
        table = np.asarray(table, dtype=np.float64)
        n = int(round(math.log2(len(table))))
        if 1 << n != len(table) or n > self.MAX_PLAYERS:
            raise ValueError("table must have 2^n entries with n <= 20")
        self.table = table
        super().__init__(n, **kw)
        self._pow = 1 << np.arange(n, dtype=np.int64)

    def value(self, masks):
        return self.table[masks.astype(np.int64) @ self._pow]

    def shapley_values(self):
        return shapley_from_table(self.table, self.n_players)


def random_game(
    n: int, seed: int = 0, scale: float = 1.0, monotone: bool = False, **kw
) -> TableGame:
    """A random game on n <= 20 players: i.i.d. normal utilities (or a random monotone one).

    ``monotone=True`` builds v as a sum of random non-negative dividends on all coalitions,
    which is monotone and supermodular-ish, closer in shape to accuracy-like utilities.
    """
    rng = np.random.default_rng(seed)
    if not monotone:
        return TableGame(scale * rng.standard_normal(1 << n), **kw)
    d = rng.exponential(scale, size=1 << n) * (rng.random(1 << n) < 0.2)
    d[0] = 0.0
    # zeta transform: v(S) = sum_{T subseteq S} d_T
    v = d.copy()
    for i in range(n):
        bit = 1 << i
        idx = np.arange(1 << n)
        has = (idx & bit) != 0
        v[has] += v[idx[has] ^ bit]
    return TableGame(v, **kw)


def random_unanimity_game(
    n: int, n_terms: int = 20, max_order: int = 3, seed: int = 0, **kw
) -> UnanimityGame:
    """A random game with ``n_terms`` unanimity components of order <= max_order (any n)."""
    rng = np.random.default_rng(seed)
    div: dict = {}
    for _ in range(n_terms):
        k = int(rng.integers(1, max_order + 1))
        T = tuple(sorted(rng.choice(n, size=min(k, n), replace=False).tolist()))
        div[T] = div.get(T, 0.0) + float(rng.normal())
    return UnanimityGame(n, div, **kw)
