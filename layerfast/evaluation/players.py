"""Who a Game's players are: every sublayer (the default), a subset of them (the rest always kept),
or whole blocks (``unit="block"``: a player is both sublayers of one block).

A player is a group of the model's sublayers switched off together. A coalition of players is
evaluated as the model keep-mask in which every sublayer of an absent player is off and every
other sublayer on (:meth:`PlayerSet.expand`), so a sub-game's coalitions are coalitions of the
full game: they share its memo and its cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..players import Player, block_players

UNITS = ("sublayer", "block")


@dataclass(frozen=True)
class PlayerSet:
    """names: the players (:class:`~layerfast.players.Player`), in execution order; groups: each
    player's model sublayer indices (into ``model.players``); n_model: the model's sublayer
    count."""

    names: list[Player]
    groups: list[list[int]]
    n_model: int

    @property
    def is_every_sublayer(self) -> bool:
        return self.groups == [[i] for i in range(self.n_model)]

    def expand(self, masks: np.ndarray) -> np.ndarray:
        """Model keep-masks bool [m, n_model] for player masks bool [m, len(names)]."""
        masks = np.asarray(masks, dtype=bool)
        if self.is_every_sublayer:
            return masks
        out = np.ones((len(masks), self.n_model), dtype=bool)
        for j, group in enumerate(self.groups):
            out[:, group] &= masks[:, j : j + 1]
        return out


def choose_players(model, players: Sequence[str] | str | None = None, unit: str = "sublayer"):
    """The :class:`PlayerSet` of ``model`` (a SublayerModel) for ``players`` (names, or one
    comma-separated string; None: all) counted in ``unit`` ("sublayer": ``attn0, mlp0, ...``;
    "block": ``block0, block1, ...``). UsageError for an unknown unit or name, a name given
    twice, or an empty list."""
    if unit not in UNITS:
        raise UsageError(f"unknown unit {unit!r} (--unit); choose one of {', '.join(UNITS)}")
    if unit == "block":
        every = block_players(model.n_blocks)
        groups_of = {name: list(model.players_of(name.block)) for name in every}
    else:
        every = list(model.players)
        groups_of = {name: [i] for i, name in enumerate(every)}
    if players is None:
        chosen = every
    else:
        given = players.split(",") if isinstance(players, str) else list(players)
        given = [str(p).strip() for p in given if str(p).strip()]
        if not given:
            raise UsageError("players (--players) is empty: name at least one player")
        unknown = [p for p in given if p not in groups_of]
        if unknown:
            raise UsageError(
                f"unknown player {unknown[0]!r} (--players) for unit {unit!r}: the players are "
                f"{every[0]}..{every[-1]}"
            )
        twice = sorted({p for p in given if given.count(p) > 1})
        if twice:
            raise UsageError(f"player {twice[0]!r} is listed twice (--players)")
        wanted = set(given)
        chosen = [p for p in every if p in wanted]  # execution order
    return PlayerSet(chosen, [groups_of[p] for p in chosen], model.n_players)
