"""What :func:`layerfast.estimators.interaction_index.interactions` returns:
:class:`InteractionResult`.

Sign convention: I_ij < 0 is a *redundant* pair (removing both hurts more than the two single
removals together: each backs up the other), I_ij > 0 a *synergistic* one (they work only
together). For the 2-player game "either one suffices" (v(empty) = 0, v otherwise 1) the index
is -1; for "both are needed" (v = 1 only with both) it is +1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError
from .result import _jsonable, total_stderr

__all__ = ["InteractionResult", "TOP_KINDS"]

TOP_KINDS = ("redundant", "synergistic")
ZERO_TOLERANCE = 1e-12  # |value| below this (times max(1, max |value|)) is rounding, no sign


def _square(x: np.ndarray, n: int, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.shape != (n, n):
        raise ValueError(f"{name} must be float [n, n] = [{n}, {n}], got {x.shape}")
    return x


@dataclass
class InteractionResult:
    """Pairwise interaction indices of every pair of players, with standard errors.

    Attributes:
        players: player names (n).
        values: float64 [n, n], symmetric; ``values[i, j]`` is the index of the pair (i, j).
            The diagonal is NaN (a player does not interact with itself; order-2 indices are
            defined for pairs only). Pairs a method did not estimate (``removal`` with
            ``pairs="adjacent"``) are NaN too.
        stderr: float64 [n, n] coalition-sampling standard errors (0 for ``exact`` and
            ``removal``, which have no sampling error; NaN on the diagonal).
        method: ``exact``, ``removal`` or ``sampled``.
        n_evaluations: distinct coalitions used.
        order: 2.
        info: method details (budget, sizes enumerated and sampled, samples, notes;
            ``info["item_bootstrap"]`` for the item bootstrap).
        stderr_items: float64 [n, n] item-sampling standard errors from the bootstrap over items
            (``item_bootstrap=B``; NaN for a game without per-item terms), or None when it was
            not run.
        item_replicates: float64 [B, n, n] the replicates' values (in memory only), or None.
    """

    players: list[str]
    values: np.ndarray
    stderr: np.ndarray
    method: str
    n_evaluations: int
    order: int = 2
    info: dict = field(default_factory=dict)
    stderr_items: np.ndarray | None = None
    item_replicates: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.players = [str(p) for p in self.players]
        n = len(self.players)
        self.values = _square(self.values, n, "values")
        self.stderr = _square(self.stderr, n, "stderr")
        if self.stderr_items is not None:
            self.stderr_items = _square(self.stderr_items, n, "stderr_items")
        self.n_evaluations = int(self.n_evaluations)
        self.order = int(self.order)

    @property
    def n_players(self) -> int:
        return len(self.players)

    @property
    def stderr_total(self) -> np.ndarray:
        """float64 [n, n]: sqrt(stderr^2 + stderr_items^2); ``stderr`` where the item part is
        missing (no bootstrap, or a game without per-item terms)."""
        if self.stderr_items is None:
            return self.stderr.copy()
        return total_stderr(self.stderr, self.stderr_items)

    def pairs(self) -> list[tuple[int, int, float, float]]:
        """Every estimated pair i < j as ``(i, j, value, stderr_total)``, sorted by value from
        the most redundant (most negative) to the most synergistic; NaN values left out."""
        se = self.stderr_total
        i, j = np.triu_indices(self.n_players, k=1)
        out = [
            (int(a), int(b), float(self.values[a, b]), float(se[a, b]))
            for a, b in zip(i, j)
            if not np.isnan(self.values[a, b])
        ]
        return sorted(out, key=lambda r: (r[2], r[0], r[1]))

    def top(self, k: int = 5, kind: str = "redundant") -> list[tuple[int, int, float, float]]:
        """The ``k`` most redundant pairs (most negative values, only those < 0) or the ``k``
        most synergistic (largest, only those > 0), as :meth:`pairs` rows; fewer when fewer
        pairs have that sign (values within rounding of 0, :data:`ZERO_TOLERANCE`, have none)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise UsageError(f"k must be a whole number >= 1, got {k!r}")
        if kind not in TOP_KINDS:
            raise UsageError(f"kind must be one of {', '.join(TOP_KINDS)}; got {kind!r}")
        rows = self.pairs()
        tol = ZERO_TOLERANCE * max(1.0, float(np.nanmax(np.abs(self.values), initial=0.0)))
        if kind == "redundant":
            return [r for r in rows if r[2] < -tol][:k]
        return [r for r in reversed(rows) if r[2] > tol][:k]

    def rows(self) -> list[dict]:
        """One dict per estimated pair (the order of :meth:`pairs`), for CSV files."""
        items = self.stderr_items
        out = []
        for i, j, value, total in self.pairs():
            row = {
                "i": i,
                "j": j,
                "player_i": self.players[i],
                "player_j": self.players[j],
                "value": value,
                "stderr": float(self.stderr[i, j]),
            }
            if items is not None:
                row.update(stderr_items=float(items[i, j]), stderr_total=total)
            out.append(row)
        return out

    def to_dict(self) -> dict:
        """JSON-serialisable dict (NaN, the diagonal included, becomes ``None``)."""
        return _jsonable(
            {
                "index": "SII" if self.method != "removal" else "removal interaction",
                "order": self.order,
                "method": self.method,
                "players": self.players,
                "values": self.values,
                "stderr": self.stderr,
                "stderr_items": self.stderr_items,
                "stderr_total": self.stderr_total,
                "n_evaluations": self.n_evaluations,
                "info": self.info,
            }
        )

    def table(self, top: int | None = None) -> str:
        """Plain-text table of the pairs (most redundant first; ``top``: only the ``top`` most
        redundant and ``top`` most synergistic)."""
        rows = self.pairs()
        if top is not None and len(rows) > 2 * top:
            rows = rows[:top] + rows[-top:]
        w = max([8] + [len(p) for p in self.players])
        head = f"{'player i':<{w}}  {'player j':<{w}}  {'value':>12}  {'stderr':>10}"
        lines = [head]
        for i, j, value, se in rows:
            pi, pj = self.players[i], self.players[j]
            lines.append(f"{pi:<{w}}  {pj:<{w}}  {value:>12.6g}  {se:>10.3g}")
        lines.append(
            f"method={self.method} order={self.order} n_evaluations={self.n_evaluations} "
            "(value < 0: redundant, > 0: synergistic)"
        )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"InteractionResult(method={self.method!r}, n_players={self.n_players}, "
            f"order={self.order}, n_evaluations={self.n_evaluations})"
        )
