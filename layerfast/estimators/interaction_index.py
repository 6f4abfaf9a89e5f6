"""Pairwise interactions between players: the Shapley interaction index (SII) of order 2.

    from layerfast.estimators import interactions
    res = interactions(game, method="exact")      # or "sampled", "removal"
    res.values[i, j], res.stderr[i, j], res.top(5, "redundant")

The pairwise SII (Grabisch & Roubens 1999) of players i != j is

    I_ij = sum_{S subset of N \\ {i, j}} w(|S|) [v(S+i+j) - v(S+i) - v(S+j) + v(S)],
    w(s) = s! (n - s - 2)! / (n - 1)! = 1 / ((n - 1) C(n - 2, s)).

Written per coalition T (S = T \\ {i, j}, k = |T n {i, j}|), every v(T) enters every pair with
the coefficient m_ij(T) = (-1)^(2 - k) w(|T| - k), so the index is a linear function of the
utilities of the coalitions evaluated. Sign: I_ij < 0 is a redundant pair (each backs up the
other), I_ij > 0 a synergistic one (see :mod:`.interaction_result`).

Methods (``method=``):

* ``exact``: all 2^n coalitions (n <= 20); stderr 0. Option ``batch_size`` (coalitions per game
  call, default 4096).
* ``removal``: the cheap removal interaction v(N) - v(N\\i) - v(N\\j) + v(N\\{i,j}) (not the
  SII: only coalitions next to N), from 1 + n + n(n-1)/2 coalitions; stderr 0. Option ``pairs``:
  ``"all"`` (default) or ``"adjacent"`` (i, i+1 only, 1 + n + (n-1) coalitions, the others NaN):
  the adjacent pairs are exactly what a window-2 proximity sweep evaluates.
* ``sampled``: an unbiased Monte-Carlo SII in the style of SHAP-IQ (Fumagalli et al. 2023).
  Sizes 0 and n always, and every size whose coalitions all fit the budget it would get under
  the proposal, are enumerated (the border trick: small and large sizes first); the other
  sizes are sampled i.i.d.: a size t with probability p(t), then a coalition of that size
  uniformly, q(T) = p(t) / C(n, t); each draw contributes (v(T) - g(T)) m_ij(T) / q(T) to every
  pair (importance weights), with g an additive function least-squares fitted to the enumerated
  coalitions (an additive game has SII 0 and g is not random, so subtracting it removes the
  first-order part of v from the sampling error without a bias). p(t) is proportional to
  sqrt(h(t)), h(t) = 1/(t(t-1)) + 1/((n-t)(n-t-1)) + 2/(t(n-t)) (each term where it is
  defined), which minimises the second moment of the weights for a residual of constant
  magnitude. stderr = the standard deviation of the draws' contributions / sqrt(draws) (the
  enumerated part has no error). Sizes 1 and n-1 are enumerated whenever that leaves 2n
  coalitions to sample (:func:`~.interaction_design.plan_sizes`). Options ``chunk`` (draws per
  game call, default 256) and ``max_samples`` (default: the budget). Default budget
  min(2^n, max(100 n, 4)); the minimum is min(2^n, 4) (v(empty), v(N) and two draws).

The budget counts distinct coalitions (:class:`~.budget.BudgetedGame`; repeated draws are
free) and is never exceeded. ``item_bootstrap=B`` resamples the items as
:func:`~layerfast.estimators.shapley` does (:mod:`.bootstrap`) and recomputes the index from the
same coalitions for each resample.
"""

from __future__ import annotations

import copy
import difflib
from itertools import combinations
from typing import Any

import numpy as np

from ..errors import UsageError, warn
from .bootstrap import check_item_bootstrap, item_resamples
from .budget import BudgetedGame
from .exact import int_to_masks
from .interaction_design import (
    Design,
    coefficients,
    plan_sizes,
    scaled_coefficients,
    sii_design,
    sizes_masks,
)
from .interaction_result import InteractionResult
from .options import check_budget_value, check_int_option, check_option_names

__all__ = ["interactions", "InteractionResult", "METHODS", "OPTIONS", "removal_masks"]

METHODS = ("exact", "removal", "sampled")
OPTIONS: dict[str, dict[str, Any]] = {
    "exact": {"batch_size": 4096},
    "removal": {"pairs": "all"},
    "sampled": {"chunk": 256, "max_samples": None},
}
MAX_EXACT_PLAYERS = 20


