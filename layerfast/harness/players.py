"""The ``remove`` setting of the harness model and ``layerfast eval``: which players are off.

Light on purpose (no torch): the CLI checks the names' form before a model loads, and
:class:`~layerfast.harness.lm.LayerfastLM` checks them against the loaded model's players.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..errors import UsageError

PLAYER_FORM = re.compile(r"^(attn|mlp)(\d+)$")  # SublayerModel.players: attn0, mlp0, attn1, ...
SEPARATORS = re.compile(r"[\s,;+]+")


def parse_removed(
    remove: str | Sequence[str] | None, players: Sequence[str] | None = None, what: str = "remove"
) -> list[str]:
    """The player names in ``remove``, in the order given, without repeats.

    remove: "attn3,mlp5" (commas, semicolons, '+' or spaces between names), a sequence of
        names, or None / "" for the full model.
    players: the model's players; when given, every name must be one of them, else the names
        must look like one (``attn<i>`` or ``mlp<i>``).
    what: how the caller calls the setting, for messages (``--remove`` in the CLI).

    Raises:
        UsageError: a name that is not a player, naming it and listing the valid names.
    """
    if remove is None:
        return []
    if isinstance(remove, str):
        names = [n for n in SEPARATORS.split(remove.strip()) if n]
    elif isinstance(remove, Sequence) and all(isinstance(n, str) for n in remove):
        names = [n.strip() for n in remove]
    else:
        raise UsageError(f"{what} must be player names such as 'attn3,mlp5', got {remove!r}")
    names = list(dict.fromkeys(names))
    for name in names:
        if players is not None and name not in players:
            raise UsageError(
                f"{what}: {name!r} is not a player of this model; valid names: "
                f"{describe_players(players)}"
            )
        if players is None and not PLAYER_FORM.match(name):
            raise UsageError(
                f"{what}: {name!r} is not a player name; players are attn<i> and mlp<i> for "
                "block i = 0, 1, ... (e.g. attn3,mlp5)"
            )
    return names


def describe_players(players: Sequence[str]) -> str:
    """``attn0..attn29, mlp0..mlp29`` for the usual names; the whole list otherwise."""
    kinds: dict[str, list[int]] = {}
    for name in players:
        m = PLAYER_FORM.match(name)
        if m is None:
            return ", ".join(players)
        kinds.setdefault(m.group(1), []).append(int(m.group(2)))
    parts = []
    for kind, blocks in kinds.items():
        if blocks == list(range(len(blocks))) and len(blocks) > 2:
            parts.append(f"{kind}0..{kind}{len(blocks) - 1}")
        else:
            parts.append(", ".join(f"{kind}{b}" for b in blocks))
    return ", ".join(parts)
