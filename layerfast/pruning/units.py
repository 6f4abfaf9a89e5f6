"""What a pruning search removes: units (a sublayer, or a whole block) as groups of a game's
players, the ones a search may take, and the target turned into a count."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

from ..errors import UsageError

UNITS = ("sublayer", "block")


@dataclass(frozen=True)
class Units:
    """names: one per unit (``attn3``/``mlp3`` or ``block3``); groups: each unit's indices into
    the game's players; blocks: each unit's decoder block (a player's own index when the game's
    players carry no block); eligible: the units a search may remove (bool [n_units]); kind:
    what a unit is."""

    names: list[str]
    groups: list[list[int]]
    blocks: list[int]
    eligible: np.ndarray
    kind: str = "player"  # "sublayer", "block", or "player" (a game whose players name no block)

    def __len__(self) -> int:
        return len(self.names)

    def mask(self, removed: list[int], n_players: int) -> np.ndarray:
        """The game's keep-mask bool [n_players] with the units ``removed`` off."""
        keep = np.ones(n_players, dtype=bool)
        for u in removed:
            keep[self.groups[u]] = False
        return keep


def game_units(game: Any, unit: str | None, keep_first: int, keep_last: int) -> Units:
    """The units of ``game`` (its players' names, ``Player`` objects where it is a real Game).

    unit: None (each player is a unit), "sublayer" (each player, which must be a sublayer) or
    "block" (a block's players together). keep_first / keep_last: that many first / last decoder
    blocks are never removed."""
    players = list(getattr(game, "players", None) or [f"p{i}" for i in range(game.n_players)])
    blocks = [int(getattr(p, "block", i)) for i, p in enumerate(players)]
    kinds = [getattr(p, "kind", "player") for p in players]
    if unit is not None and unit not in UNITS:
        raise UsageError(f"unknown unit {unit!r} (--unit); choose one of {', '.join(UNITS)}")
    if unit == "sublayer" and "block" in kinds:
        raise UsageError(
            "unit 'sublayer' needs a game whose players are sublayers; this game's players are "
            "blocks (make the Game with unit='sublayer')"
        )
    if unit == "block" and "block" not in kinds:
        by_block: dict[int, list[int]] = {}
        for i, b in enumerate(blocks):
            by_block.setdefault(b, []).append(i)
        names = [f"block{b}" for b in by_block]
        groups, unit_blocks = list(by_block.values()), list(by_block)
    else:
        names, unit_blocks = [str(p) for p in players], blocks
        groups = [[i] for i in range(len(players))]
    for flag, value in (("keep_first", keep_first), ("keep_last", keep_last)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
            raise UsageError(f"{flag} must be a whole number >= 0, got {value!r}")
    model = getattr(game, "model", None)  # a real Game: count the model's blocks
    n_blocks = int(getattr(model, "n_blocks", 0)) or (max(blocks) + 1 if blocks else 0)
    if keep_first + keep_last >= n_blocks:
        raise UsageError(
            f"keep_first={keep_first} and keep_last={keep_last} protect {keep_first + keep_last} "
            f"blocks, but the model has {n_blocks}: nothing would be left to remove"
        )
    eligible = np.array([keep_first <= b < n_blocks - keep_last for b in unit_blocks], dtype=bool)
    if unit == "block" or "block" in kinds:
        kind = "block"
    else:
        kind = "sublayer" if {"attn", "mlp"} & set(kinds) else "player"
    return Units(names, groups, unit_blocks, eligible, kind)


def target_count(target: Any, units: Units) -> int:
    """Units to remove for ``target``: a fraction in (0, 1) of all units (rounded), or a count
    >= 1; UsageError when it is not one or leaves no eligible unit in place."""
    n, free = len(units), int(units.eligible.sum())
    if isinstance(target, bool) or not isinstance(target, Real):
        raise UsageError(f"target must be a fraction in (0, 1) or a count >= 1, got {target!r}")
    if isinstance(target, Integral):
        k = int(target)
        what = f"target={k} units"
    elif 0 < target < 1:
        k = int(round(float(target) * n))
        what = f"target={target:g} of {n} units ({k})"
    else:
        raise UsageError(
            f"target must be a fraction in (0, 1) or a whole count >= 1 (an int), got {target!r}"
        )
    if k < 1:
        raise UsageError(f"{what} removes nothing: raise the target")
    if k >= free:
        raise UsageError(
            f"{what} would remove every unit the search may take ({free} of {n} after "
            "keep_first/keep_last): lower the target"
        )
    return k
