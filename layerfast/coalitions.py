"""Coalition masks and their keys: the one rule set every layer of the package uses.

A coalition of ``n`` players is a keep-mask, bool [n] (True = player kept); a batch of them is
bool [m, n]. :func:`as_masks` / :func:`as_mask` validate what a user passes, and
:func:`coalition_key` / :func:`coalition_keys` turn a mask into the string that memos and the
on-disk utility cache (:mod:`layerfast.evaluation.cache`) are keyed by: one '0'/'1' character per
player, in player order (``[True, False, True]`` -> ``"101"``).

The rules, shared by ``Game``, ``SublayerModel.keep_mask``, the estimators' budgeted game and the
synthetic games:

* bool arrays are taken as they are; integer or float arrays must hold only 0 and 1 (NaN, 0.5,
  2, strings and other types raise);
* a 1-D array is one mask (``as_masks`` makes it [1, n]; ``as_mask`` requires it);
* the width must be ``n_players``.

Every violation raises :class:`layerfast.errors.UsageError` naming the expected width (and the
players, when given) and the offending shape or values. Only numpy is used here, so that
``layerfast.estimators`` can import this module without the rest of the package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import UsageError

__all__ = ["as_masks", "as_mask", "coalition_key", "coalition_keys", "masks_from_keys"]

_ZERO, _ONE = ord("0"), ord("1")


def _players_note(players: Sequence[str] | None) -> str:
    if not players:
        return ""
    return f"; one column per player {players[0]}..{players[-1]}"


def _asarray(masks: Any, expected: str) -> np.ndarray:
    try:
        return np.asarray(masks)
    except ValueError as e:  # ragged nested lists
        raise UsageError(f"{expected}, got a ragged sequence ({e})") from None


def _to_bool(arr: np.ndarray, expected: str) -> np.ndarray:
    """``arr`` as bool if it is bool or holds only 0/1 numbers, else a UsageError."""
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind in "iuf":
        bad = ~((arr == 0) | (arr == 1))  # NaN compares unequal to both
        if not bad.any():
            return arr.astype(bool)
        culprits = np.unique(arr[bad])[:3].tolist()
    else:
        culprits = arr.reshape(-1)[:3].tolist()
    raise UsageError(
        f"{expected} (or 0/1; True = kept), got dtype {arr.dtype} with values such as {culprits}"
    )


def as_masks(
    masks: Any, n_players: int, *, players: Sequence[str] | None = None, name: str = "masks"
) -> np.ndarray:
    """Validate a batch of keep-masks: returns bool [m, n_players] (True = kept).

    Args:
        masks: bool or 0/1 array-like [m, n_players], or [n_players] for one mask.
        n_players: the expected width.
        players: player names, only used to make error messages name the columns.
        name: what the caller calls the argument, for error messages.

    Raises:
        UsageError: wrong number of dimensions or width, or values other than 0/1.
    """
    expected = f"{name} must be bool [m, {n_players}]"
    arr = _asarray(masks, expected)
    shape = arr.shape
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != n_players:
        raise UsageError(
            f"{expected} ([{n_players}] for one mask{_players_note(players)}), got shape {shape}"
        )
    return _to_bool(arr, expected)


def as_mask(
    mask: Any, n_players: int, *, players: Sequence[str] | None = None, name: str = "mask"
) -> np.ndarray:
    """Validate exactly one keep-mask: returns bool [n_players] (True = kept).

    The same rules as :func:`as_masks`, except that the input must be 1-D.
    """
    expected = f"{name} must be a 1-D bool mask of length {n_players}"
    arr = _asarray(mask, expected)
    if arr.ndim != 1 or arr.shape[0] != n_players:
        note = f" (players {players[0]}..{players[-1]})" if players else ""
        raise UsageError(f"{expected}{note}, got shape {tuple(arr.shape)}")
    return _to_bool(arr, expected)


def coalition_keys(masks: np.ndarray) -> list[str]:
    """Keys of validated masks bool [m, n]: one '0'/'1' string of length n per row."""
    codes = np.where(np.asarray(masks, dtype=bool), _ONE, _ZERO).astype(np.uint8)
    if codes.ndim == 1:
        codes = codes.reshape(1, -1)
    return [row.tobytes().decode("ascii") for row in codes]


def coalition_key(mask: np.ndarray) -> str:
    """Key of one validated mask bool [n]: e.g. ``[True, False, True]`` -> ``"101"``."""
    return coalition_keys(np.asarray(mask, dtype=bool).reshape(1, -1))[0]


def masks_from_keys(keys: Sequence[str], n_players: int) -> np.ndarray:
    """Inverse of :func:`coalition_keys`: bool [len(keys), n_players].

    Raises:
        UsageError: a key of another length or with characters other than '0'/'1'.
    """
    codes = np.frombuffer("".join(keys).encode("ascii", errors="replace"), dtype=np.uint8)
    if any(len(k) != n_players for k in keys) or not np.isin(codes, (_ZERO, _ONE)).all():
        bad = [k for k in keys if len(k) != n_players or set(k) - {"0", "1"}][:3]
        raise UsageError(f"coalition keys must be '0'/'1' strings of length {n_players}, got {bad}")
    return (codes == _ONE).reshape(len(keys), n_players)
