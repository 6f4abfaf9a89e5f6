"""What an estimator may use of a game: the written contract (numpy only).

Every game has :class:`CoalitionGame`: ``n_players``, ``players`` and ``__call__`` (keep-masks
bool [m, n] -> float64 [m]); ``chance`` (the utility of a uniform guess, or None) and ``utility``
(its name) are optional. A game built from items (``lf.Game``, or any game that implements
:class:`ItemGame`) also offers, and estimators use when present:

* ``n_items`` and ``per_item(mask)`` -> float64 [n_items], per-item terms whose mean over the
  items is v(S) (and, to fetch many coalitions in one batched call, ``item_values(masks)`` ->
  float64 [m, n_items]): cornerstone tests and the item bootstrap;
* ``cost(masks)`` -> token-sublayer evaluations the game would run for them now, and
  ``compute_run``, those it has run so far: compute budgets and ``info["compute"]``;
* ``draws_progress``: True when the game draws its own progress bar (the estimator then does
  not draw a second one).

:func:`describe` reads these once into a :class:`GameInfo`; it is the only place in
:mod:`layerfast.estimators` that asks a game what it has, so the contract lives in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["CoalitionGame", "ItemGame", "GameInfo", "describe", "player_names"]


@runtime_checkable
class CoalitionGame(Protocol):
    """v(S) for keep-masks S (True = player kept)."""

    n_players: int
    players: Sequence[str]

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        """bool [m, n_players] -> float64 [m]."""


@runtime_checkable
class ItemGame(CoalitionGame, Protocol):
    """A game that is a mean over items, and can price and count its own compute."""

    n_items: int
    chance: float | None
    utility: str
    compute_run: int
    draws_progress: bool

    def per_item(self, mask: np.ndarray) -> np.ndarray:
        """bool [n_players] -> float64 [n_items]; their mean is v(mask)."""

    def item_values(self, masks: np.ndarray) -> np.ndarray:
        """bool [m, n_players] -> float64 [m, n_items] (optional: per_item of each row)."""

    def cost(self, masks: np.ndarray) -> int:
        """Token-sublayer evaluations ``__call__(masks)`` would run now (0 for what it has)."""


@dataclass(frozen=True)
class GameInfo:
    """What a game offers, read once (None: not offered)."""

    n_players: int
    players: list[str]
    chance: float | None
    utility: str
    n_items: int | None
    item_values: Callable[[np.ndarray], np.ndarray] | None  # bool [m, n] -> float64 [m, n_items]
    cost: Callable[[np.ndarray], int] | None
    compute_run: Callable[[], int] | None
    draws_progress: bool

    @property
    def has_items(self) -> bool:
        return self.item_values is not None


def describe(game: Any) -> GameInfo:
    """Read what ``game`` offers of the contract (see the module docstring).

    Raises:
        TypeError: ``game`` is not callable or has no ``n_players``.
        ValueError: ``n_players`` is not a positive integer, or ``players`` has another length.
    """
    if not callable(game):
        raise TypeError("game must be callable: bool[m, n] -> float[m]")
    n = _n_players(game)
    item_values = getattr(game, "item_values", None)
    per_item = getattr(game, "per_item", None)
    if not callable(item_values) and callable(per_item):
        item_values = _stacked(per_item)
    cost = getattr(game, "cost", None)
    has_counter = hasattr(game, "compute_run")
    n_items = getattr(game, "n_items", None)
    return GameInfo(
        n_players=n,
        players=player_names(game, n),
        chance=getattr(game, "chance", None),
        utility=str(getattr(game, "utility", "") or ""),
        n_items=None if n_items is None else int(n_items),
        item_values=item_values if callable(item_values) else None,
        cost=cost if callable(cost) else None,
        compute_run=(lambda: int(game.compute_run)) if has_counter else None,
        draws_progress=getattr(game, "draws_progress", False) is True,
    )


def _stacked(per_item: Callable[[np.ndarray], np.ndarray]):
    """``item_values`` of a game that has only ``per_item``: one call per row."""

    def item_values(masks: np.ndarray) -> np.ndarray:
        rows = [np.asarray(per_item(m), dtype=np.float64).reshape(-1) for m in masks]
        return np.stack(rows) if rows else np.zeros((0, 0))

    return item_values


def player_names(game: Any, n: int) -> list[str]:
    """``game.players`` (kept as they are: a model's players carry their block and kind), or
    ``p0 .. p{n-1}`` when the game has no names."""
    players = getattr(game, "players", None)
    if players is None:
        return [f"p{i}" for i in range(n)]
    players = [p if isinstance(p, str) else str(p) for p in players]
    if len(players) != n:
        raise ValueError(f"game.players has {len(players)} names but n_players={n}")
    return players


def _n_players(game: Any) -> int:
    n = getattr(game, "n_players", None)
    if n is None:
        raise TypeError("the game must have an integer attribute `n_players`")
    if isinstance(n, bool) or int(n) != n or int(n) < 1:
        raise ValueError(f"game.n_players must be a positive integer, got {n!r}")
    return int(n)
