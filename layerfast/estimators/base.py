"""Shared machinery for the Shapley estimators.

* :class:`ShapleyResult` -- what every estimator returns.
* :class:`BudgetedGame` -- wraps a user game: memoises utilities (a coalition is never
  evaluated twice, also not twice inside one batch), counts distinct coalitions against a
  budget, and shows an optional progress bar.
* :class:`Estimator` -- the base class of all estimators (option validation, budget checks).

Only the standard library and numpy are used here so that ``layerfast.estimators`` imports
without the rest of the package.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Callable

import numpy as np

__all__ = [
    "ShapleyResult",
    "BudgetedGame",
    "BudgetExceeded",
    "Estimator",
    "player_names",
    "check_budget_value",
]


# --------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------


def _jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays and NaN/inf floats into plain JSON-friendly objects."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def _float_or_nan(x: Any) -> float:
    return float("nan") if x is None else float(x)


@dataclass
class ShapleyResult:
    """Shapley estimates for every player, with standard errors.

    Attributes:
        values: float64 [n] estimates.
        stderr: float64 [n] standard errors (NaN only where no error can be defined,
            e.g. ``exact`` where the values carry no sampling error).
        n_evaluations: number of distinct coalitions the estimate used.
        method: estimator name.
        players: player names.
        full: v(N).
        empty: v(empty coalition), NaN if it was not evaluated.
        info: method-specific details (budget, number of permutations, window, notes ...).
    """

    values: np.ndarray
    stderr: np.ndarray
    n_evaluations: int
    method: str
    players: list[str]
    full: float
    empty: float = float("nan")
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64).reshape(-1)
        self.stderr = np.asarray(self.stderr, dtype=np.float64).reshape(-1)
        if self.stderr.shape != self.values.shape:
            raise ValueError("values and stderr must have the same shape")
        self.players = list(self.players)
        if len(self.players) != len(self.values):
            raise ValueError("one player name per value is required")
        self.full = float(self.full)
        self.empty = _float_or_nan(self.empty)
        self.n_evaluations = int(self.n_evaluations)

    @property
    def n_players(self) -> int:
        return len(self.values)

    @property
    def efficiency_gap(self) -> float:
        """sum(values) - (v(N) - v(empty)); NaN when v(empty) was not evaluated."""
        if not math.isfinite(self.empty):
            return float("nan")
        return float(np.sum(self.values) - (self.full - self.empty))

    def ci(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Normal-approximation confidence interval ``values -/+ z * stderr``.

        For ``exact`` the interval has zero width; elsewhere a NaN stderr gives NaN bounds.
        """
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        if self.info.get("exact", False):
            return self.values.copy(), self.values.copy()
        z = NormalDist().inv_cdf(0.5 + level / 2.0)
        return self.values - z * self.stderr, self.values + z * self.stderr

    def ranking(self) -> list[str]:
        """Players sorted from the most to the least important (by value)."""
        order = np.argsort(-self.values, kind="stable")
        return [self.players[i] for i in order]

    def to_dict(self) -> dict:
        """JSON-serialisable dict (NaN/inf become ``None``)."""
        return _jsonable(
            {
                "method": self.method,
                "players": self.players,
                "values": self.values,
                "stderr": self.stderr,
                "n_evaluations": self.n_evaluations,
                "full": self.full,
                "empty": self.empty,
                "efficiency_gap": self.efficiency_gap,
                "info": self.info,
            }
        )

    @classmethod
    def from_dict(cls, d: dict) -> "ShapleyResult":
        """Inverse of :meth:`to_dict` (``None`` becomes NaN)."""
        vals = np.array([_float_or_nan(v) for v in d["values"]])
        se = np.array([_float_or_nan(v) for v in d["stderr"]])
        return cls(
            values=vals,
            stderr=se,
            n_evaluations=d["n_evaluations"],
            method=d["method"],
            players=d["players"],
            full=_float_or_nan(d["full"]),
            empty=_float_or_nan(d.get("empty")),
            info=dict(d.get("info") or {}),
        )

    def table(self) -> str:
        """A small plain-text table of the values."""
        w = max([6] + [len(p) for p in self.players])
        lines = [f"{'player':<{w}}  {'value':>12}  {'stderr':>10}"]
        for p, v, s in zip(self.players, self.values, self.stderr):
            lines.append(f"{p:<{w}}  {v:>12.6g}  {s:>10.3g}")
        lines.append(
            f"method={self.method} n_evaluations={self.n_evaluations} "
            f"v(N)={self.full:.6g} v(empty)={self.empty:.6g} efficiency_gap={self.efficiency_gap:.3g}"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:  # compact
        return (
            f"ShapleyResult(method={self.method!r}, n_players={self.n_players}, "
            f"n_evaluations={self.n_evaluations}, full={self.full:.6g}, "
            f"efficiency_gap={self.efficiency_gap:.3g})"
        )


# --------------------------------------------------------------------------------------------
# budgeted, memoised game wrapper
# --------------------------------------------------------------------------------------------


class BudgetExceeded(RuntimeError):
    """Raised by :class:`BudgetedGame` when a request would exceed the budget.

    Estimators check the cost of a batch *before* asking (``n_new``/``fit_prefix``), so
    this is a safety net, not a control-flow device.
    """


def player_names(game: Any, n: int) -> list[str]:
    players = getattr(game, "players", None)
    if players is None:
        return [f"p{i}" for i in range(n)]
    players = [str(p) for p in players]
    if len(players) != n:
        raise ValueError(f"game.players has {len(players)} names but n_players={n}")
    return players


def _get_n_players(game: Any) -> int:
    n = getattr(game, "n_players", None)
    if n is None:
        raise TypeError("the game must have an integer attribute `n_players`")
    if isinstance(n, bool) or int(n) != n or int(n) < 1:
        raise ValueError(f"game.n_players must be a positive integer, got {n!r}")
    return int(n)


class BudgetedGame:
    """Memoising, budget-counting wrapper around a game.

    ``g(masks)`` takes a bool array [m, n] (True = player kept) and returns float64 [m].
    Coalitions are keyed by their packed bytes; the wrapper

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
    ) -> None:
        if not callable(game):
            raise TypeError("game must be callable: bool[m, n] -> float[m]")
        self.game = game
        self.n_players = _get_n_players(game)
        self.players = player_names(game, self.n_players)
        self.chance = getattr(game, "chance", None)
        self.budget = budget
        self.memo: dict = {} if memo is None else memo
        self.seen: set = set()
        self.n_game_evaluations = 0
        self.n_calls = 0
        self._progress = progress
        self._bar = None

    # -- keys ---------------------------------------------------------------------------------
    def _as_masks(self, masks: Any) -> np.ndarray:
        masks = np.asarray(masks)
        if masks.ndim == 1:
            masks = masks.reshape(1, -1)
        if masks.ndim != 2 or masks.shape[1] != self.n_players:
            raise ValueError(
                f"masks must have shape [m, {self.n_players}], got {tuple(masks.shape)}"
            )
        if masks.dtype != np.bool_:
            masks = masks.astype(bool)
        return masks

    def keys(self, masks: Any) -> list[bytes]:
        masks = self._as_masks(masks)
        packed = np.packbits(masks, axis=1)
        return [row.tobytes() for row in packed]

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
        if remaining == math.inf:
            return len(units)
        new: set = set()
        k = 0
        for u in units:
            ks = set(self.keys(u)) - self.seen
            cand = new | ks
            if len(cand) > remaining:
                break
            new = cand
            k += 1
        return k

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
        keys = self.keys(masks)
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
        if not self._progress:
            return
        if self._bar is None:
            try:
                from tqdm.auto import tqdm
            except Exception:  # tqdm missing: silently no bar
                self._progress = False
                return
            self._bar = tqdm(total=self.budget, unit="eval", desc="shapley", leave=False)
        self._bar.update(k)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# --------------------------------------------------------------------------------------------
# estimator base class
# --------------------------------------------------------------------------------------------


def check_budget_value(budget: Any) -> int | None:
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        if isinstance(budget, float) and budget.is_integer():
            budget = int(budget)
        else:
            raise TypeError(f"budget must be a positive integer or None, got {budget!r}")
    budget = int(budget)
    if budget <= 0:
        raise ValueError(f"budget must be a positive integer (number of evaluations), got {budget}")
    return budget


class Estimator:
    """Base class: one subclass per estimator, registered in ``ESTIMATORS`` by ``name``.

    Subclasses define ``name``, ``OPTIONS`` (option name -> default), ``_check_options``,
    ``min_budget(n)``, ``default_budget(n)`` and ``_estimate(game, budget, rng)``.
    """

    name: str = ""
    OPTIONS: dict[str, Any] = {}
    stochastic: bool = True

    def __init__(self, **options: Any) -> None:
        unknown = [k for k in options if k not in self.OPTIONS]
        if unknown:
            valid = sorted(self.OPTIONS)
            hints = []
            for k in unknown:
                close = difflib.get_close_matches(k, valid, n=1)
                hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise TypeError(
                f"unknown option(s) for method {self.name!r}: {', '.join(hints)}; "
                f"valid options: {valid if valid else 'none'}"
            )
        self.options = {**self.OPTIONS, **options}
        self._check_options()

    def _check_options(self) -> None:  # pragma: no cover - overridden
        pass

    # budgets ---------------------------------------------------------------------------------
    def min_budget(self, n: int) -> int:
        return 1

    def default_budget(self, n: int) -> int:
        return self.min_budget(n)

    def resolve_budget(self, n: int, budget: int | None) -> int:
        budget = check_budget_value(budget)
        if budget is None:
            return self.default_budget(n)
        need = self.min_budget(n)
        if budget < need:
            raise ValueError(
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
        return res

    def _estimate(self, game: BudgetedGame, budget: int, rng: np.random.Generator) -> ShapleyResult:
        raise NotImplementedError

    def _result(self, game: BudgetedGame, values: np.ndarray, stderr: np.ndarray, full: float,
                empty: float, info: dict) -> ShapleyResult:
        """This estimator's result; notes when the sampling touched all 2^n coalitions."""
        if game.exhausted_space:
            info["note_exact"] = "the budget covers all 2^n coalitions: method='exact' is exact at this cost"
        return ShapleyResult(values=values, stderr=stderr, n_evaluations=game.n_evaluations,
                             method=self.name, players=game.players, full=full, empty=empty, info=info)

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


# --------------------------------------------------------------------------------------------
# small helpers shared by the sampling estimators
# --------------------------------------------------------------------------------------------


def unit_mean_stderr(units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over i.i.d. units (rows). stderr NaN with fewer than 2 units."""
    units = np.asarray(units, dtype=np.float64)
    k = units.shape[0]
    if k == 0:
        n = units.shape[1] if units.ndim == 2 else 0
        return np.full(n, np.nan), np.full(n, np.nan)
    mean = units.mean(axis=0)
    if k < 2:
        return mean, np.full(mean.shape, np.nan)
    se = units.std(axis=0, ddof=1) / math.sqrt(k)
    return mean, se


def check_int_option(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"option {name} must be an integer >= {minimum}, got {value!r}")
