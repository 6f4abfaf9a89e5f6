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
that has an item count (``game.n_items``) but no per-item data cannot be tested, and flags nothing
unless ``margin=`` is given. See docs/design.md, "Ablation and cornerstones".

Item bootstrap (``item_bootstrap=B``, default 200, with per-item data): the items are resampled B
times (seeded, paired: one resample for the full and every ablated model), giving per player the
replicates of v(N \\ {l}) and of its drop, hence ``stderr_items``, ``drop_stderr_items`` and
percentile intervals (:meth:`AblationResult.ci`), and, with a chance level, how often each player
is a cornerstone when the tests above are redone on each resample
(``cornerstone_frequency``). The tests on the actual items are unchanged.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from .ablation_result import NOT_ENOUGH_ITEMS, AblationResult
from .bootstrap import (
    DEFAULT_ITEM_BOOTSTRAP,
    NO_PER_ITEM,
    check_item_bootstrap,
    index_weights,
    resample_indices,
)
from .contract import describe

__all__ = [
    "NOT_ENOUGH_ITEMS",
    "AblationResult",
    "ablation_masks",
    "ablate",
    "bootstrap_terms",
    "cornerstone_tests",
    "above_level",
    "sign_test",
    "holm",
]


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
        game: the game; of the estimators' contract (:mod:`.contract`) ``chance``, ``players``,
            ``utility``, ``n_items`` and the per-item terms are used when present.
        margin: utilities up to ``chance + margin`` count as chance (default 0; see module doc).
        chance: the utility's chance level (defaults to ``game.chance``).
        alpha: level of the one-sided cornerstone tests.
        item_bootstrap: number B of item resamples (0: off; see the module doc). Needs
            per-item terms; a game without them gets no bootstrap and a note in ``info``.
        seed: seed (or numpy Generator) of the item resamples.
    """
    if margin is not None and not (np.isfinite(margin) and margin >= 0):
        raise UsageError(f"margin must be a finite number >= 0, got {margin}")
    if not 0 < alpha < 1:
        raise UsageError(f"alpha must be in (0, 1), got {alpha}")
    item_bootstrap = check_item_bootstrap(item_bootstrap)
    about = describe(game)
    masks = ablation_masks(about.n_players)
    values = np.asarray(game(masks), dtype=np.float64)
    chance = chance if chance is not None else about.chance
    n_items = about.n_items
    info: dict = {"n_items": n_items, "margin_rule": None if margin is None else "given"}
    tests: dict = {}
    boot: dict = {}
    terms = None
    if about.has_items and (chance is not None or item_bootstrap):
        terms = np.asarray(about.item_values(masks), dtype=np.float64)  # [n + 1, n_items]
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
        about.players,
        float(values[0]),
        values[1:],
        chance,
        margin,
        utility=about.utility,
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
