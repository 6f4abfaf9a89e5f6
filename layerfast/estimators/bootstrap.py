"""Bootstrap over the items of a game: the error a Shapley estimate owes to the item sample.

A game with per-item data (the contract of :mod:`.contract`: ``per_item(mask)``, float64
[n_items], whose mean is v(S), or the batched ``item_values(masks)``) is an average over a sample
of items, so its Shapley values carry item-sampling error on top of the
coalition-sampling error of the estimator. The bootstrap draws ``B`` resamples of the item
indices (with replacement, seeded) and, for resample b, the reweighted game

    v_b(S) = sum_i w_bi * per_item(S)_i,   w_bi = (times item i was drawn) / n_items,

paired across coalitions (the same resample for every coalition). The same estimator is run on
each v_b with the same seed and options: the non-adaptive estimators sample the same coalitions,
an adaptive one (``truncated``) may take other paths, which is part of the bootstrap. Per-item
terms are fetched once per distinct coalition and memoised (for an :class:`~layerfast.Game` they
come from its memo/cache: no forward pass unless a replicate asks for a new coalition), and each
coalition's B replicate utilities are computed together, so a replicate costs only the
estimator's own bookkeeping.

``stderr_items`` = the standard deviation (ddof 1) of the B replicate values, per player.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from ..coalitions import as_masks, coalition_keys
from ..errors import UsageError, warn
from .budget import BudgetedGame
from .contract import describe
from .result import ShapleyResult

__all__ = [
    "DEFAULT_ITEM_BOOTSTRAP",
    "check_item_bootstrap",
    "has_per_item",
    "resample_indices",
    "index_weights",
    "ItemTerms",
    "ReweightedGames",
    "bootstrap_shapley",
    "ItemResamples",
    "item_resamples",
    "NO_PER_ITEM",
]

DEFAULT_ITEM_BOOTSTRAP = 200
NO_PER_ITEM = "the game has no per_item(mask): item-level error not estimated (stderr_items NaN)"


def check_item_bootstrap(n_boot: Any) -> int:
    """``n_boot`` as an int: 0 (off) or >= 2 replicates; UsageError naming ``item_bootstrap``."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise UsageError(f"item_bootstrap must be a whole number >= 0, got {n_boot!r}")
    if n_boot == 1:
        raise UsageError("item_bootstrap=1 gives no spread; use 0 (off) or >= 2 (e.g. 200)")
    return int(n_boot)


def has_per_item(game: Any) -> bool:
    """Whether ``game`` offers per-item terms (the contract's ``per_item`` / ``item_values``)."""
    return describe(game).has_items


