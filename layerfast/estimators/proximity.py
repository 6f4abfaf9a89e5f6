"""Proximity ("neighbourhood") estimator of Zhang, Dong & Kawaguchi (2024).

Players are sublayers in execution order. With window length L (option ``window``,
default 3) the estimator evaluates

* v(N), and
* v(N \\ W) for every contiguous window W = {s, ..., s+k-1}, k = 1..L,

i.e. ``sum_{k=1..L} (n-k+1) + 1`` utilities. The estimate for player l is the plain mean of
the marginal contributions

    v(N \\ W) - v(N \\ (W u {l}))

over all contiguous windows U = W u {l} of length <= L that have l at one end: U = {l}
(W empty, the single-ablation drop v(N) - v(N \\ {l})), and for every length k = 2..L the
window starting at l (l at its left end) and the window ending at l (l at its right end),
where they fit inside 0..n-1. An interior player has 2L-1 terms, edge players fewer.

What it estimates: a *local* importance -- the average effect of removing l from the full
model when at most L-1 of its immediate neighbours on one side are already removed. It is
not the Shapley value: the Shapley value averages marginal contributions over coalitions of
*all* sizes, while this estimator only looks at coalitions within L-1 removals of N, and
weights them uniformly rather than with Shapley weights. It is therefore biased for the true
Shapley value (the efficiency identity sum(values) = v(N) - v(empty) does not hold in
general; ``efficiency_gap`` shows by how much). It is exact for additive games.

stderr: the sample standard deviation of a player's marginal terms divided by
sqrt(number of terms) (NaN with one term). The estimator is deterministic, so this is *not* a
sampling error: it is the spread of the terms it averages, a measure of how much the
marginal contribution of l depends on which neighbours are already removed.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import UsageError
from .budget import BudgetedGame
from .estimator import Estimator
from .options import check_int_option
from .result import ShapleyResult


def proximity_cost(n: int, window: int) -> int:
    """Number of utilities the proximity estimator needs: sum_{k=1..L}(n-k+1) + 1."""
    L = min(int(window), n)
    return sum(n - k + 1 for k in range(1, L + 1)) + 1


def proximity_masks(n: int, window: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The coalitions the estimator evaluates, bool [proximity_cost(n, window), n] (row 0 the
    full coalition, then N minus each contiguous window), and each later row's window as
    (start, length)."""
    L = min(int(window), n)
    windows = [(s, k) for k in range(1, L + 1) for s in range(n - k + 1)]
    masks = np.ones((len(windows) + 1, n), dtype=bool)
    for r, (s, k) in enumerate(windows, start=1):
        masks[r, s : s + k] = False
    return masks, windows


class ProximityEstimator(Estimator):
    __doc__ = __doc__
    name = "proximity"
    OPTIONS = {"window": 3}
    stochastic = False

    def _check_options(self) -> None:
        check_int_option("window", self.options["window"], 1)

    def min_budget(self, n: int) -> int:
        return proximity_cost(n, self.options["window"])

    def default_budget(self, n: int) -> int:
        return self.min_budget(n)

    def resolve_budget(self, n: int, budget: int | None) -> int:
        need = self.min_budget(n)
        if budget is not None and budget < need:
            # re-raise with the exact count the estimator needs
            raise UsageError(
                f"method 'proximity' with window={self.options['window']} and n={n} players "
                f"needs exactly {need} evaluations (sum_k (n-k+1) + 1), budget={budget} is too "
                "small"
            )
        return super().resolve_budget(n, budget)

    def _estimate(self, game: BudgetedGame, budget: int, rng: np.random.Generator) -> ShapleyResult:
        n = game.n_players
        L = min(int(self.options["window"]), n)
        masks, windows = proximity_masks(n, L)
        # window (start, length) -> row in the batch; row 0 is the full coalition
        row = {w: r for r, w in enumerate(windows, start=1)}
        vals = game(masks)  # one batched call
        full = vals[0]

        def v_without(s: int, k: int) -> float:  # v(N \ [s, s+k)); k = 0 is v(N)
            return full if k == 0 else vals[row[(s, k)]]

        values = np.zeros(n)
        stderr = np.full(n, np.nan)
        n_terms = np.zeros(n, dtype=np.int64)
        for l in range(n):
            terms = [full - v_without(l, 1)]  # U = {l}
            for k in range(2, L + 1):
                if l + k <= n:  # U = [l, l+k), l at the left end, W = [l+1, l+k)
                    terms.append(v_without(l + 1, k - 1) - v_without(l, k))
                if l - k + 1 >= 0:  # U = [l-k+1, l+1), l at the right end, W = [l-k+1, l)
                    terms.append(v_without(l - k + 1, k - 1) - v_without(l - k + 1, k))
            t = np.asarray(terms)
            values[l] = t.mean()
            n_terms[l] = len(t)
            if len(t) > 1:
                stderr[l] = t.std(ddof=1) / math.sqrt(len(t))
        empty = vals[row[(0, n)]] if L == n else float("nan")
        return ShapleyResult(
            values=values,
            stderr=stderr,
            n_evaluations=game.n_evaluations,
            method=self.name,
            players=game.players,
            full=full,
            empty=empty,
            info={
                "window": L,
                "window_requested": int(self.options["window"]),
                "n_terms": n_terms.tolist(),
                "cost": proximity_cost(n, L),
                "note": (
                    "local neighbourhood estimate, biased for the true Shapley value; stderr is "
                    "the spread of the averaged marginal terms, not a sampling error"
                ),
            },
        )
