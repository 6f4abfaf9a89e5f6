"""What every estimator returns: :class:`ShapleyResult`, and its JSON conversion."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from ..errors import UsageError

__all__ = ["ShapleyResult"]


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
        stderr: float64 [n] standard errors (NaN only where no error can be defined:
            ``exact``, whose values carry no sampling error, and a sampling run whose budget
            allowed a single unit, see ``Estimator.min_budget_for_stderr``; that one warns).
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
            raise UsageError(f"level must be in (0, 1), got {level}")
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
        )

    def table(self) -> str:
        """A small plain-text table of the values."""
        w = max([6] + [len(p) for p in self.players])
        lines = [f"{'player':<{w}}  {'value':>12}  {'stderr':>10}"]
        for p, v, s in zip(self.players, self.values, self.stderr):
            lines.append(f"{p:<{w}}  {v:>12.6g}  {s:>10.3g}")
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
