"""The result of an ablation sweep (:func:`layerfast.estimators.ablation.ablate`): values, drops,
cornerstones with their tests, item-bootstrap intervals, and strict-JSON output."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError
from .result import rank_counts

NOT_ENOUGH_ITEMS = "not enough items to tell"


@dataclass
class AblationResult:
    """One ablation sweep. With per-item tests, ``p_full``, ``p_above`` and ``p_drop`` are set
    (see the module doc); otherwise the exact-value rule ``v(N\\{l}) <= chance + margin < v(N)``
    applies (no rule at all when ``chance`` or ``margin`` is None)."""

    players: list[str]
    full: float  # v(N)
    values: np.ndarray  # float64 [n]: v(N \ {l})
    chance: float | None
    margin: float | None
    utility: str = ""
    info: dict = field(default_factory=dict)
    alpha: float = 0.05
    p_full: float | None = None  # one-sided p of v(N) > chance + margin
    p_above: np.ndarray | None = None  # float64 [n]: one-sided p of v(N\{l}) > chance + margin
    p_drop: np.ndarray | None = None  # float64 [n]: paired one-sided p of a drop, Holm-adjusted
    # item bootstrap (None when not run): replicates of v(N) [B] and of v(N \ {l}) [B, n], and
    # the fraction of replicates in which each player is a cornerstone [n] (None: no chance)
    boot_full: np.ndarray | None = None
    boot_values: np.ndarray | None = None
    cornerstone_frequency: np.ndarray | None = None

    @property
    def item_bootstrap(self) -> int:
        """Number of item-bootstrap replicates (0: not run)."""
        return 0 if self.boot_values is None else int(self.boot_values.shape[0])

    @property
    def boot_drops(self) -> np.ndarray | None:
        """Replicates of the drops, float64 [B, n] (None without the bootstrap)."""
        if self.boot_values is None:
            return None
        return self.boot_full[:, None] - self.boot_values

    @property
    def stderr_items(self) -> np.ndarray:
        """Item-sampling standard errors of ``values`` (v(N \\ {l})), float64 [n]; NaN
        without the bootstrap."""
        return self._boot_std(self.boot_values)

    @property
    def drop_stderr_items(self) -> np.ndarray:
        """Item-sampling standard errors of ``drops``, float64 [n]; NaN without the
        bootstrap."""
        return self._boot_std(self.boot_drops)

    def _boot_std(self, reps: np.ndarray | None) -> np.ndarray:
        if reps is None:
            return np.full(len(self.players), np.nan)
        return reps.std(axis=0, ddof=1)

    def ci(self, level: float = 0.95, which: str = "drops") -> tuple[np.ndarray, np.ndarray]:
        """Percentile bootstrap interval over the items, float64 [n] each (NaN without the
        bootstrap).

        Args:
            level: coverage in (0, 1).
            which: ``"drops"`` (v(N) - v(N \\ {l})) or ``"values"`` (v(N \\ {l})).
        """
        if not 0.0 < level < 1.0:
            raise UsageError(f"level must be in (0, 1), got {level}")
        if which not in ("drops", "values"):
            raise UsageError(f"which must be 'drops' or 'values'; got {which!r}")
        reps = self.boot_drops if which == "drops" else self.boot_values
        if reps is None:
            nan = np.full(len(self.players), np.nan)
            return nan, nan.copy()
        lo, hi = np.quantile(reps, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=0)
        return lo, hi

    def rank_stability(self, k: int) -> np.ndarray:
        """float64 [n]: per player, the fraction of item-bootstrap replicates in which its drop
        is among the ``k`` largest (summing to k over the players)."""
        n = len(self.players)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
            raise UsageError(f"k must be a whole number in 1..{n}, got {k!r}")
        if self.boot_values is None:
            raise UsageError("rank_stability needs the item bootstrap (ablate(item_bootstrap=B))")
        counts = rank_counts(self.boot_drops)
        return counts[:, :k].sum(axis=1) / self.item_bootstrap

    @property
    def drops(self) -> np.ndarray:
        """v(N) − v(N \\ {l}), float64 [n]: the ablation importance score."""
        return self.full - self.values

    @property
    def tested(self) -> bool:
        """True when the cornerstones come from the per-item tests."""
        return self.p_full is not None and self.p_above is not None and self.p_drop is not None

    @property
    def status(self) -> str:
        """How the cornerstone question was answered: "tested", "exact values",
        "not enough items to tell", "no chance level" or "cannot tell without per-item data"."""
        if self.chance is None:
            return "no chance level"
        if self.tested:
            return "tested" if self.p_full <= self.alpha else NOT_ENOUGH_ITEMS
        if self.margin is None:
            return "cannot tell without per-item data"
        return "exact values" if self.full > self.chance + self.margin else NOT_ENOUGH_ITEMS

    @property
    def cornerstones(self) -> list[str]:
        if self.status == "tested":
            hit = (self.p_above > self.alpha) & (self.p_drop <= self.alpha)
        elif self.status == "exact values":
            hit = self.values <= self.chance + self.margin
        else:
            return []
        return [p for p, h in zip(self.players, hit) if h]

    @property
    def cornerstone_note(self) -> str:
        """One sentence saying what was tested and why the cornerstone list is what it is."""
        status = self.status
        if status == "no chance level":
            return "no chance level (smooth utility): no cornerstones"
        if status == "cannot tell without per-item data":
            return "cannot tell without per-item data: no cornerstones"
        level = self.chance + (self.margin or 0.0)
        n_items = self.info.get("n_items")
        if status == NOT_ENOUGH_ITEMS:
            if self.tested:
                return (
                    f"{NOT_ENOUGH_ITEMS}: the full model ({self.full:.3f} on {n_items} items) is "
                    f"not significantly above chance {level:.3f} (one-sided p = {self.p_full:.3g}"
                    f" > {self.alpha:g}); no cornerstones"
                )
            return (
                f"{NOT_ENOUGH_ITEMS}: the full model ({self.full:.3f}) is not above chance + "
                f"margin {level:.3f}; no cornerstones"
            )
        if status == "exact values":
            return f"cornerstone = removal gives v <= {level:.3f} < v(N) (exact values, no test)"
        tests = self.info.get("tests", {})
        return (
            f"cornerstone = removal leaves v not significantly above {level:.3f} "
            f"({tests.get('removed')}) and lowers it significantly ({tests.get('drop')}); "
            f"alpha {self.alpha:g}, {n_items} items"
        )

    def to_dict(self) -> dict:
        return {
            "players": self.players,
            "full": self.full,
            "values": self.values.tolist(),
            "drops": self.drops.tolist(),
            "chance": self.chance,
            "margin": self.margin,
            "cornerstones": self.cornerstones,
            "cornerstone_status": self.status,
            "cornerstone_note": self.cornerstone_note,
            "alpha": self.alpha,
            "p_full": self.p_full,
            "p_above_chance": None if self.p_above is None else self.p_above.tolist(),
            "p_drop": None if self.p_drop is None else self.p_drop.tolist(),
            **self._bootstrap_dict(),
            "utility": self.utility,
            **self.info,
        }

    def _bootstrap_dict(self) -> dict:
        """The item bootstrap's summaries for :meth:`to_dict` (None where not run)."""
        if self.boot_values is None:
            return {"item_bootstrap": 0, "cornerstone_frequency": None}
        (vlo, vhi), (dlo, dhi) = self.ci(0.95, "values"), self.ci(0.95, "drops")
        freq = self.cornerstone_frequency
        return {
            "item_bootstrap": self.item_bootstrap,
            "stderr_items": _finite_list(self.stderr_items),
            "drop_stderr_items": _finite_list(self.drop_stderr_items),
            "values_ci95": [_finite_list(vlo), _finite_list(vhi)],
            "drops_ci95": [_finite_list(dlo), _finite_list(dhi)],
            "cornerstone_frequency": None if freq is None else freq.tolist(),
        }

    def rows(self) -> list[dict]:
        cornerstones = set(self.cornerstones)
        n = len(self.players)
        p_above = self.p_above if self.p_above is not None else [None] * n
        p_drop = self.p_drop if self.p_drop is not None else [None] * n
        rows = [
            {
                "player": p,
                "utility_without": float(v),
                "drop": float(d),
                "p_above_chance": None if a is None else float(a),
                "p_drop": None if b is None else float(b),
                "cornerstone": p in cornerstones,
            }
            for p, v, d, a, b in zip(self.players, self.values, self.drops, p_above, p_drop)
        ]
        if self.boot_values is not None:
            se, dse = self.stderr_items, self.drop_stderr_items
            lo, hi = self.ci(0.95, "drops")
            freq = self.cornerstone_frequency
            for i, row in enumerate(rows):
                row["utility_without_se_items"] = float(se[i])
                row["drop_se_items"] = float(dse[i])
                row["drop_ci95_low"] = float(lo[i])
                row["drop_ci95_high"] = float(hi[i])
                row["cornerstone_frequency"] = None if freq is None else float(freq[i])
        return rows


def _finite_list(x: np.ndarray) -> list:
    """float array -> list with NaN/inf as None (strict JSON)."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(x, dtype=np.float64)]
