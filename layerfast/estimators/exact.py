"""Exact Shapley values by enumerating all 2^n coalitions."""

from __future__ import annotations

import math

import numpy as np

from ..errors import UsageError
from .budget import BudgetedGame
from .estimator import Estimator
from .options import check_int_option
from .result import ShapleyResult


def int_to_masks(ints: np.ndarray, n: int) -> np.ndarray:
    """Coalition integers -> bool masks [m, n]; bit i of the integer is player i."""
    ints = np.asarray(ints, dtype=np.int64)
    return ((ints[:, None] >> np.arange(n, dtype=np.int64)[None, :]) & 1).astype(bool)


def shapley_from_table(table: np.ndarray, n: int) -> np.ndarray:
    """Exact Shapley values from a full utility table indexed by coalition integer."""
    table = np.asarray(table, dtype=np.float64)
    if table.shape != (1 << n,):
        raise UsageError(f"table must have 2^{n} entries")
    ints = np.arange(1 << n, dtype=np.int64)
    sizes = np.zeros(1 << n, dtype=np.int64)
    for i in range(n):
        sizes += (ints >> i) & 1
    # weight of a coalition S (not containing i) of size s: s! (n-s-1)! / n!
    w = np.array(
        [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
    )
    phi = np.zeros(n)
    for i in range(n):
        without = ints[((ints >> i) & 1) == 0]
        phi[i] = np.sum(w[sizes[without]] * (table[without | (1 << i)] - table[without]))
    return phi


class ExactEstimator(Estimator):
    """Exact Shapley values: phi_i = sum_{S not containing i} |S|!(n-|S|-1)!/n! (v(S+i) - v(S)).

    Evaluates all 2^n coalitions in batches of ``batch_size``. Refuses n > MAX_PLAYERS.
    stderr is NaN (there is no sampling error); ``ci`` returns zero-width intervals.
    """

    name = "exact"
    OPTIONS = {"batch_size": 4096}
    MAX_PLAYERS = 20
    stochastic = False

    def _check_options(self) -> None:
        check_int_option("batch_size", self.options["batch_size"], 1)

    def _check_n(self, n: int) -> None:
        if n > self.MAX_PLAYERS:
            raise UsageError(
                f"method 'exact' enumerates 2^n coalitions and is limited to n <= "
                f"{self.MAX_PLAYERS} players (got n={n}, 2^n={2**n}); use 'permutation', "
                f"'kernel', 'truncated' or 'proximity'"
            )

    def min_budget(self, n: int) -> int:
        self._check_n(n)
        return 1 << n

    def default_budget(self, n: int) -> int:
        return self.min_budget(n)

    def _estimate(self, game: BudgetedGame, budget: int, rng: np.random.Generator) -> ShapleyResult:
        n = game.n_players
        self._check_n(n)
        total = 1 << n
        bs = int(self.options["batch_size"])
        table = np.empty(total, dtype=np.float64)
        for start in range(0, total, bs):
            ints = np.arange(start, min(total, start + bs), dtype=np.int64)
            table[start : start + len(ints)] = game(int_to_masks(ints, n))
        phi = shapley_from_table(table, n)
        return ShapleyResult(
            values=phi,
            stderr=np.full(n, np.nan),
            n_evaluations=game.n_evaluations,
            method=self.name,
            players=game.players,
            full=table[total - 1],
            empty=table[0],
            info={"exact": True, "n_coalitions": total},
        )
