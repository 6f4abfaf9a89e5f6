"""Stop when settled: re-run an estimate at growing budgets until every standard error is below
a target, or until the top-k players are known at a stated confidence, within a maximum budget.

``shapley(game, method, budget=B, target_stderr=s, until="top5", confidence=0.95)`` calls
:func:`run_until`. The budgets grow geometrically (x2) from a start that gives an error bar, the
last one is B; every coalition evaluated is kept in one memo, so a step re-evaluates nothing.
For an estimator whose larger samples contain its smaller ones (``Estimator.nested``:
``kernel_ht``) a step of budget b has evaluated at most b coalitions in all, so the steps run up
to B; for the others a step may use at most what B leaves after the coalitions already
evaluated, so the total never exceeds B either.

Rules (both, when both are given):

* ``target_stderr=s``: every player's standard error <= s; with ``item_bootstrap`` the total
  one (coalitions and items). The item part does not shrink with more coalitions, so when it
  alone is above s the run stops at once and says so (more items are needed, not coalitions).
* ``until="topK"``: the probability that the K players with the largest values are the true
  top K (as a set) is >= ``confidence``, computed from the estimate's normal approximation
  (its covariance where the estimator gives one, ``info["covariance"]``, else independent errors;
  plus the item variance), by 4,000 draws.

The result's ``info["stop"]`` says why it stopped (``reason``: "target_stderr", "until", "both",
"items", "budget"), lists the steps (budget, coalitions evaluated so far, largest stderr,
top-K probability) and the total coalitions evaluated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import UsageError
from .estimator import Estimator
from .result import ShapleyResult

__all__ = ["check_rule", "check_stopping", "run_until", "topk_probability"]

N_DRAWS = 4000


def check_rule(
    est: Estimator, target_stderr: Any, until: Any, confidence: Any, budget_compute: Any = None
) -> tuple[float | None, int | None, float]:
    """The checks that do not need the game: (target, K, confidence). UsageError naming the
    option and the value (a compute budget alongside, a method without sampling error, a target
    <= 0, ``until`` not "topK" with K >= 1, a confidence outside (0, 1))."""
    if budget_compute is not None:
        raise UsageError(
            "budget_compute (--budget-compute) cannot be combined with target_stderr/until "
            "(--target-stderr/--until)"
        )
    if not est.stochastic:
        raise UsageError(
            f"target_stderr/until need a sampling method; {est.name!r} has no sampling error "
            "(its cost is fixed)"
        )
    target = None
    if target_stderr is not None:
        ok = not isinstance(target_stderr, bool) and isinstance(target_stderr, (int, float))
        if not (ok and math.isfinite(target_stderr) and target_stderr > 0):
            raise UsageError(f"target_stderr must be a number > 0, got {target_stderr!r}")
        target = float(target_stderr)
    k = None
    if until is not None:
        m = re.fullmatch(r"top(\d+)", until) if isinstance(until, str) else None
        if m is None or int(m.group(1)) < 1:
            raise UsageError(f"until must be 'topK' with K >= 1, e.g. 'top5'; got {until!r}")
        k = int(m.group(1))
    ok = not isinstance(confidence, bool) and isinstance(confidence, (int, float))
    if not (ok and 0 < confidence < 1):
        raise UsageError(f"confidence must be a number in (0, 1), got {confidence!r}")
    return target, k, float(confidence)


def check_stopping(
    est: Estimator,
    n: int,
    budget: int | None,
    target_stderr: Any,
    until: Any,
    confidence: Any,
    budget_compute: Any = None,
) -> tuple[float | None, int | None, float, int]:
    """:func:`check_rule`, then what depends on the n players: (target, K, confidence, the
    maximum budget). UsageError for K >= n or a maximum below the method's first step."""
    target, k, confidence = check_rule(est, target_stderr, until, confidence, budget_compute)
    if k is not None and k >= n:
        raise UsageError(f"until={until!r}: K must be below the number of players ({n})")
    maximum = budget if budget is not None else max(est.default_budget(n), 20 * est.min_budget(n))
    maximum = min(maximum, 2**n) if est.nested else maximum
    first = start_budget(est, n)
    if maximum < first:
        raise UsageError(
            f"budget={maximum} is below the first step of {est.name!r} with n={n} players "
            f"({first} evaluations, the least that gives a standard error); raise it"
        )
    return target, k, confidence, int(maximum)


def start_budget(est: Estimator, n: int) -> int:
    """The first step: the least budget with an error bar, and at least 4 n."""
    return max(est.min_budget_for_stderr(n) or est.min_budget(n), est.min_budget(n), 4 * n)


def topk_probability(
    values: np.ndarray, cov: np.ndarray, k: int, rng: np.random.Generator
) -> float:
    """P(the k largest of ``values`` are the top k), errors ~ N(0, cov) [n, n]; 4,000 draws."""
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(cov)):
        return float("nan")
    w, vec = np.linalg.eigh((cov + cov.T) / 2)
    root = vec * np.sqrt(np.clip(w, 0.0, None))  # cov = root root^T
    draws = values + rng.standard_normal((N_DRAWS, len(values))) @ root.T  # [draws, n]
    tops = np.argsort(-draws, axis=1, kind="stable")[:, :k]
    hit = np.zeros((N_DRAWS, len(values)), dtype=bool)
    np.put_along_axis(hit, tops, True, axis=1)
    want = np.zeros(len(values), dtype=bool)
    want[np.argsort(-values, kind="stable")[:k]] = True
    return float(np.mean((hit == want).all(axis=1)))


