"""Truncated Monte Carlo (TMC) as in data Shapley (Ghorbani & Zou 2019), for removal games.

Layer-importance games are *removal* games: v(N) (the intact model) is the meaningful end and
removing sublayers drives the utility down to the chance level of the task. TMC walks a random
permutation sigma by **removal**, starting from N:

    S_0 = N,  S_t = N \\ {sigma_0, ..., sigma_{t-1}},
    marginal of sigma_t = v(S_t) - v(S_{t+1}).

This is the ordinary Shapley marginal contribution of sigma_t along the *reversed* permutation
(adding sigma_{n-1}, ..., sigma_0 to the empty set, sigma_t joins {sigma_{t+1}, ...} = S_{t+1}),
and the reverse of a uniform random permutation is uniform, so without truncation the mean of
the marginals is an unbiased Shapley estimate.

Truncation: once |v(S_t) - chance| <= tolerance, the walk stops; the remaining players'
marginal contributions in this permutation are set to 0 and not evaluated.

Bias: truncation is exact when the utility stays at chance for every subset of a coalition
at chance (e.g. "cornerstone" games). Otherwise it is biased: the set-to-zero marginals of a
truncated walk telescope to v(S_T) - v(empty) instead of 0, so the values of a permutation sum
to v(N) - v(S_T), and the estimate's efficiency gap is -(mean of v(S_T) - v(empty)) over walks
(at most about tolerance + |chance - v(empty)| in size per walk); players that are usually
removed late (after the truncation point) lose the credit for any recovery below chance.
The reported stderr is the sampling error only and does not include this bias.

Antithetic pairs (sigma and its reverse) are used by default; stderr = sample std of the
per-unit (pair or permutation) averaged marginal contributions / sqrt(#units), NaN with one
unit, which a budget >= ``min_budget_for_stderr(n)`` = 2 + 2 w (n-1) (w = 2 walks per unit, 1
without antithetic pairs) rules out.

Batching: a chunk of permutations is walked in lock step; each round evaluates the next
coalition of every still-active walk in one batched call. If the budget would be exceeded in
the middle of a chunk, that whole chunk is discarded (to avoid favouring walks that truncate
early) and sampling stops; the last chunk is sized so that this rarely happens.

Options:
    tolerance: absolute distance to chance at which a walk is truncated (default 0.01).
    chance: utility at chance level (default: ``game.chance``; one of them is required).
    antithetic: use antithetic pairs (default True).
    chunk: units walked together (default: about 64 walks per round).
    max_units: cap on the number of units (default None = budget).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import UsageError
from .budget import BudgetedGame
from .estimator import Estimator
from .options import check_int_option
from .result import ShapleyResult
from .units import unit_mean_stderr


class TruncatedEstimator(Estimator):
    __doc__ = __doc__
    name = "truncated"
    OPTIONS = {
        "tolerance": 0.01,
        "chance": None,
        "antithetic": True,
        "chunk": None,
        "max_units": None,
    }

    def _check_options(self) -> None:
        tol = self.options["tolerance"]
        if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating)) or not tol >= 0:
            raise UsageError(f"option tolerance must be a number >= 0, got {tol!r}")
        ch = self.options["chance"]
        if ch is not None and (
            isinstance(ch, bool) or not isinstance(ch, (int, float, np.floating))
        ):
            raise UsageError(f"option chance must be a number or None, got {ch!r}")
        if not isinstance(self.options["antithetic"], (bool, np.bool_)):
            raise UsageError("option antithetic must be True or False")
        check_int_option("chunk", self.options["chunk"], 1, allow_none=True)
        check_int_option("max_units", self.options["max_units"], 1, allow_none=True)

    def _walks_per_unit(self) -> int:
        return 2 if self.options["antithetic"] else 1

    def min_budget(self, n: int) -> int:
        # v(N) plus one unit walked to the end without truncation
        if n == 1:
            return 2
        return 1 + self._walks_per_unit() * (n - 1) + 1

    def min_budget_for_stderr(self, n: int) -> int | None:
        # v(N), v(empty) and two units walked to the end: w (n-1) interior coalitions each
        if self.options["max_units"] == 1:
            return None
        if n == 1:
            return self.min_budget(n)
        return min(2 + 2 * self._walks_per_unit() * (n - 1), 2**n)

    def default_budget(self, n: int) -> int:
        return max(self.min_budget(n), 50 * n)

    def _chance(self, game: BudgetedGame) -> float:
        ch = self.options["chance"]
        if ch is None:
            ch = game.chance
        if ch is None:
            raise UsageError(
                "method 'truncated' needs the chance level: pass chance=... or give the game "
                "a `chance` attribute"
            )
        return float(ch)

    def _estimate(self, game: BudgetedGame, budget: int, rng: np.random.Generator) -> ShapleyResult:
        n = game.n_players
        chance = self._chance(game)
        tol = float(self.options["tolerance"])
        wpu = self._walks_per_unit()
        chunk = self.options["chunk"] or max(1, 64 // wpu)
        max_units = self.options["max_units"] or budget
        ones = np.ones(n, dtype=bool)
        full = float(game(ones[None])[0])
        units: list[np.ndarray] = []
        if abs(full - chance) <= tol:
            # v(N) is already at chance: every walk truncates at once, all marginals are 0
            max_units = 0
            units.append(np.zeros((2, n)))
        n_units = 0
        steps_done = 0
        steps_possible = 0
        stop = False
        while not stop and n_units < max_units:
            remaining = game.remaining
            worst = wpu * max(1, n - 1)  # new interior coalitions of one unit, worst case
            if remaining == math.inf:
                k = min(chunk, max_units - n_units)
            else:
                room = remaining - (0 if game.is_seen(~ones) else 1)  # v(empty) is shared
                k = min(chunk, max_units - n_units, max(1, int(room // worst)))
            perms = np.stack([rng.permutation(n) for _ in range(k)])
            if wpu == 2:
                perms = np.concatenate([perms, perms[:, ::-1]], axis=0)
            P = perms.shape[0]
            cur = np.ones((P, n), dtype=bool)
            cur_val = np.full(P, full)
            active = np.full(P, abs(full - chance) > tol)
            deltas = np.zeros((P, n))
            n_steps = np.zeros(P, dtype=np.int64)
            for t in range(n):
                idx = np.nonzero(active)[0]
                if idx.size == 0:
                    break
                nxt = cur[idx].copy()
                nxt[np.arange(idx.size), perms[idx, t]] = False
                if game.n_new(nxt) > game.remaining:
                    stop = True  # discard this whole chunk
                    break
                vals = game(nxt)
                deltas[idx, perms[idx, t]] = cur_val[idx] - vals
                cur[idx] = nxt
                cur_val[idx] = vals
                n_steps[idx] += 1
                active[idx] = np.abs(vals - chance) > tol
            if stop:
                break
            steps_done += int(n_steps.sum())
            steps_possible += P * n
            if wpu == 2:
                units.append(0.5 * (deltas[:k] + deltas[k:]))
            else:
                units.append(deltas)
            n_units += k
        U = np.concatenate(units, axis=0) if units else np.zeros((0, n))
        values, stderr = unit_mean_stderr(U)
        info = {
            "n_units": n_units,
            "n_permutations": n_units * wpu,
            "antithetic": bool(wpu == 2),
            "tolerance": tol,
            "chance": chance,
            "fraction_steps_evaluated": (steps_done / steps_possible)
            if steps_possible
            else float("nan"),
            "note": "truncation sets marginals after the utility reaches chance to 0 (biased "
            "unless the utility stays at chance below that point); stderr is sampling error only",
        }
        return self._result(game, values, stderr, full, game.value_if_seen(~ones), info)
