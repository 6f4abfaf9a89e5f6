"""The base class of all Shapley estimators: option validation, budgets, the estimate loop.

A new estimator subclasses :class:`Estimator` and is added to ``ESTIMATORS`` in
:mod:`layerfast.estimators.registry` (the one list of methods; the CLI builds ``--method`` from
it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import UsageError, warn
from .budget import BudgetedGame
from .options import check_budget_value, check_option_names
from .result import ShapleyResult

__all__ = ["Estimator"]


class Estimator:
    """Base class: one subclass per estimator, registered in ``ESTIMATORS`` by ``name``.

    Subclasses define ``name``, ``OPTIONS`` (option name -> default), ``_check_options``,
    ``min_budget(n)``, ``default_budget(n)`` and ``_estimate(game, budget, rng)``; sampling
    methods whose stderr needs two units also define ``min_budget_for_stderr(n)``.
    """

    name: str = ""
    OPTIONS: dict[str, Any] = {}
    stochastic: bool = True
    # grows its sample unit by unit, so a compute budget (shapley(budget_compute=)) can cap it
    compute_capped: bool = False
    # its sample at double a budget contains the sample at that budget (same seed), and
    # union_cost counts the coalitions of several budgets: growing the budget
    # (shapley(target_stderr=)) re-uses every coalition
    nested: bool = False

    def __init__(self, **options: Any) -> None:
        check_option_names(self.name, options, self.OPTIONS)
        self.options = {**self.OPTIONS, **options}
        self._check_options()

    def _check_options(self) -> None:  # pragma: no cover - overridden
        pass

    # budgets ---------------------------------------------------------------------------------
    def min_budget(self, n: int) -> int:
        return 1

    def default_budget(self, n: int) -> int:
        return self.min_budget(n)

    def min_budget_for_stderr(self, n: int) -> int | None:
        """The smallest budget that guarantees a finite ``stderr`` for n players (two sampling
        units), or None where the budget does not decide it (``exact``: no sampling error;
        ``proximity``: a fixed cost). Below it, :meth:`estimate` warns when stderr is NaN."""
        return None

    def union_cost(self, n: int, budgets: list[int]) -> int:
        """Distinct coalitions evaluated by estimates at all of ``budgets`` with one seed
        (for a ``nested`` estimator; the others do not know it and return the sum)."""
        return int(sum(budgets))

    def resolve_budget(self, n: int, budget: int | None) -> int:
        """The budget to run with: ``budget`` checked against ``min_budget(n)``, or the default."""
        budget = check_budget_value(budget)
        if budget is None:
            return self.default_budget(n)
        need = self.min_budget(n)
        if budget < need:
            raise UsageError(
                f"budget={budget} is too small for method {self.name!r} with n={n} players: "
                f"it needs at least {need} evaluations"
            )
        return budget

    # estimation ------------------------------------------------------------------------------
    def estimate(
        self,
        game: Any,
        budget: int | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> ShapleyResult:
        """Estimate Shapley values of ``game`` using at most ``budget`` distinct coalitions."""
        g = game if isinstance(game, BudgetedGame) else BudgetedGame(game)
        n = g.n_players
        b = self.resolve_budget(n, budget)
        if g.budget is None or g.budget > b:
            g.budget = b
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng)
        res = self._estimate(g, b, rng)
        res.n_evaluations = g.n_evaluations
        if not math.isfinite(res.empty):
            res.empty = g.value_if_seen(np.zeros(n, dtype=bool))
        res.info.setdefault("budget", b)
        self._warn_if_no_stderr(res, n, b)
        return res

    def _warn_if_no_stderr(self, res: ShapleyResult, n: int, budget: int) -> None:
        """One :class:`~layerfast.errors.LayerfastWarning` when the budget was too small for an
        error bar (stderr NaN and ``budget < min_budget_for_stderr(n)``)."""
        floor = self.min_budget_for_stderr(n)
        if floor is None or budget >= floor or not np.isnan(res.stderr).any():
            return
        warn(
            f"method {self.name!r} with n={n} players: budget={budget} sampled too few units "
            f"for a standard error, so stderr is NaN; budget >= {floor} gives an error bar",
        )

    def _estimate(self, game: BudgetedGame, budget: int, rng: np.random.Generator) -> ShapleyResult:
        raise NotImplementedError

    def _result(
        self,
        game: BudgetedGame,
        values: np.ndarray,
        stderr: np.ndarray,
        full: float,
        empty: float,
        info: dict,
    ) -> ShapleyResult:
        """This estimator's result; notes when the sampling touched all 2^n coalitions."""
        if game.exhausted_space:
            info["note_exact"] = (
                "the budget covers all 2^n coalitions: method='exact' is exact at this cost"
            )
        return ShapleyResult(
            values=values,
            stderr=stderr,
            n_evaluations=game.n_evaluations,
            method=self.name,
            players=game.players,
            full=full,
            empty=empty,
            info=info,
        )

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"
