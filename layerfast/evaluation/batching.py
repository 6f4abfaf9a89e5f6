"""Rows and batches: how tokenised requests are laid out for the forward pass.

A *row* is one sequence fed to the model, with the tokens it scores. Unpacked, a row is one
request (context + continuation, as the harness feeds it). Packed ("shared context"), a row is one
multiple-choice item: its context once, then every choice's continuation, each continuation
seeing only the context and itself, with positions restarting after the context::

    tokens    c0 c1 c2 | a0 a1 | b0 b1 b2      (choice a: a0 a1 a2; choice b: b0 b1 b2 b3)
    positions 0  1  2  | 3  4  | 3  4  5
    segment   0  0  0  | 1  1  | 2  2  2

A continuation's first token is predicted at the context's last position (shared by all
choices); its last token is never an input. Batches are sorted by row length (longest first),
right-padded and filled up to ``batch_tokens`` padded tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .requests import Request


def pad_right(sequences: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (input_ids [B, T], attention_mask [B, T]), right-padded with ``pad_id``."""
    t_max = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), t_max), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), t_max), dtype=torch.long)
    for b, seq in enumerate(sequences):
        ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[b, : len(seq)] = 1
    return ids, mask


@dataclass(frozen=True)
class Row:
    """One model input sequence.

    input_ids: length T. segments: length T (0 = context, j+1 = choice j; None when unpacked).
    scored: (position, target token, request index) for every scored token.
    """

    input_ids: tuple[int, ...]
    segments: tuple[int, ...] | None
    scored: tuple[tuple[int, int, int], ...]

    @property
    def positions(self) -> list[int]:
        """Position ids: 0..T-1, restarting after the context for each packed continuation."""
        if self.segments is None:
            return list(range(len(self.input_ids)))
        n_ctx = self.segments.count(0)
        out, seen = [], {}
        for t, s in enumerate(self.segments):
            if s == 0:
                out.append(t)
            else:
                out.append(n_ctx + seen.get(s, 0))
                seen[s] = seen.get(s, 0) + 1
        return out


def unpacked_row(index: int, r: Request) -> Row:
    t = len(r.input_ids)
    scored = tuple((t - len(r.targets) + k, tok, index) for k, tok in enumerate(r.targets))
    return Row(r.input_ids, None, scored)


def context_of(r: Request) -> tuple[int, ...]:
    """The context tokens of a request (its input minus the continuation's tokens)."""
    return r.input_ids[: len(r.input_ids) + 1 - len(r.targets)]


def packed_row(indices: list[int], requests: list[Request]) -> Row | None:
    """One row for all choices of an item, or None when they do not share one context (the
    harness left-truncated them differently)."""
    contexts = {context_of(requests[i]) for i in indices}
    if len(contexts) != 1:
        return None
    (ctx,) = contexts
    if not ctx:
        return None
    tokens, segments, scored = list(ctx), [0] * len(ctx), []
    for j, i in enumerate(indices):
        targets = requests[i].targets
        scored.append((len(ctx) - 1, targets[0], i))
        for k in range(1, len(targets)):
            scored.append((len(tokens), targets[k], i))
            tokens.append(targets[k - 1])
            segments.append(j + 1)
    return Row(tuple(tokens), tuple(segments), tuple(scored))


def build_rows(requests: list[Request], pack: bool) -> list[Row]:
    """Rows for all requests (in item, then choice order); packed per item where possible."""
    if not pack:
        return [unpacked_row(i, r) for i, r in enumerate(requests)]
    rows, start = [], 0
    while start < len(requests):
        stop = start
        while stop < len(requests) and requests[stop].item == requests[start].item:
            stop += 1
        indices = list(range(start, stop))
        row = packed_row(indices, requests)
        rows += [row] if row is not None else [unpacked_row(i, requests[i]) for i in indices]
        start = stop
    return rows


@dataclass
class Batch:
    """A padded batch of rows.

    request_index: int64 [R] the requests scored in this batch.
    input_ids: int64 [B, T] right-padded.
    attention_mask: int64 [B, T] (1 = real token) when no row is packed, else the model-ready
        4D mask [B, 1, T, T] (bool for SDPA, additive float for eager attention).
    position_ids: int64 [B, T], or None when no row is packed (HF's default 0..T-1).
    rows, positions, targets: int64 [N] one entry per scored token.
    owner: int64 [N] index into request_index of each scored token's request.
    n_tokens: real (non-padding) tokens in the batch.
    """

    request_index: np.ndarray
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor | None
    rows: torch.Tensor
    positions: torch.Tensor
    targets: torch.Tensor
    owner: torch.Tensor
    n_tokens: int


def make_batches(
    rows: list[Row],
    batch_tokens: int,
    pad_id: int,
    mask_style: str = "sdpa",
    dtype: torch.dtype = torch.float32,
) -> list[Batch]:
    """Sort rows by length (longest first) and fill batches so that B * T_max <= batch_tokens."""
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i].input_ids), i))
    batches, current = [], []
    for i in order:
        t_max = len(rows[current[0]].input_ids) if current else len(rows[i].input_ids)
        if current and (len(current) + 1) * t_max > batch_tokens:
            batches.append(_pad([rows[k] for k in current], pad_id, mask_style, dtype))
            current = []
        current.append(i)
    if current:
        batches.append(_pad([rows[k] for k in current], pad_id, mask_style, dtype))
    return batches


def _pad(rows: list[Row], pad_id: int, mask_style: str, dtype: torch.dtype) -> Batch:
    ids, mask2d = pad_right([list(r.input_ids) for r in rows], pad_id)  # [B, T] each
    b, t_max = ids.shape
    request_index, rows_, positions, targets, owner = [], [], [], [], []
    for row_i, row in enumerate(rows):
        for pos, tok, req in row.scored:
            if req not in request_index:
                request_index.append(req)
            rows_.append(row_i)
            positions.append(pos)
            targets.append(tok)
            owner.append(request_index.index(req))
    packed = any(r.segments is not None for r in rows)
    position_ids = None
    attention_mask = mask2d
    if packed:
        position_ids = torch.zeros((b, t_max), dtype=torch.long)
        for row_i, row in enumerate(rows):
            position_ids[row_i, : len(row.input_ids)] = torch.tensor(row.positions)
        attention_mask = _packed_mask(rows, t_max, mask_style, dtype)
    as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return Batch(
        np.asarray(request_index),
        ids,
        attention_mask,
        position_ids,
        as_long(rows_),
        as_long(positions),
        as_long(targets),
        as_long(owner),
        int(mask2d.sum()),
    )


def _packed_mask(rows: list[Row], t_max: int, style: str, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, T, T]: query q sees key k iff k <= q and k is context or in q's own segment.
    Padding queries see themselves only (a fully masked row would give NaN in SDPA)."""
    allowed = torch.zeros((len(rows), 1, t_max, t_max), dtype=torch.bool)
    causal = torch.ones((t_max, t_max), dtype=torch.bool).tril()
    for row_i, row in enumerate(rows):
        t = len(row.input_ids)
        seg = torch.tensor(row.segments if row.segments is not None else [0] * t)
        same = (seg[None, :] == 0) | (seg[None, :] == seg[:, None])  # [T, T]
        allowed[row_i, 0, :t, :t] = same & causal[:t, :t]
        idx = torch.arange(t, t_max)
        allowed[row_i, 0, idx, idx] = True
    if style == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
