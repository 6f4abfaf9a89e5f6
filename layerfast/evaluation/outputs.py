"""Generated outputs of a generative game: how they are stored, and which of them a coalition
still decoding can draft from.

An output is the list of new token ids of one (coalition, prompt); a coalition's outputs are one
list per prompt.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def flatten(outputs: Sequence[Sequence[int]]) -> np.ndarray:
    """float64 [sum(len + 1)]: each prompt's token count, then its ids (exact below 2**53)."""
    parts: list[int] = []
    for tokens in outputs:
        parts.append(len(tokens))
        parts.extend(int(t) for t in tokens)
    return np.asarray(parts, dtype=np.float64)


def unflatten(row: np.ndarray, n: int) -> list[list[int]] | None:
    """The token lists of :func:`flatten`, or None when ``row`` does not hold ``n`` of them."""
    values, out, at = row.astype(np.int64).tolist(), [], 0
    for _ in range(n):
        if at >= len(values):
            return None
        k = values[at]
        out.append(values[at + 1 : at + 1 + k])
        at += 1 + k
    return out if at == len(values) else None


def drafts_for(
    finished: Iterable[Sequence[Sequence[int]]],
    i: int,
    reference: Sequence[int],
    known: Sequence[int],
    most: int = 8,
) -> list[list[int]]:
    """Outputs for prompt ``i`` to draft from, among the ``finished`` coalitions' outputs: those
    that start with ``known`` (most common first), then the reference, then the other most
    common ones; at most ``most``."""
    counts: dict[tuple[int, ...], int] = {}
    for outputs in finished:
        counts[tuple(outputs[i])] = counts.get(tuple(outputs[i]), 0) + 1
    n, known, reference = len(known), list(known), tuple(reference)
    ranked = sorted(counts, key=lambda c: (list(c[:n]) != known, c != reference, -counts[c]))
    return [list(c) for c in ranked[:most]]


def candidate(
    finished: Iterable[Sequence[Sequence[int]]], i: int, known: Sequence[int]
) -> list[int] | None:
    """The most common output for prompt ``i`` among the ``finished`` coalitions' outputs that
    starts with ``known`` and goes on past it, or None."""
    n, known = len(known), list(known)
    counts: dict[tuple[int, ...], int] = {}
    for outputs in finished:
        tokens = outputs[i]
        if len(tokens) > n and list(tokens[:n]) == known:
            counts[tuple(tokens)] = counts.get(tuple(tokens), 0) + 1
    return list(max(counts, key=counts.__getitem__)) if counts else None