def _exact(g: BudgetedGame, budget: int | None, rng, opts: dict) -> Design:
    n = g.n_players
    if n > MAX_EXACT_PLAYERS:
        raise UsageError(
            f"method 'exact' enumerates 2^n coalitions and is limited to n <= "
            f"{MAX_EXACT_PLAYERS} players (got n={n}); use method='sampled' (or 'removal')"
        )
    _need(budget, 1 << n, "exact", "use method='sampled' for a smaller budget")
    masks = int_to_masks(np.arange(1 << n), n)
    sizes = masks.sum(axis=1)
    y = np.concatenate(
        [g(masks[s : s + opts["batch_size"]]) for s in range(0, 1 << n, opts["batch_size"])]
    )
    design = sii_design(masks, coefficients(n, sizes), np.zeros(1 << n, bool), {})
    design.info.update(exact=True, n_coalitions=1 << n)
    return _with_values(design, y)


def _removal(g: BudgetedGame, budget: int | None, rng, opts: dict) -> Design:
    n = g.n_players
    if opts["pairs"] not in ("all", "adjacent"):
        raise UsageError(f"option pairs must be 'all' or 'adjacent', got {opts['pairs']!r}")
    pairs = [(i, i + 1) for i in range(n - 1)]
    if opts["pairs"] == "all":
        pairs = list(combinations(range(n), 2))
    _need(budget, 1 + n + len(pairs), "removal")
    masks = removal_masks(n, pairs)
    pi, pj = np.array(pairs).T

    def combine(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = np.full((n, n), np.nan)
        values[pi, pj] = y[0] - y[1 + pi] - y[1 + pj] + y[1 + n :]
        values[pj, pi] = values[pi, pj]
        return values, np.where(np.isnan(values), np.nan, 0.0)

    info = {"pairs": opts["pairs"], "n_coalitions": len(masks)}
    return _with_values(Design(masks, combine, info), g(masks))


def removal_masks(n: int, pairs: list[tuple[int, int]]) -> np.ndarray:
    """The coalitions of the removal interaction: N, N minus each player, N minus each pair of
    ``pairs``; bool [1 + n + len(pairs), n]."""
    masks = np.ones((1 + n + len(pairs), n), dtype=bool)
    masks[1 + np.arange(n), np.arange(n)] = False
    for r, (i, j) in enumerate(pairs):
        masks[1 + n + r, [i, j]] = False
    return masks


def _sampled(g: BudgetedGame, budget: int | None, rng, opts: dict) -> Design:
    n = g.n_players
    floor = min(2**n, 4) if n < 63 else 4
    budget = max(floor, min(2**n, 100 * n) if n < 63 else 100 * n) if budget is None else budget
    _need(budget, floor, "sampled")
    g.budget = budget
    exact, rest, p = plan_sizes(n, budget)
    masks = [sizes_masks(n, t) for t in exact]
    ys = [g(np.concatenate(masks))]
    probs = dict(zip(rest, p))
    cap = opts["max_samples"] or budget
    n_draws = 0
    while rest and n_draws < cap:
        k = min(opts["chunk"], cap - n_draws)
        sizes = rng.choice(np.array(rest), size=k, p=p)
        z = np.argsort(rng.random((k, n)), axis=1).argsort(axis=1) < sizes[:, None]
        fit = g.fit_prefix([z[r : r + 1] for r in range(k)])
        if fit:
            masks.append(z[:fit])
            ys.append(g(z[:fit]))
            n_draws += fit
        if fit < k:
            break
    all_masks = np.concatenate(masks)
    sizes = all_masks.sum(axis=1)
    n_exact = len(all_masks) - n_draws
    sampled = np.arange(len(all_masks)) >= n_exact
    coef = coefficients(n, sizes)
    if n_draws:
        coef[sampled] = scaled_coefficients(n, sizes[sampled], probs)
    info = {
        "budget": budget,
        "enumerated_sizes": exact,
        "sampled_sizes": rest,
        "size_probs": [float(x) for x in p],
        "n_enumerated": n_exact,
        "n_samples": n_draws,
    }
    if not rest:
        info["exact"] = True
        info["note_exact"] = "the budget covers all 2^n coalitions: the values are exact"
    elif n_draws < 2:
        warn(
            f"interactions(method='sampled') with n={n} players: budget={budget} left room for "
            f"{n_draws} draw(s), so stderr is NaN; raise the budget"
        )
    return _with_values(sii_design(all_masks, coef, sampled, info), np.concatenate(ys))


def _need(budget: int | None, need: int, method: str, hint: str = "") -> None:
    if budget is not None and budget < need:
        raise UsageError(
            f"budget={budget} is too small for interactions(method={method!r}): it needs at "
            f"least {need} coalitions" + (f"; {hint}" if hint else "")
        )


def _with_values(design: Design, y: np.ndarray) -> Design:
    design.y = np.asarray(y, dtype=np.float64)
    return design


RUNNERS = {"exact": _exact, "removal": _removal, "sampled": _sampled}


def interactions(
    game: Any,
    order: int = 2,
    method: str = "exact",
    budget: int | None = None,
    seed: int | np.random.Generator | None = 0,
    progress: bool = False,
    *,
    memo: dict | None = None,
    item_bootstrap: int = 0,
    **options: Any,
) -> InteractionResult:
    """Pairwise interaction index of every pair of players of ``game`` (module docstring).

    Args:
        game: callable bool[m, n] -> float[m] with ``n_players`` (n >= 2).
        order: the interaction order; only 2 (pairs) is supported.
        method: ``exact`` (2^n coalitions, n <= 20), ``removal`` (the removal interaction,
            1 + n + n(n-1)/2 coalitions) or ``sampled`` (Monte-Carlo SII with a stderr).
        budget: maximum distinct coalitions (None: the method's cost; ``sampled`` min(2^n,
            max(100 n, 4))). Too small a budget raises a UsageError naming the minimum.
        seed: seed or numpy Generator of ``sampled``.
        progress: a progress bar counting evaluations.
        memo: a dict shared between calls (coalitions in it are not re-evaluated).
        item_bootstrap: B >= 2 adds ``stderr_items`` (bootstrap over the items, same
            coalitions) and ``stderr_total``; 0 (default): off.
        **options: the method's options (``batch_size``; ``pairs``; ``chunk``, ``max_samples``).

    Raises:
        UsageError: an unknown method or option, ``order`` other than 2, n < 2, a bad budget.
    """
    if isinstance(order, bool) or order != 2:
        raise UsageError(f"order={order!r} is not supported: interactions computes order=2 only")
    if not isinstance(method, str) or method not in METHODS:
        close = difflib.get_close_matches(str(method), METHODS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"unknown method {method!r}{hint}; choose one of {list(METHODS)}")
    check_option_names(method, options, OPTIONS[method])
    opts = {**OPTIONS[method], **options}
    for name in ("batch_size", "chunk"):
        if name in opts:
            check_int_option(name, opts[name], 1)
    if "max_samples" in opts:
        check_int_option("max_samples", opts["max_samples"], 1, allow_none=True)
    budget = check_budget_value(budget)
    item_bootstrap = check_item_bootstrap(item_bootstrap)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    rng0 = copy.deepcopy(rng)
    g = BudgetedGame(game, budget=budget, memo=memo, progress=progress)
    if g.n_players < 2:
        raise UsageError(f"interactions need at least 2 players, the game has {g.n_players}")
    try:
        design = RUNNERS[method](g, budget, rng, opts)
    finally:
        g.close()
    values, stderr = design.combine(design.y)
    values, stderr = _symmetric(values), _symmetric(stderr)
    info = {**design.info, "options": opts, "n_game_evaluations": g.n_game_evaluations}
    info.setdefault("budget", budget if budget is not None else g.n_evaluations)
    info["seed"] = seed if isinstance(seed, (int, type(None))) else "generator"
    res = InteractionResult(g.players, values, stderr, method, g.n_evaluations, 2, info)
    if item_bootstrap:
        _item_bootstrap(res, game, design, rng0, item_bootstrap)
    return res


def _symmetric(x: np.ndarray) -> np.ndarray:
    x = (x + x.T) / 2.0
    np.fill_diagonal(x, np.nan)
    return x


def _item_bootstrap(
    res: InteractionResult, game: Any, design: Design, rng0: np.random.Generator, n_boot: int
) -> None:
    """``stderr_items`` (and ``item_replicates``) of ``res`` from B item resamples, the index
    recomputed from the same coalitions' reweighted utilities (as :mod:`.bootstrap`)."""
    record: dict = {"replicates": n_boot}
    res.info["item_bootstrap"] = record
    n = res.n_players
    full = float(design.y[np.all(design.masks, axis=1)][0])
    resamples = item_resamples(game, n, full, rng0, n_boot, record)
    if resamples is None:
        res.stderr_items = np.full((n, n), np.nan)
        return
    y = resamples.games.values(design.masks)  # [m, B]
    reps = np.stack([_symmetric(design.combine(y[:, b])[0]) for b in range(n_boot)])
    res.item_replicates = reps
    with np.errstate(invalid="ignore"):
        res.stderr_items = reps.std(axis=0, ddof=1)
    resamples.close(record)
