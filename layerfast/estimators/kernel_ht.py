"""KernelSHAP on a stratified sample without replacement, Horvitz-Thompson weighted, with an
optional 3-additive model and a design-based standard error.

The sample (:mod:`.strata`): v(N) and v(0), then pairs (z, ~z) stratified by size; the strata
whose every pair fits the budget are enumerated (they carry most of the kernel's weight), the
rest are simple random samples without replacement, allocated in proportion to the kernel's
mass and weighted by N_s/m_s (Horvitz-Thompson), so every weighted sum estimates its value over
all 2^n coalitions without bias. Pairing (as Leverage SHAP, Musco & Witter 2025, and Covert & Lee
2021 do) cancels the pairwise interactions exactly.

The fit (:mod:`.kadd_fit`): the constrained weighted least squares of KernelSHAP on a linear
model (order 1), or on a 3-additive one (order 3, p3 = n + C(n,2) + C(n,3) parameters) whose
Shapley values are the same in expectation and whose residuals are smaller.
``order="auto"`` (default) fits both (for n <= 28), the 3-additive one with a
ridge penalty on the interaction terms (0.1 of the normal matrix's mean diagonal up to p3 pairs,
falling as (p3/pairs)^3 above; the linear terms are not penalised, so the values stay unbiased in
the limit) and keeps the fit with the smaller estimated total variance. Below 1.5 pairs per
3-additive parameter the sandwich of that fit understates its error, so the error bar there is
the larger of the two fits'.

Standard error: the stratified-sampling variance of the fit's linearisation (the sandwich
covariance, leverage-corrected), zero for enumerated strata; NaN (with a warning) when a sampled
stratum got a single pair, which a budget >= ``min_budget_for_stderr(n)`` rules out. The
covariance of the values is ``info["covariance"]`` (n x n).

Budgets grow by re-use: the pairs of a stratum are the first m_s of one random order drawn from
the seed, so double the budget with the same seed evaluates a superset (``shapley(...,
target_stderr=)`` doubles; :meth:`union_cost` counts several budgets' coalitions together).

Options:
    order: 1, 3 or "auto" (default).
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from .budget import BudgetedGame
from .estimator import Estimator
from .kadd_fit import fit_pairs, n_params
from .result import ShapleyResult
from .strata import Plan, n_pair_strata, plan_strata, populations, stratum_pairs

RIDGE = 0.1  # penalty on the 3-additive fit's interaction terms, at or below p3 pairs ...
RIDGE_POWER = 3.0  # ... falling as (p3 / pairs)^3 above
SANDWICH_PAIRS_PER_PARAM = 1.5  # below, the 3-additive sandwich understates the error
MAX_PARAMS = 4000  # no 3-additive fit beyond this many parameters (n > 28)
ORDERS = (1, 3, "auto")


class KernelHTEstimator(Estimator):
    __doc__ = __doc__
    name = "kernel_ht"
    OPTIONS = {"order": "auto"}
    nested = True

    def _check_options(self) -> None:
        order = self.options["order"]
        if isinstance(order, bool) or order not in ORDERS:
            hint = " (order 2 equals order 1 on paired samples)" if order == 2 else ""
            raise UsageError(f"option order must be one of 1, 3, 'auto', got {order!r}{hint}")

    @staticmethod
    def _all_pairs(n: int) -> int:
        return 2 ** (n - 1) - 1

    def _plan(self, n: int, budget: int) -> Plan:
        """The strata's pairs for a budget: v(N) and v(0), then pairs of two coalitions."""
        return plan_strata(n, min((budget - 2) // 2, self._all_pairs(n)))

    def min_budget(self, n: int) -> int:
        # v(N), v(0) and one pair per size stratum
        return 2 if n == 1 else 2 + 2 * min(n_pair_strata(n), self._all_pairs(n))

    def min_budget_for_stderr(self, n: int) -> int | None:
        if n == 1:
            return None
        return 2 + 2 * sum(min(2, n_pairs) for n_pairs in populations(n))

    def union_cost(self, n: int, budgets: list[int]) -> int:
        if n == 1:
            return 2
        plans = [self._plan(n, b) for b in budgets]
        return 2 + 2 * int(np.max([p.take for p in plans], axis=0).sum())

    def default_budget(self, n: int) -> int:
        return min(max(self.min_budget_for_stderr(n) or 2, 50 * n), 2**n)

    def _estimate(self, game: BudgetedGame, budget: int, rng: np.random.Generator) -> ShapleyResult:
        n = game.n_players
        ends = np.zeros((2, n), dtype=bool)
        ends[0] = True
        full, empty = game(ends)
        if n == 1:
            return self._result(game, np.array([full - empty]), np.zeros(1), full, empty, {})
        plan = self._plan(n, budget)
        base = int(rng.integers(2**62))
        Z, stratum, weight, sampled = [], [], [], {}
        for h, s in enumerate(plan.sizes):
            m = int(plan.take[h])
            if m == 0:
                continue
            if plan.enumerated[h]:
                z = stratum_pairs(n, int(s), m, None)
            else:
                z = stratum_pairs(n, int(s), m, np.random.default_rng([base, int(s)]))
                sampled[h] = (int(plan.population[h]), m)
            Z.append(z)
            stratum.append(np.full(m, h))
            weight.append(np.full(m, plan.mass[h] * plan.expansion[h]))
        Zs = np.concatenate(Z)  # [J, n]
        y = game(np.concatenate([Zs, ~Zs])) - empty  # [2J]
        Y = y.reshape(2, -1).T  # [J, 2]: v(z) - v(0), v(~z) - v(0)
        St, W = np.concatenate(stratum), np.concatenate(weight)
        fits = {}
        for order, ridge in self._orders(n, len(Zs)):
            fits[order] = fit_pairs(Zs, Y, St, W, sampled, full - empty, order, ridge)
        chosen = min(fits, key=lambda k: _total_variance(fits[k][1]))
        values, cov, stderr, fit_info = fits[chosen]
        if len(fits) > 1 and len(Zs) < SANDWICH_PAIRS_PER_PARAM * n_params(n, 3):
            # too few pairs per 3-additive parameter for its sandwich: the larger error bar
            own = fits[chosen][2]
            stderr = np.fmax(fits[1][2], fits[3][2])
            scale = np.divide(stderr, own, out=np.ones(n), where=own > 0)
            cov = cov * np.outer(scale, scale)
            fit_info = {**fit_info, "stderr": "max of the linear and 3-additive fits"}
        info = {
            "n_pairs": int(len(Zs)),
            "paired": True,
            "variant": "KernelSHAP, stratified without replacement, Horvitz-Thompson weights",
            **fit_info,
            "orders_fitted": {k: _total_variance(f[1]) for k, f in fits.items()},
            "strata": [
                {
                    "size": int(s),
                    "pairs": int(plan.population[h]),
                    "taken": int(plan.take[h]),
                    "enumerated": bool(plan.enumerated[h]),
                }
                for h, s in enumerate(plan.sizes)
            ],
            "covariance": cov,
        }
        return self._result(game, values, stderr, full, empty, info)

    def _orders(self, n: int, n_pairs: int) -> list[tuple[int, float]]:
        """The fits to try: (order, ridge) pairs."""
        order = self.options["order"]
        p3 = n_params(n, 3)
        ridge = RIDGE * min(1.0, p3 / max(n_pairs, 1)) ** RIDGE_POWER
        if order == 1 or n < 3 or p3 > MAX_PARAMS:
            return [(1, 0.0)]
        if order == 3:
            return [(3, ridge)]
        return [(1, 0.0), (3, ridge)]


def _total_variance(cov: np.ndarray) -> float:
    """Sum of the variances; +inf when undefined (so a fit without error bars is not chosen)."""
    t = float(np.trace(cov))
    return t if np.isfinite(t) else float("inf")
