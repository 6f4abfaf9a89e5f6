"""Shapley-value estimators for layer-importance games.

    from layerfast.estimators import shapley
    res = shapley(game, method="proximity", window=3)

Stage 4 of models -> tasks -> evaluation -> estimators -> report, numpy only. ``game`` is any
callable taking a bool array [m, n] (True = player kept) and returning a float array [m], with
an integer attribute ``n_players``; what else an estimator may use of it is written down in
:mod:`.contract` (an ``lf.Game`` offers all of it). See ``docs/shapley.md``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from ..errors import UsageError
from .bootstrap import bootstrap_shapley, check_item_bootstrap
from .budget import BudgetedGame, BudgetExceeded, BudgetTooSmall
from .contract import CoalitionGame, GameInfo, ItemGame, describe
from .estimator import Estimator
from .exact import ExactEstimator
from .interaction_index import InteractionResult, interactions
from .kernel import KernelEstimator
from .kernel_ht import KernelHTEstimator
from .options import check_budget_value
from .permutation import PermutationEstimator
from .proximity import ProximityEstimator, proximity_cost
from .registry import ESTIMATORS, get_estimator
from .result import ShapleyResult
from .stopping import check_stopping, run_until
from .truncated import TruncatedEstimator


def shapley(
    game: Any,
    method: str = "proximity",
    budget: int | None = None,
    seed: int | np.random.Generator | None = 0,
    progress: bool = False,
    *,
    eval_empty: bool | None = None,
    memo: dict | None = None,
    item_bootstrap: int = 0,
    budget_compute: float | None = None,
    target_stderr: float | None = None,
    until: str | None = None,
    confidence: float = 0.95,
    **method_options: Any,
) -> ShapleyResult:
    """Estimate the Shapley value of every player of ``game``.

    Args:
        game: callable bool[m, n] -> float[m] with attribute ``n_players``.
        method: one of ``ESTIMATORS`` (``exact``, ``proximity``, ``permutation``,
            ``truncated``, ``kernel``, ``kernel_ht``: the most accurate sampler, docs/shapley.md).
        budget: maximum number of distinct coalitions evaluated. ``None``: the method's own
            cost (``exact``: 2^n, ``proximity``: sum_k (n-k+1) + 1) or a default of 50 n for
            the sampling methods.
        seed: seed (or numpy Generator) for the sampling methods.
        progress: show a tqdm bar counting evaluations (if tqdm is installed).
        eval_empty: v(empty) is needed for ``efficiency_gap``. ``None`` (default): evaluate it
            after the estimate if the method did not and the budget has room left; ``True``:
            always (error if the budget has no room); ``False``: never.
        memo: optional dict shared between calls; coalitions found in it are not re-evaluated
            by the game (they still count towards this call's budget and ``n_evaluations``).
        **method_options: options of the method (e.g. ``window=3`` for proximity); unknown
            names raise :class:`~layerfast.estimators.options.OptionTypeError` (a
            ``UsageError`` and a ``TypeError``) listing the valid ones.
        item_bootstrap: B > 0 adds the error due to the item sample: the items are resampled
            B times (paired across coalitions, seeded by ``seed``) and the same method is re-run
            with the same seed on each reweighted game (:mod:`.bootstrap`; 200 is a good
            choice). Sets ``stderr_items``, ``stderr_total`` and ``rank_stability``; the
            per-item terms come from ``game.per_item`` (a game without it gets NaN and a note
            in ``info["item_bootstrap"]``). 0 (default): off.
        budget_compute: cap on the compute the estimate may spend, in token-sublayer
            evaluations (a kept sublayer run on one real token; ``lf.Game.cost`` prices a set
            of coalitions as its executor runs them, prefix sharing included; coalitions
            already in memory are free). For the sampling methods that grow their sample unit
            by unit: permutation and kernel. With it, ``budget`` (coalitions) defaults to
            min(2^n, 100,000). ``info["compute"]`` reports the compute spent, with or without
            a cap, for a game that has ``cost``.
        target_stderr: stop when settled: re-estimate at growing budgets (x2, re-using every
            coalition) until every standard error (the total one with ``item_bootstrap``) is
            <= this; ``budget`` is then the maximum (default 20x the method's minimum or its
            default, whichever is larger). :mod:`.stopping`; ``info["stop"]`` says why it
            stopped (settled, the maximum budget, or an item error above the target).
        until: ``"topK"``: the same, until the top K players are known as a set with
            probability >= ``confidence`` (both rules must hold when both are given).
        confidence: for ``until`` (default 0.95).

    Raises:
        UsageError: an unknown method, a bad option value or budget (a budget that is not an
            integer raises ``OptionTypeError``, also a ``TypeError``).
        BudgetExceeded: an estimator asked for more coalitions than the budget (a bug).
    """
    est = get_estimator(method, **method_options)
    budget = check_budget_value(budget)
    if target_stderr is not None or until is not None:
        n = int(game.n_players)
        target, k, conf, maximum = check_stopping(
            est, n, budget, target_stderr, until, confidence, budget_compute
        )
        shared = {} if memo is None else memo
        rng_start = seed if isinstance(seed, np.random.Generator) else None

        def run(step_budget: int) -> ShapleyResult:
            step_seed = copy.deepcopy(rng_start) if rng_start is not None else seed
            return shapley(
                game,
                method,
                step_budget,
                step_seed,
                progress,
                eval_empty=eval_empty,
                memo=shared,
                item_bootstrap=item_bootstrap,
                **method_options,
            )

        return run_until(run, est, n, shared, target, k, conf, maximum, seed)
    item_bootstrap = check_item_bootstrap(item_bootstrap)
    if eval_empty not in (None, True, False):
        raise UsageError("eval_empty must be None, True or False")
    if budget_compute is not None:
        if isinstance(budget_compute, bool) or not float(budget_compute) > 0:
            raise UsageError(f"budget_compute must be a number > 0, got {budget_compute!r}")
        if not est.compute_capped:
            capped = [name for name, cls in ESTIMATORS.items() if cls.compute_capped]
            raise UsageError(
                f"budget_compute caps the methods that grow their sample unit by unit "
                f"({', '.join(capped)}), not {method!r}; its cost is reported in "
                "info['compute']"
            )
        if budget is None:
            budget = int(min(2.0 ** int(game.n_players), 100_000))
    about = describe(game)
    g = BudgetedGame(game, budget=None, memo=memo, progress=progress, compute_cap=budget_compute)
    ran_before = about.compute_run() if about.compute_run is not None else None
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    rng0 = copy.deepcopy(rng)  # the replicates of the item bootstrap start from the same state
    try:
        try:
            res = est.estimate(g, budget, rng)
        except (BudgetTooSmall, BudgetExceeded):
            # under a compute cap the fixed evaluations (v(N), v(empty)) or the first unit may
            # not fit
            if budget_compute is None:
                raise
            raise UsageError(
                f"budget_compute={budget_compute:g} is too small for one sampled unit of "
                f"{method!r} (two antithetic coalition sets); raise it"
            ) from None
        if not math.isfinite(res.empty) and eval_empty is not False:
            if eval_empty and budget is None:
                g.budget = (g.budget or 0) + 1  # no user limit: allow the extra evaluation
            if g.remaining >= 1:
                res.empty = float(g(np.zeros((1, g.n_players), dtype=bool))[0])
                res.n_evaluations = g.n_evaluations
                res.info["empty_evaluated_for_efficiency"] = True
            elif eval_empty:
                raise UsageError(
                    "eval_empty=True but the budget has no room left for v(empty); raise the "
                    "budget by one"
                )
    finally:
        g.close()
    res.info.setdefault("seed", seed if isinstance(seed, (int, type(None))) else "generator")
    res.info["n_game_evaluations"] = g.n_game_evaluations
    res.info["n_game_calls"] = g.n_calls
    if about.cost is not None:
        res.info["compute"] = {
            "unit": "token-sublayer evaluations",
            "priced": int(g.compute_used) if budget_compute is not None else None,
            "run": None if ran_before is None else int(about.compute_run() - ran_before),
            "cap": budget_compute,
        }
    if item_bootstrap:
        # under a compute cap the replicates may use the coalitions the estimate used, no more
        replicate_budget = g.n_evaluations if budget_compute is not None else budget

        def run(replicate: BudgetedGame, replicate_rng: np.random.Generator) -> ShapleyResult:
            return get_estimator(method, **method_options).estimate(
                replicate, replicate_budget, replicate_rng
            )

        bootstrap_shapley(res, game, run, rng0, item_bootstrap)
    return res


__all__ = [
    "shapley",
    "ShapleyResult",
    "interactions",
    "InteractionResult",
    "ESTIMATORS",
    "Estimator",
    "BudgetedGame",
    "BudgetExceeded",
    "BudgetTooSmall",
    "CoalitionGame",
    "ItemGame",
    "GameInfo",
    "describe",
    "get_estimator",
    "check_budget_value",
    "proximity_cost",
    "ExactEstimator",
    "ProximityEstimator",
    "PermutationEstimator",
    "TruncatedEstimator",
    "KernelEstimator",
    "KernelHTEstimator",
]
