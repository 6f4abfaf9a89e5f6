"""The memoised, budget-counting wrapper every estimator evaluates its game through.

A *game* is any callable taking keep-masks bool [m, n] (True = player kept) and returning
float [m], with an integer attribute ``n_players``; what else it may offer is the contract of
:mod:`.contract` (read once, by :func:`~.contract.describe`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..coalitions import as_masks, coalition_keys
from ..errors import LayerfastError, UsageError
from ..progress import progress as progress_bar
from .contract import describe, player_names

__all__ = ["BudgetedGame", "BudgetExceeded", "BudgetTooSmall", "player_names"]


class BudgetExceeded(LayerfastError, RuntimeError):
    """Raised by :class:`BudgetedGame` when a request would exceed the budget.

    Estimators check the cost of a batch *before* asking (``n_new``/``fit_prefix``), so
    this is a safety net, not a control-flow device.
    """


class BudgetTooSmall(UsageError):
    """Raised by an estimator when its budget (coalitions or compute) leaves no room for one
    sampling unit; :func:`layerfast.estimators.shapley` says what to raise under a compute cap."""


class BudgetedGame:
    """Memoising, budget-counting wrapper around a game.

    ``g(masks)`` takes a bool array [m, n] (True = player kept) and returns float64 [m].
    Coalitions are keyed by :func:`layerfast.coalitions.coalition_keys`; the wrapper

    * evaluates only coalitions not already in the memo, each exactly once, in one batched
      call to the underlying game (duplicates inside a batch are removed too);
    * counts the distinct coalitions used in this run (``n_evaluations``) and refuses
      (``BudgetExceeded``) a request whose new coalitions would exceed ``budget``;
    * may share a ``memo`` dict across runs (see :func:`layerfast.estimators.convergence`):
      then the budget still counts every distinct coalition *this run* uses, but the
      underlying game is only called for coalitions not in the shared memo.

    Attributes:
        n_evaluations: distinct coalitions used by this run.
        n_game_evaluations: coalitions actually sent to the underlying game by this run.
        n_calls: number of batched calls to the underlying game.
    """

    def __init__(
        self,
        game: Callable[[np.ndarray], Any],
        budget: int | None = None,
        memo: dict | None = None,
        progress: bool = False,
        compute_cap: float | None = None,
    ) -> None:
        self.about = describe(game)
        self.game = game
        self.n_players = self.about.n_players
        self.players = self.about.players
        self.chance = self.about.chance
        self.budget = budget
        self.memo: dict = {} if memo is None else memo
        self.seen: set = set()
        self.n_game_evaluations = 0
        self.n_calls = 0
        self._progress = progress
        self._bar = None
        # compute (token-sublayer evaluations, the game's ``cost``) spent by this run, and the
        # cap on it; a game without ``cost`` cannot be capped
        self.compute_cap = compute_cap
        self.compute_used = 0
        if compute_cap is not None and self.about.cost is None:
            raise UsageError(
                "budget_compute needs a game that can price coalitions (an lf.Game, whose "
                "cost() counts token-sublayer evaluations)"
            )

    # -- keys ---------------------------------------------------------------------------------
    def _as_masks(self, masks: Any) -> np.ndarray:
        return as_masks(masks, self.n_players, players=self.players)

    def keys(self, masks: Any) -> list[str]:
        """Memo keys of ``masks`` (see :func:`layerfast.coalitions.coalition_keys`)."""
        return coalition_keys(self._as_masks(masks))

    # -- accounting -----------------------------------------------------------------------------
    @property
    def n_evaluations(self) -> int:
        return len(self.seen)

    @property
    def remaining(self) -> float:
        if self.budget is None:
            return math.inf
        return self.budget - len(self.seen)

    @property
    def n_total_coalitions(self) -> float:
        return 2.0**self.n_players

    @property
    def exhausted_space(self) -> bool:
        """True when every one of the 2^n coalitions has been used in this run."""
        return len(self.seen) >= self.n_total_coalitions

    def n_new(self, masks: Any) -> int:
        """Number of distinct coalitions in ``masks`` that this run has not used yet."""
        return len(set(self.keys(masks)) - self.seen)

    def fit_prefix(self, units: list[np.ndarray]) -> int:
        """Largest k such that the masks of ``units[:k]`` together fit in the budget.

        ``units`` is a list of mask arrays (e.g. the coalitions of one antithetic pair).
        """
        remaining = self.remaining
        k = len(units)
        if remaining != math.inf:
            new: set = set()
            k = 0
            for u in units:
                ks = set(self.keys(u)) - self.seen
                cand = new | ks
                if len(cand) > remaining:
                    break
                new = cand
                k += 1
        if self.compute_cap is None or k == 0:
            return k
        # the compute of a prefix of units grows with the prefix: the largest that fits
        lo, hi = 0, k
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._cost(np.concatenate(units[:mid])) <= self.compute_cap - self.compute_used:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _cost(self, masks: np.ndarray) -> int:
        """Compute the game would spend on ``masks`` now (0 for coalitions in the memo)."""
        keys = coalition_keys(self._as_masks(masks))
        fresh = [i for i, k in enumerate(keys) if k not in self.memo]
        return int(self.about.cost(np.asarray(masks)[fresh])) if fresh else 0

    def is_seen(self, mask: Any) -> bool:
        return self.keys(mask)[0] in self.seen

    def value_if_seen(self, mask: Any) -> float:
        k = self.keys(mask)[0]
        if k in self.seen:
            return float(self.memo[k])
        return float("nan")

    # -- evaluation -----------------------------------------------------------------------------
    def __call__(self, masks: Any) -> np.ndarray:
        masks = self._as_masks(masks)
        m = masks.shape[0]
        if m == 0:
            return np.zeros(0, dtype=np.float64)
        keys = coalition_keys(masks)
        first: dict = {}
        for i, k in enumerate(keys):
            if k not in first:
                first[k] = i
        new = [k for k in first if k not in self.seen]
        if self.budget is not None and len(self.seen) + len(new) > self.budget:
            raise BudgetExceeded(
                f"request needs {len(new)} new coalitions but only {self.remaining} of the "
                f"budget {self.budget} are left"
            )
        to_eval = [k for k in new if k not in self.memo]
        if to_eval:
            rows = np.array([first[k] for k in to_eval], dtype=np.int64)
            sub = np.ascontiguousarray(masks[rows])
            if self.compute_cap is not None:
                spend = self._cost(sub)
                if self.compute_used + spend > self.compute_cap:
                    raise BudgetExceeded(
                        f"request needs {spend} token-sublayer evaluations but only "
                        f"{self.compute_cap - self.compute_used:.0f} of budget_compute "
                        f"{self.compute_cap:.0f} are left"
                    )
                self.compute_used += spend
            out = np.asarray(self.game(sub), dtype=np.float64).reshape(-1)
            if out.shape[0] != len(rows):
                raise ValueError(
                    f"the game returned {out.shape[0]} values for {len(rows)} coalitions"
                )
            for k, v in zip(to_eval, out.tolist()):
                self.memo[k] = v
            self.n_game_evaluations += len(rows)
            self.n_calls += 1
        self.seen.update(new)
        if new:
            self._tick(len(new))
        return np.fromiter((self.memo[k] for k in keys), dtype=np.float64, count=m)

    # -- progress -------------------------------------------------------------------------------
    def _tick(self, k: int) -> None:
        # A game that draws its own bar (lf.Game) moves it as coalitions finish; a second bar
        # here would only jump when the call returns (a proximity sweep is one call: "0/N").
        if not self._progress or self.about.draws_progress:
            return
        if self._bar is None:
            self._bar = progress_bar(total=self.budget, desc="shapley", unit="eval")
        self._bar.update(k)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