def _covariance(res: ShapleyResult) -> np.ndarray:
    """The estimate's error covariance [n, n]: the coalition part (the estimator's own, or
    diagonal) plus the item variance where the item bootstrap ran."""
    cov = res.info.get("covariance")
    coal = res.coalition_stderr
    cov = np.diag(coal**2) if cov is None else np.asarray(cov, dtype=np.float64)
    items = res.stderr_items
    if np.isfinite(items).all():
        cov = cov + np.diag(items**2)
    return cov


def run_until(
    run: Callable[[int], ShapleyResult],
    est: Estimator,
    n: int,
    memo: dict,
    target: float | None,
    k: int | None,
    confidence: float,
    maximum: int,
    seed: Any,
) -> ShapleyResult:
    """Run ``run(budget)`` (an estimate sharing ``memo``) at growing budgets until the rules
    hold or ``maximum`` is reached; the last result with ``info["stop"]``."""
    rng = np.random.default_rng(seed if isinstance(seed, (int, type(None))) else 0)
    steps: list[dict] = []
    before = len(memo)  # coalitions the memo held already (free, not counted)
    b = start_budget(est, n)
    res = None
    while True:
        used = len(memo) - before
        if est.nested:  # the largest step whose union with the earlier ones fits the maximum
            step_budget = b
            while est.union_cost(n, [x["budget"] for x in steps] + [step_budget]) > maximum:
                step_budget -= 1
        else:
            step_budget = min(b, maximum - used)
        if res is not None and step_budget <= steps[-1]["budget"]:
            reason = "budget"  # what is left of the maximum would not give a larger estimate
            break
        res = run(step_budget)
        step = _step(res, step_budget, len(memo) - before, k, rng)
        steps.append(step)
        reason = _reason(res, step, est, target, k, confidence, b, maximum)
        if reason is not None:
            break
        b = min(2 * b, maximum)
    items = res.stderr_items
    res.info["stop"] = {
        "reason": reason,
        "message": _message(reason, target, k, confidence, steps, items, maximum),
        "target_stderr": target,
        "until": None if k is None else f"top{k}",
        "confidence": confidence if k is not None else None,
        "max_budget": maximum,
        "coalitions_evaluated": len(memo) - before,
        "steps": steps,
    }
    return res


def _step(res: ShapleyResult, budget: int, used: int, k: int | None, rng) -> dict:
    se = res.stderr_total
    step = {
        "budget": budget,
        "coalitions_evaluated": used,
        "max_stderr": float(np.max(se)) if np.isfinite(se).all() else None,
    }
    if k is not None:
        step[f"p_top{k}"] = topk_probability(res.values, _covariance(res), k, rng)
    return step


def _reason(res, step, est, target, k, confidence, b, maximum) -> str | None:
    """Why to stop after this step, or None to go on."""
    met_se = step["max_stderr"] is not None and target is not None and step["max_stderr"] <= target
    p = step.get(f"p_top{k}") if k is not None else None
    met_k = p is not None and np.isfinite(p) and p >= confidence
    if (target is None or met_se) and (k is None or met_k):
        if target is not None and k is not None:
            return "both"
        return "target_stderr" if target is not None else "until"
    items = res.stderr_items
    if target is not None and np.isfinite(items).all() and float(np.max(items)) > target:
        return "items"
    if b >= maximum or (not est.nested and step["coalitions_evaluated"] >= maximum):
        return "budget"
    return None


def _message(reason, target, k, confidence, steps, items, maximum) -> str:
    last = steps[-1]
    said = f"after {len(steps)} step(s), {last['coalitions_evaluated']} coalitions"
    if reason == "items":
        return (
            f"stopped {said}: the item error alone ({float(np.max(items)):.4g}) is above "
            f"target_stderr={target:g}; more coalitions cannot reach it, more items can"
        )
    if reason == "budget":
        unmet = []
        se = last["max_stderr"]
        if target is not None and (se is None or se > target):
            unmet.append(f"largest stderr {'NaN' if se is None else f'{se:.4g}'} > {target:g}")
        p = last.get(f"p_top{k}") if k is not None else None
        if k is not None and not (p is not None and p >= confidence):
            unmet.append(f"P(top{k}) = {p:.3f} < {confidence:g}")
        return (
            f"stopped {said}: the maximum budget {maximum} was reached or leaves no room for "
            f"a larger step ({'; '.join(unmet)})"
        )
    met = []
    if target is not None:
        met.append(f"every stderr <= {target:g} (largest {last['max_stderr']:.4g})")
    if k is not None:
        met.append(f"the top {k} settled (P = {last[f'p_top{k}']:.3f} >= {confidence:g})")
    return f"settled {said}: {' and '.join(met)}"
