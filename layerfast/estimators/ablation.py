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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError

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
            "utility": self.utility,
            **self.info,
        }

    def rows(self) -> list[dict]:
        cornerstones = set(self.cornerstones)
        n = len(self.players)
        p_above = self.p_above if self.p_above is not None else [None] * n
        p_drop = self.p_drop if self.p_drop is not None else [None] * n
        return [
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


def ablation_masks(n_players: int) -> np.ndarray:
    """Row 0 is the full coalition; row 1 + l has player l switched off. bool [n + 1, n]."""
    masks = np.ones((n_players + 1, n_players), dtype=bool)
    masks[np.arange(1, n_players + 1), np.arange(n_players)] = False
    return masks


def ablate(
    game, margin: float | None = None, chance: float | None = None, alpha: float = 0.05
) -> AblationResult:
    """Run the sweep on ``game`` (any callable bool [m, n] -> float [m] with ``n_players``).

    Args:
        game: the game; ``chance``, ``players``, ``utility``, ``task`` and ``per_item(mask)``
            (float64 [n_items] per-item terms of one coalition) are used when present.
        margin: utilities up to ``chance + margin`` count as chance (default 0; see module doc).
        chance: the utility's chance level (defaults to ``game.chance``).
        alpha: level of the one-sided cornerstone tests.
    """
    if margin is not None and not (np.isfinite(margin) and margin >= 0):
        raise UsageError(f"margin must be a finite number >= 0, got {margin}")
    if not 0 < alpha < 1:
        raise UsageError(f"alpha must be in (0, 1), got {alpha}")
    n = game.n_players
    masks = ablation_masks(n)
    values = np.asarray(game(masks), dtype=np.float64)
    chance = chance if chance is not None else getattr(game, "chance", None)
    players = list(getattr(game, "players", [f"p{i}" for i in range(n)]))
    n_items = len(game.task) if hasattr(game, "task") else None
    info: dict = {"n_items": n_items, "margin_rule": None if margin is None else "given"}
    tests: dict = {}
    if chance is not None and callable(getattr(game, "per_item", None)):
        terms = np.stack([np.asarray(game.per_item(m), dtype=np.float64) for m in masks])
        info["n_items"] = terms.shape[1]
        if margin is None:
            margin, info["margin_rule"] = 0.0, "0 (tested against chance)"
        tests = cornerstone_tests(terms, chance + margin)
        info["tests"] = tests.pop("names")
    elif chance is not None and margin is None and n_items is None:
        margin, info["margin_rule"] = 0.0, "0 (exact values)"
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
    )


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
