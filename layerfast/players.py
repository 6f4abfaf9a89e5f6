"""Players: the one type every stage carries for "who can be switched off".

A :class:`Player` is its name (it *is* the ``str``: ``"attn3"``, ``"mlp0"``, ``"block7"``) and
carries the block it belongs to and its kind (``"attn"``, ``"mlp"`` or ``"block"`` for a whole
block). The model stage makes them (:attr:`layerfast.models.SublayerModel.players`, the game's
player set); estimators treat them as names; the report reads ``block`` and ``kind`` to place and
colour bars, so no stage redoes "two players per block" arithmetic on names.

Also here, because the command line checks names before any model loads: the form of a
sublayer player's name and :func:`parse_removed` (the ``remove`` setting of the harness model
and ``layerfast eval``). Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .errors import UsageError

KINDS = ("attn", "mlp", "block")
PLAYER_FORM = re.compile(r"^(attn|mlp)(\d+)$")  # SublayerModel.players: attn0, mlp0, attn1, ...
NAME_FORM = re.compile(r"^(attn|mlp|block)(\d+)$")  # a sublayer's or, with unit="block", a block's
SEPARATORS = re.compile(r"[\s,;+]+")


class Player(str):
    """A player's name, with ``block`` (int, the decoder block) and ``kind`` ("attn", "mlp" or
    "block"). Compares, hashes, prints and serialises as its name."""

    __slots__ = ("block", "kind")
    block: int
    kind: str

    def __new__(cls, name: str, block: int, kind: str) -> Player:
        if kind not in KINDS:
            raise ValueError(f"player kind must be one of {KINDS}, got {kind!r}")
        obj = super().__new__(cls, name)
        obj.block = int(block)
        obj.kind = kind
        return obj

    @property
    def name(self) -> str:
        return str.__str__(self)

    def __getnewargs__(self) -> tuple[str, int, str]:  # pickle and copy (Ray, deepcopy)
        return (str.__str__(self), self.block, self.kind)

    def __repr__(self) -> str:
        return f"Player({str.__str__(self)!r}, block={self.block}, kind={self.kind!r})"


def sublayer_players(n_blocks: int, kinds: Sequence[str] = ("attn", "mlp")) -> list[Player]:
    """``attn0, mlp0, attn1, ...``: every sublayer of ``n_blocks`` blocks in execution order."""
    return [Player(f"{kind}{b}", b, kind) for b in range(n_blocks) for kind in kinds]


def block_players(n_blocks: int) -> list[Player]:
    """``block0, block1, ...``: one player per block (both its sublayers)."""
    return [Player(f"block{b}", b, "block") for b in range(n_blocks)]


def as_players(names: Sequence[str]) -> list[Player] | None:
    """``names`` as Players: those that already are (a game's players) kept, plain names read
    by the one name form of this module (``attn<i>``, ``mlp<i>``, ``block<i>``); None when a
    name has neither (a closed-form game's ``p0``), so callers fall back to list positions."""
    out = []
    for name in names:
        if isinstance(name, Player):
            out.append(name)
            continue
        m = NAME_FORM.match(str(name))
        if m is None:
            return None
        out.append(Player(str(name), int(m.group(2)), m.group(1)))
    return out or None


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
