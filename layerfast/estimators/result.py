"""What every estimator returns: :class:`ShapleyResult`, and its JSON conversion."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from ..errors import UsageError

__all__ = ["ShapleyResult", "total_stderr"]


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


def _floats(xs: Any, n: int) -> np.ndarray:
    """A JSON list (``None`` = NaN) as float64 [n]; all NaN when ``xs`` is missing."""
    if xs is None:
        return np.full(n, np.nan)
    return np.array([_float_or_nan(v) for v in xs], dtype=np.float64)


CI_WHICH = ("total", "coalitions", "items")


def total_stderr(coalitions: np.ndarray, items: np.ndarray) -> np.ndarray:
    """sqrt(coalitions^2 + items^2), elementwise; ``coalitions`` where the item part is NaN (not
    measured). Any shape (the two the same)."""
    return np.where(np.isnan(items), coalitions, np.sqrt(coalitions**2 + items**2))


def rank_counts(replicates: np.ndarray) -> np.ndarray:
    """How often each player takes each rank: int64 [n, n], ``[i, r]`` = replicates (rows of
    float [B, n]) in which player i is r-th largest (r = 0 the top; ties broken by position)."""
    replicates = np.asarray(replicates, dtype=np.float64)
    B, n = replicates.shape
    order = np.argsort(-replicates, axis=1, kind="stable")  # [B, n]: player at rank r
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (order, np.broadcast_to(np.arange(n), (B, n))), 1)
    return counts


@dataclass
class ShapleyResult:
    """Shapley estimates for every player, with standard errors.

    Attributes:
        values: float64 [n] estimates.
        stderr: float64 [n] standard errors (NaN only where no error can be defined:
            ``exact``, whose values carry no sampling error, and a sampling run whose budget
            allowed a single unit, see ``Estimator.min_budget_for_stderr``; that one warns).
        n_evaluations: number of distinct coalitions the estimate used.
        method: estimator name.
        players: player names.
        full: v(N).
        empty: v(empty coalition), NaN if it was not evaluated.
        info: method-specific details (budget, number of permutations, window, notes ...;
            ``info["item_bootstrap"]``: the item bootstrap's replicates, items and notes).
        stderr_items: float64 [n] item-sampling standard errors from the bootstrap over items
            (``shapley(..., item_bootstrap=B)``); NaN when it was not run.
        item_replicates: float64 [B, n] the bootstrap replicates' values (in memory only; not
            in :meth:`to_dict`), or None.
        item_rank_counts: int64 [n, n] how often player i took rank r over the replicates
            (see :func:`rank_counts`; kept in :meth:`to_dict`), or None.
    """

    values: np.ndarray
    stderr: np.ndarray
    n_evaluations: int
    method: str
    players: list[str]
    full: float
    empty: float = float("nan")
    info: dict = field(default_factory=dict)
    stderr_items: np.ndarray | None = None
    item_replicates: np.ndarray | None = None
    item_rank_counts: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64).reshape(-1)
        self.stderr = np.asarray(self.stderr, dtype=np.float64).reshape(-1)
        if self.stderr.shape != self.values.shape:
            raise ValueError("values and stderr must have the same shape")
        n = self.values.shape[0]
        if self.stderr_items is None:
            self.stderr_items = np.full(n, np.nan)
        self.stderr_items = np.asarray(self.stderr_items, dtype=np.float64).reshape(-1)
        if self.stderr_items.shape != self.values.shape:
            raise ValueError("values and stderr_items must have the same shape")
        if self.item_replicates is not None:
            self.set_item_replicates(self.item_replicates)
        if self.item_rank_counts is not None:
            self.item_rank_counts = np.asarray(self.item_rank_counts, dtype=np.int64)
            if self.item_rank_counts.shape != (n, n):
                raise ValueError(f"item_rank_counts must be [n, n] = [{n}, {n}]")
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

    def set_item_replicates(self, replicates: np.ndarray) -> None:
        """Store the item bootstrap's replicate values float [B, n] (B >= 2) and derive
        ``stderr_items`` (std over replicates, ddof 1) and ``item_rank_counts`` from them."""
        reps = np.asarray(replicates, dtype=np.float64)
        if reps.ndim != 2 or reps.shape[1] != self.n_players or reps.shape[0] < 2:
            raise ValueError(
                f"item replicates must be float [B >= 2, {self.n_players}], got {reps.shape}"
            )
        self.item_replicates = reps
        self.stderr_items = reps.std(axis=0, ddof=1)
        self.item_rank_counts = rank_counts(reps)

    @property
    def coalition_stderr(self) -> np.ndarray:
        """float64 [n]: ``stderr``, with 0 for ``exact`` (no coalition-sampling error)."""
        if self.info.get("exact", False):
            return np.zeros_like(self.values)
        return self.stderr

    @property
    def stderr_total(self) -> np.ndarray:
        """float64 [n]: sqrt(stderr^2 + stderr_items^2), both error sources together.

        ``exact`` has no coalition error (total = stderr_items). Without the item bootstrap
        (stderr_items NaN) total = stderr, the only part measured; a NaN coalition stderr of a
        sampling method (too small a budget) makes the total NaN.
        """
        return total_stderr(self.coalition_stderr, self.stderr_items)

    def ci(self, level: float = 0.95, which: str = "total") -> tuple[np.ndarray, np.ndarray]:
        """Normal-approximation confidence interval ``values -/+ z * se``, float64 [n] each.

        Args:
            level: coverage in (0, 1).
            which: the error bar: ``"total"`` (:attr:`stderr_total`, the default),
                ``"coalitions"`` (``stderr``: coalition sampling only; zero width for
                ``exact``) or ``"items"`` (``stderr_items``: the item sample only).

        A NaN standard error gives NaN bounds.
        """
        if not 0.0 < level < 1.0:
            raise UsageError(f"level must be in (0, 1), got {level}")
        se = self.standard_error(which)
        z = NormalDist().inv_cdf(0.5 + level / 2.0)
        return self.values - z * se, self.values + z * se

    def standard_error(self, which: str = "total") -> np.ndarray:
        """float64 [n]: the standard error ``which`` is ``"total"``, ``"coalitions"`` or
        ``"items"`` (see :meth:`ci`)."""
        if which == "total":
            return self.stderr_total
        if which == "coalitions":
            return self.coalition_stderr
        if which == "items":
            return self.stderr_items
        raise UsageError(f"which must be one of {', '.join(CI_WHICH)}; got {which!r}")

    def rank_stability(self, k: int) -> np.ndarray:
        """float64 [n]: per player, the fraction of item-bootstrap replicates in which it is
        among the ``k`` largest values (the values sum to k over the players).

        Raises:
            UsageError: no item bootstrap was run, or ``k`` is not in 1..n.
        """
        n = self.n_players
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
            raise UsageError(f"k must be a whole number in 1..{n}, got {k!r}")
        if self.item_rank_counts is None:
            raise UsageError(
                "rank_stability needs the item bootstrap: shapley(..., item_bootstrap=B) with "
                "a game that has per_item"
            )
        counts = self.item_rank_counts
        return counts[:, :k].sum(axis=1) / counts[:, 0].sum()

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
                "stderr_items": self.stderr_items,
                "stderr_total": self.stderr_total,
                "item_rank_counts": self.item_rank_counts,
                "n_evaluations": self.n_evaluations,
                "full": self.full,
                "empty": self.empty,
                "efficiency_gap": self.efficiency_gap,
                "info": self.info,
            }
        )

    @classmethod
    def from_dict(cls, d: dict) -> ShapleyResult:
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
            stderr_items=_floats(d.get("stderr_items"), len(vals)),
            item_rank_counts=d.get("item_rank_counts"),
        )

    def table(self) -> str:
        """A small plain-text table of the values."""
        w = max([6] + [len(p) for p in self.players])
        items = bool(np.isfinite(self.stderr_items).any())
        head = f"{'player':<{w}}  {'value':>12}  {'stderr':>10}"
        lines = [head + (f"  {'items':>10}  {'total':>10}" if items else "")]
        rows = zip(self.players, self.values, self.stderr, self.stderr_items, self.stderr_total)
        for p, v, s, si, st in rows:
            line = f"{p:<{w}}  {v:>12.6g}  {s:>10.3g}"
            lines.append(line + (f"  {si:>10.3g}  {st:>10.3g}" if items else ""))
        lines.append(
            f"method={self.method} n_evaluations={self.n_evaluations} "
            f"v(N)={self.full:.6g} v(empty)={self.empty:.6g} "
            f"efficiency_gap={self.efficiency_gap:.3g}"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:  # compact
        return (
            f"ShapleyResult(method={self.method!r}, n_players={self.n_players}, "
            f"n_evaluations={self.n_evaluations}, full={self.full:.6g}, "
            f"efficiency_gap={self.efficiency_gap:.3g})"
        )
