"""Single-sublayer ablation sweep: v(N) and v(N \\ {l}) for every player l, and cornerstones.

A cornerstone is a player without which the model is back at guessing. With per-item data
(``game.per_item(mask)``, float64 [n_items], whose mean is v) the claim is a statistical one, all
one-sided at level ``alpha`` (default 0.05), with ``c = chance + margin`` (margin defaults to 0):

(c) the full model is significantly above c (``p_full <= alpha``); if not, nothing is flagged
    and the status is "not enough items to tell";
(a) the model without l is not significantly above c (``p_above[l] > alpha``, uncorrected, which
    is the stricter reading of "at chance");
(b) removing l lowers the utility significantly in the paired design: full and ablated model are
    scored on the same items, so only the items whose outcome changes carry information (exact
    McNemar test = sign test on the discordant items), Holm-corrected over all players
    (``p_drop[l] <= alpha``, Holm-adjusted).

0/1 terms (accuracy utilities) use exact binomial tests for (a) and (c); other terms (a smooth
utility given ``chance=``) use one-sample t-tests. Without per-item data (a plain callable with
``chance``) the values are taken as exact: l is a cornerstone iff v(N\\{l}) <= c < v(N). A game
that has an item count (``game.task``) but no per-item data cannot be tested, and flags nothing
unless ``margin=`` is given. See docs/design.md, "Ablation and cornerstones".

Item bootstrap (``item_bootstrap=B``, default 200, with per-item data): the items are resampled B
times (seeded, paired: one resample for the full and every ablated model), giving per player the
replicates of v(N \\ {l}) and of its drop, hence ``stderr_items``, ``drop_stderr_items`` and
percentile intervals (:meth:`AblationResult.ci`), and, with a chance level, how often each player
is a cornerstone when the tests above are redone on each resample
(``cornerstone_frequency``). The tests on the actual items are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError
from .bootstrap import (
    DEFAULT_ITEM_BOOTSTRAP,
    NO_PER_ITEM,
    check_item_bootstrap,
    index_weights,
    resample_indices,
)

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
        from .result import rank_counts

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


def ablation_masks(n_players: int) -> np.ndarray:
    """Row 0 is the full coalition; row 1 + l has player l switched off. bool [n + 1, n]."""
    masks = np.ones((n_players + 1, n_players), dtype=bool)
    masks[np.arange(1, n_players + 1), np.arange(n_players)] = False
    return masks


def ablate(
    game,
    margin: float | None = None,
    chance: float | None = None,
    alpha: float = 0.05,
    *,
    item_bootstrap: int = DEFAULT_ITEM_BOOTSTRAP,
    seed: int | np.random.Generator | None = 0,
) -> AblationResult:
    """Run the sweep on ``game`` (any callable bool [m, n] -> float [m] with ``n_players``).

    Args:
        game: the game; ``chance``, ``players``, ``utility``, ``task`` and ``per_item(mask)``
            (float64 [n_items] per-item terms of one coalition) are used when present.
        margin: utilities up to ``chance + margin`` count as chance (default 0; see module doc).
        chance: the utility's chance level (defaults to ``game.chance``).
        alpha: level of the one-sided cornerstone tests.
        item_bootstrap: number B of item resamples (0: off; see the module doc). Needs
            ``per_item``; a game without it gets no bootstrap and a note in ``info``.
        seed: seed (or numpy Generator) of the item resamples.
    """
    if margin is not None and not (np.isfinite(margin) and margin >= 0):
        raise UsageError(f"margin must be a finite number >= 0, got {margin}")
    if not 0 < alpha < 1:
        raise UsageError(f"alpha must be in (0, 1), got {alpha}")
    item_bootstrap = check_item_bootstrap(item_bootstrap)
    n = game.n_players
    masks = ablation_masks(n)
    values = np.asarray(game(masks), dtype=np.float64)
    chance = chance if chance is not None else getattr(game, "chance", None)
    players = list(getattr(game, "players", [f"p{i}" for i in range(n)]))
    n_items = len(game.task) if hasattr(game, "task") else None
    info: dict = {"n_items": n_items, "margin_rule": None if margin is None else "given"}
    tests: dict = {}
    boot: dict = {}
    per_item = callable(getattr(game, "per_item", None))
    terms = None
    if per_item and (chance is not None or item_bootstrap):
        terms = np.stack([np.asarray(game.per_item(m), dtype=np.float64) for m in masks])
        info["n_items"] = terms.shape[1]
    if chance is not None and terms is not None:
        if margin is None:
            margin, info["margin_rule"] = 0.0, "0 (tested against chance)"
        tests = cornerstone_tests(terms, chance + margin)
        info["tests"] = tests.pop("names")
    elif chance is not None and margin is None and n_items is None:
        margin, info["margin_rule"] = 0.0, "0 (exact values)"
    if item_bootstrap and terms is not None:
        level = None if chance is None else chance + margin
        boot = bootstrap_terms(terms, item_bootstrap, seed, level, alpha)
    elif item_bootstrap:
        info["item_bootstrap_note"] = NO_PER_ITEM
    return AblationResult(
        players,
        float(values[0]),
        values[1:],
        chance,
        margin,
        utility=getattr(game, "utility", ""),
        info=info,
        alpha=alpha,
        **tests,
        **boot,
    )


def bootstrap_terms(
    terms: np.ndarray,
    n_boot: int,
    seed: int | np.random.Generator | None,
    level: float | None,
    alpha: float,
) -> dict:
    """The item bootstrap of an ablation sweep's per-item terms.

    Args:
        terms: float64 [n + 1, n_items]: row 0 the full model, row 1 + l without player l.
        n_boot: replicates B (>= 2).
        seed: seed (or Generator) of the resamples.
        level: chance + margin for the per-replicate cornerstone tests (None: not tested).
        alpha: level of those tests.

    Returns:
        ``{"boot_full": [B], "boot_values": [B, n], "cornerstone_frequency": [n] or None}``.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n_items = terms.shape[1]
    idx = resample_indices(n_items, n_boot, rng)
    means = index_weights(idx, n_items) @ terms.T  # [B, n + 1]
    freq = None
    if level is not None:
        hits = np.zeros(terms.shape[0] - 1)
        for b in range(n_boot):
            t = cornerstone_tests(terms[:, idx[b]], level)
            if t["p_full"] <= alpha:
                hits += (t["p_above"] > alpha) & (t["p_drop"] <= alpha)
        freq = hits / n_boot
    return {"boot_full": means[:, 0], "boot_values": means[:, 1:], "cornerstone_frequency": freq}