def resample_indices(n_items: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` resamples of ``range(n_items)`` with replacement: int64 [n_boot, n_items]."""
    if n_items < 1:
        raise ValueError(f"need at least one item to resample, got n_items={n_items}")
    return rng.integers(0, n_items, size=(n_boot, n_items), dtype=np.int64)


def index_weights(idx: np.ndarray, n_items: int) -> np.ndarray:
    """Resampled indices int [B, k] -> weights float64 [B, n_items]: draws of each item / k
    (each row sums to 1, so ``weights @ terms`` is the resample's mean)."""
    B, k = idx.shape
    flat = (idx + n_items * np.arange(B)[:, None]).reshape(-1)
    counts = np.bincount(flat, minlength=B * n_items).reshape(B, n_items)
    return counts / float(k)


class ItemTerms:
    """A game's per-item terms memoised per distinct coalition: masks bool [m, n] -> float64
    [m, n_items]. The missing coalitions of a call are fetched in one batched ``item_values``
    call, so a coalition no run has evaluated yet is computed with the others of its batch.

    Attributes:
        n_fetched: distinct coalitions whose terms were fetched from the game.
    """

    def __init__(self, game: Any) -> None:
        about = describe(game)
        if not about.has_items:
            raise TypeError("the game has no per_item(mask) method")
        self.game = game
        self.item_values = about.item_values
        self.n_players = about.n_players
        self.memo: dict[str, np.ndarray] = {}
        self.n_items: int | None = None

    @property
    def n_fetched(self) -> int:
        return len(self.memo)

    def __call__(self, masks: Any) -> np.ndarray:
        masks = as_masks(masks, self.n_players)
        keys = coalition_keys(masks)
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        missing = [k for k in first if k not in self.memo]
        if missing:
            fetched = np.asarray(self.item_values(masks[[first[k] for k in missing]]), np.float64)
            for k, t in zip(missing, fetched):
                if self.n_items is None:
                    self.n_items = t.shape[0]
                elif t.shape[0] != self.n_items:
                    raise ValueError(
                        f"game.per_item returned {t.shape[0]} terms for coalition {k}, "
                        f"{self.n_items} for an earlier one"
                    )
                self.memo[k] = t
        if not keys:
            return np.zeros((0, self.n_items or 0))
        return np.stack([self.memo[k] for k in keys])


class ReweightedGames:
    """The B reweighted games v_b(S) = weights[b] @ per_item(S), sharing one memo: each
    coalition's B utilities are computed together, once.

    Args:
        terms: the game's memoised per-item terms.
        weights: float64 [B, n_items], rows summing to 1 (see :func:`index_weights`).
        players, chance: passed on to the replicate games.
    """

    def __init__(
        self, terms: ItemTerms, weights: np.ndarray, players: list[str], chance: Any = None
    ) -> None:
        self.terms = terms
        self.weights = np.asarray(weights, dtype=np.float64)
        self.players = list(players)
        self.chance = chance
        self.n_players = terms.n_players
        self._values: dict[str, np.ndarray] = {}

    @property
    def n_replicates(self) -> int:
        return self.weights.shape[0]

    def values(self, masks: Any) -> np.ndarray:
        """Replicate utilities float64 [m, B] of bool masks [m, n]."""
        masks = as_masks(masks, self.n_players)
        keys = coalition_keys(masks)
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        missing = [k for k in first if k not in self._values]
        if missing:
            t = self.terms(masks[[first[k] for k in missing]])  # [k, n_items]
            if t.shape[1] != self.weights.shape[1]:
                raise ValueError(
                    f"game.per_item gives {t.shape[1]} terms, the resamples have "
                    f"{self.weights.shape[1]} items"
                )
            self._values.update(zip(missing, t @ self.weights.T))
        if not keys:
            return np.zeros((0, self.n_replicates))
        return np.stack([self._values[k] for k in keys])

    def replicate(self, b: int) -> Callable[[np.ndarray], np.ndarray]:
        """The game v_b: a callable bool [m, n] -> float64 [m] with ``n_players``, ``players``
        and ``chance``."""
        return _Replicate(self, b)


class _Replicate:
    def __init__(self, games: ReweightedGames, b: int) -> None:
        self.games, self.b = games, b
        self.n_players, self.players, self.chance = games.n_players, games.players, games.chance

    def __call__(self, masks: Any) -> np.ndarray:
        return self.games.values(masks)[:, self.b]


def bootstrap_shapley(
    res: ShapleyResult,
    game: Any,
    run: Callable[[Any, np.random.Generator], ShapleyResult],
    rng0: np.random.Generator,
    n_boot: int,
) -> ShapleyResult:
    """Add the item bootstrap to ``res`` (in place; returned): ``stderr_items``,
    ``item_replicates`` [B, n] and ``info["item_bootstrap"]``.

    Args:
        res: the estimate on ``game``.
        game: the game ``res`` was estimated on; without ``per_item`` nothing is resampled
            (stderr_items stays NaN and ``info["item_bootstrap"]["note"]`` says why).
        run: ``run(replicate_game, rng)`` re-runs the estimator (same method, options, budget)
            on a replicate game with a generator ``rng``.
        rng0: a copy of the generator as it was before the estimate on ``game``: every
            replicate gets a fresh copy of it (the same seed), and the item resamples are drawn
            from a generator seeded by it (deterministic, independent of the replicates).
        n_boot: number of replicates B (>= 2).
    """
    n_boot = check_item_bootstrap(n_boot)
    record: dict = {"replicates": n_boot}
    res.info["item_bootstrap"] = record
    if n_boot == 0:
        return res
    resamples = item_resamples(game, res.n_players, res.full, rng0, n_boot, record)
    if resamples is None:
        return res
    reps = np.empty((n_boot, res.n_players))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the main run already warned (e.g. no stderr)
        for b in range(n_boot):
            reps[b] = run(BudgetedGame(resamples.games.replicate(b)), copy.deepcopy(rng0)).values
    res.set_item_replicates(reps)
    resamples.close(record)
    return res


class ItemResamples:
    """The B reweighted games of an item bootstrap (:func:`item_resamples`)."""

    def __init__(self, terms: ItemTerms, games: ReweightedGames, n_items: int) -> None:
        self.terms, self.games, self.n_items = terms, games, n_items

    def close(self, record: dict) -> None:
        """Note in ``record`` (``info["item_bootstrap"]``) the items and the coalitions whose
        per-item terms were fetched, and that one item gives no spread."""
        record.update(n_items=self.n_items, n_coalitions=self.terms.n_fetched)
        if self.n_items < 2:
            record["note"] = "one item: no item-level spread can be estimated"


def item_resamples(
    game: Any, n: int, full: float, rng0: np.random.Generator, n_boot: int, record: dict
) -> ItemResamples | None:
    """The item bootstrap's B reweighted games of ``game`` (n players, v(N) = ``full``), the
    resamples drawn from a generator seeded by a copy of ``rng0``; None, with the reason in
    ``record``, for a game without per-item terms. Shared by :func:`bootstrap_shapley` and
    :func:`~layerfast.estimators.interaction_index.interactions`."""
    if not has_per_item(game):
        record.update(replicates=0, note=NO_PER_ITEM)
        return None
    terms = ItemTerms(game)
    full_terms = terms(np.ones((1, n), dtype=bool))[0]
    n_items = full_terms.shape[0]
    _check_mean(full_terms, full)
    item_rng = np.random.default_rng(copy.deepcopy(rng0).integers(2**63))
    weights = index_weights(resample_indices(n_items, n_boot, item_rng), n_items)
    about = describe(game)
    return ItemResamples(
        terms, ReweightedGames(terms, weights, about.players, about.chance), n_items
    )


def _check_mean(full_terms: np.ndarray, full: float) -> None:
    """Warn when the per-item terms of v(N) do not average to v(N) (a game whose ``per_item``
    is not the utility's decomposition: the item bootstrap would measure something else)."""
    mean = float(np.mean(full_terms)) if full_terms.size else math.nan
    if math.isfinite(full) and not math.isclose(mean, full, rel_tol=1e-6, abs_tol=1e-9):
        warn(
            f"the per-item terms of v(N) average to {mean:.6g}, not v(N) = {full:.6g}: "
            "stderr_items resamples a different quantity"
        )
