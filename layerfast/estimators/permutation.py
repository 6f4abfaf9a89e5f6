"""Permutation Monte Carlo with antithetic pairs."""

from __future__ import annotations

import numpy as np

from .budget import BudgetedGame, BudgetTooSmall
from .estimator import Estimator
from .options import check_int_option
from .result import ShapleyResult
from .units import unit_mean_stderr


def prefix_masks(perms: np.ndarray) -> np.ndarray:
    """All n+1 prefix coalitions of each permutation: bool [P, n+1, n].

    ``out[p, k]`` holds the first k players of ``perms[p]``.
    """
    P, n = perms.shape
    rank = np.empty_like(perms)
    rank[np.arange(P)[:, None], perms] = np.arange(n)[None, :]
    k = np.arange(n + 1)[None, :, None]
    return rank[:, None, :] < k


def marginals_from_prefix_values(perms: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """vals [P, n+1] utilities of the prefixes -> marginal contribution per player [P, n]."""
    P, n = perms.shape
    rank = np.empty_like(perms)
    rank[np.arange(P)[:, None], perms] = np.arange(n)[None, :]
    rows = np.arange(P)[:, None]
    return vals[rows, rank + 1] - vals[rows, rank]


class PermutationEstimator(Estimator):
    """Monte Carlo over random permutations with antithetic pairs.

    Each unit is a pair (pi, reverse(pi)); along a permutation the marginal contribution of
    player i is v(P_i u {i}) - v(P_i) with P_i the players before i. The estimate is the mean
    over pairs of the pair-averaged marginal contributions, unbiased for the Shapley value;
    stderr = sample std of the per-pair averages / sqrt(#pairs) (pairs are i.i.d.; NaN with
    fewer than two pairs, which a budget >= ``min_budget_for_stderr(n)`` = 4n - 2 rules out).
    sum(values) = v(N) - v(empty) exactly (every permutation telescopes).

    The coalitions of a chunk of pairs are evaluated in one batched call. Before asking, the
    number of new distinct coalitions is counted and the chunk is cut to the pairs that fit in
    the budget; sampling stops when not even one more pair fits, or after ``max_pairs``
    pairs (default: ``budget``; it only binds for small n, where repeated coalitions are free).

    Options:
        chunk: antithetic pairs per batched call (default: about 512 coalitions per call).
        max_pairs: cap on the number of pairs (default None = budget).
    """

    name = "permutation"
    OPTIONS = {"chunk": None, "max_pairs": None}
    compute_capped = True
    antithetic = True

    def _check_options(self) -> None:
        check_int_option("chunk", self.options["chunk"], 1, allow_none=True)
        check_int_option("max_pairs", self.options["max_pairs"], 1, allow_none=True)

    def min_budget(self, n: int) -> int:
        # v(N), v(empty) and the 2(n-1) interior prefixes of one antithetic pair
        return 2 if n == 1 else 2 * n

    def min_budget_for_stderr(self, n: int) -> int | None:
        # two pairs: the first costs 2n, the second at most 2(n-1) new interior prefixes; with
        # all 2^n coalitions in the budget every further pair is free
        if self.options["max_pairs"] == 1:
            return None
        return self.min_budget(n) if n <= 2 else min(4 * n - 2, 2**n)

    def default_budget(self, n: int) -> int:
        return max(self.min_budget(n), 50 * n)

    def _estimate(self, game: BudgetedGame, budget: int, rng: np.random.Generator) -> ShapleyResult:
        n = game.n_players
        chunk = self.options["chunk"] or max(1, 512 // max(1, 2 * (n - 1)))
        max_pairs = self.options["max_pairs"] or budget
        units: list[np.ndarray] = []
        n_pairs = 0
        while n_pairs < max_pairs:
            k = min(chunk, max_pairs - n_pairs)
            perms = np.stack([rng.permutation(n) for _ in range(k)])
            both = np.concatenate([perms, perms[:, ::-1]], axis=0)  # [2k, n]
            masks = prefix_masks(both)  # [2k, n+1, n]
            pair_masks = [np.concatenate([masks[j], masks[k + j]], axis=0) for j in range(k)]
            fit = game.fit_prefix(pair_masks)
            if fit == 0:
                break
            sel = np.r_[np.arange(fit), k + np.arange(fit)]
            m = masks[sel]
            vals = game(m.reshape(-1, n)).reshape(2 * fit, n + 1)
            deltas = marginals_from_prefix_values(both[sel], vals)
            units.append(0.5 * (deltas[:fit] + deltas[fit:]))
            n_pairs += fit
            if fit < k:
                break
        if not units and game.compute_cap is not None:  # a coalition budget always fits a pair
            raise BudgetTooSmall("budget_compute leaves no room for a single antithetic pair")
        U = np.concatenate(units, axis=0) if units else np.zeros((0, n))
        values, stderr = unit_mean_stderr(U)
        ones = np.ones(n, dtype=bool)
        full = game.value_if_seen(ones)
        empty = game.value_if_seen(~ones)
        info = {"n_pairs": n_pairs, "n_permutations": 2 * n_pairs, "antithetic": True}
        return self._result(game, values, stderr, full, empty, info)