def cornerstone_tests(terms: np.ndarray, level: float) -> dict:
    """The three one-sided p-values of the module doc from per-item terms.

    Args:
        terms: float64 [n + 1, n_items]: row 0 the full model, row 1 + l without player l.
        level: the chance level (plus margin) tested against.

    Returns:
        ``{"p_full": float, "p_above": [n], "p_drop": [n] Holm-adjusted, "names": {...}}``.
    """
    terms = np.asarray(terms, dtype=np.float64)
    if terms.ndim != 2 or terms.shape[0] < 2 or terms.shape[1] < 1:
        raise ValueError(f"terms must be float [n + 1, n_items], got shape {terms.shape}")
    binary = bool(np.all((terms == 0) | (terms == 1)))
    p_above = above_level(terms, level, binary)
    p_drop = holm(sign_test(terms[0], terms[1:]))
    above = "one-sided exact binomial" if binary else "one-sided one-sample t-test"
    drop = "exact McNemar" if binary else "sign test on per-item differences"
    return {
        "p_full": float(p_above[0]),
        "p_above": p_above[1:],
        "p_drop": p_drop,
        "names": {
            "full": above,
            "removed": above,
            "drop": f"{drop}, one-sided, Holm over {terms.shape[0] - 1} players",
        },
    }


def above_level(terms: np.ndarray, level: float, binary: bool) -> np.ndarray:
    """One-sided p-values of "mean of row i > level", float64 [rows].

    0/1 terms: exact binomial (k successes of n_items at rate ``level``); other terms: one-sample
    t-test (rows with no spread get p = 0 when above the level, else 1).
    """
    from scipy import stats

    n_items = terms.shape[1]
    if binary:
        k = terms.sum(axis=1)
        return np.asarray(stats.binom.sf(k - 1, n_items, min(max(level, 0.0), 1.0)), np.float64)
    means = terms.mean(axis=1)
    flat = np.ptp(terms, axis=1) == 0
    p = np.where(means > level, 0.0, 1.0)
    if n_items > 1 and not flat.all():
        t = stats.ttest_1samp(terms[~flat], level, axis=1, alternative="greater")
        p[~flat] = t.pvalue
    return p.astype(np.float64)


def sign_test(full: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Paired one-sided p-values that ``removed`` (float [n, n_items]) is below ``full``
    (float [n_items]): exact sign test on the items that differ (McNemar's for 0/1 terms).
    Returns float64 [n]; 1 where no item differs."""
    from scipy import stats

    diff = np.asarray(full)[None, :] - np.asarray(removed)
    worse, better = (diff > 0).sum(axis=1), (diff < 0).sum(axis=1)
    return np.asarray(stats.binom.sf(worse - 1, worse + better, 0.5), np.float64)


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values (step-down, family-wise error), float64 [m]: reject where <= alpha."""
    p = np.asarray(p, dtype=np.float64)
    m = p.shape[0]
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out
