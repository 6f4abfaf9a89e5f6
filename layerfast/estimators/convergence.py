"""Estimates and error bars as the budget grows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import UsageError
from . import shapley

__all__ = ["convergence"]


def convergence(
    game: Any,
    method: str,
    budgets: Iterable[int],
    seed: int = 0,
    memo: dict | None = None,
    **opts: Any,
) -> list[dict]:
    """Run ``method`` at each budget with the same seed and one shared memo.

    The shared memo means coalitions already evaluated at a smaller budget are not evaluated
    again by the game (with the same seed the sampling methods draw the same first units, so
    most of a larger run is already in the memo). Each run still counts its own distinct
    coalitions against its budget, so every record equals an independent run at that budget.

    Returns one dict per budget: ``budget``, ``values``, ``stderr`` (numpy arrays),
    ``n_evaluations``, ``n_new_evaluations`` (game calls this step actually made), ``method``,
    ``players``, ``efficiency_gap``.
    """
    budgets = [int(b) for b in budgets]
    if not budgets:
        raise UsageError("budgets must not be empty")
    memo = {} if memo is None else memo
    records = []
    for b in budgets:
        before = len(memo)
        res = shapley(game, method=method, budget=b, seed=seed, memo=memo, **opts)
        records.append(
            {
                "budget": b,
                "values": res.values,
                "stderr": res.stderr,
                "n_evaluations": res.n_evaluations,
                "n_new_evaluations": len(memo) - before,
                "method": res.method,
                "players": res.players,
                "efficiency_gap": res.efficiency_gap,
            }
        )
    return records
