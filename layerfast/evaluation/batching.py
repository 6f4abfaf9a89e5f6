"""Rows and batches: how tokenised requests are laid out for the forward pass.

A *row* is one sequence fed to the model, with the tokens it scores. Unpacked, a row is one
request (context + continuation, as the harness feeds it). Packed, a row is a *token trie*: the
requests of one item, and of the neighbouring items whose requests share a long prefix with it
(a few-shot prompt), each token stored once and seeing only its ancestors, with positions
counting the ancestors::

    tokens    c0 c1 c2 | a0 a1 | b0 b1 b2      (choice a: a0 a1 a2; choice b: b0 b1 b2 b3)
    parent    -  0  1  | 2  3  | 2  5  6
    positions 0  1  2  | 3  4  | 3  4  5

Today's one-item packing ("shared context") is the case of one item; choices that start with the
same tokens share them too; and items whose prompts share at least :data:`MIN_SHARED` leading
tokens (e.g. the same five examples before each question) share that prefix in one row, up to
:data:`ROW_TOKENS` tokens per row. A continuation's first token is predicted at its context's last
position; its last token is never an input. Batches are sorted by row length (longest first),
right-padded and filled up to ``batch_tokens`` padded tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..models.inputs import pad_right
from ..tasks.requests import Request

MIN_SHARED = 32  # leading tokens two items' prompts must share to go into one packed row
ROW_TOKENS = 2048  # most tokens of a packed row holding more than one item (attention is T^2)
# Short rows of unrelated items go side by side up to this many tokens (fill_rows): less padding
# for a little more attention work (T^2 over the filled row).
FILL_TOKENS = 128


@dataclass(frozen=True)
class Row:
    """One model input sequence.

    input_ids: length T. parents: length T, the index of each token's parent in the trie (-1 for
    a root); None for a plain causal sequence. scored: (position in the row, target token,
    request index) for every scored token.
    """

    input_ids: tuple[int, ...]
    parents: tuple[int, ...] | None
    scored: tuple[tuple[int, int, int], ...]

    @property
    def positions(self) -> list[int]:
        """Position ids: 0..T-1, or each token's depth in the trie (its number of ancestors)."""
        if self.parents is None:
            return list(range(len(self.input_ids)))
        depth: list[int] = []
        for p in self.parents:
            depth.append(0 if p < 0 else depth[p] + 1)
        return depth


def unpacked_row(index: int, r: Request) -> Row:
    t = len(r.input_ids)
    scored = tuple((t - len(r.targets) + k, tok, index) for k, tok in enumerate(r.targets))
    return Row(r.input_ids, None, scored)


def context_of(r: Request) -> tuple[int, ...]:
    """The context tokens of a request (its input minus the continuation's tokens)."""
    return r.input_ids[: len(r.input_ids) + 1 - len(r.targets)]


class _Trie:
    """Token sequences inserted into one trie; nodes numbered in creation order (a parent always
    before its children)."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.parents: list[int] = []
        self.children: dict[tuple[int, int], int] = {}  # (parent, token) -> node
        self.scored: list[tuple[int, int, int]] = []

    def new_nodes(self, sequences: list[tuple[int, ...]]) -> int:
        """How many nodes inserting all of ``sequences`` would add."""
        virtual: dict[tuple[int, int], int] = {}
        for ids in sequences:
            node = -1
            for tok in ids:
                child = self.children.get((node, tok), virtual.get((node, tok)))
                if child is None:
                    child = virtual[(node, tok)] = len(self.tokens) + len(virtual)
                node = child
        return len(virtual)

    def insert(self, index: int, r: Request) -> None:
        node, path = -1, []
        for tok in r.input_ids:
            child = self.children.get((node, tok))
            if child is None:
                child = len(self.tokens)
                self.children[(node, tok)] = child
                self.tokens.append(tok)
                self.parents.append(node)
            node = child
            path.append(node)
        first = len(r.input_ids) - len(r.targets)
        self.scored += [(path[first + k], tok, index) for k, tok in enumerate(r.targets)]

    def row(self) -> Row:
        chain = all(p == i - 1 for i, p in enumerate(self.parents))
        return Row(tuple(self.tokens), None if chain else tuple(self.parents), tuple(self.scored))


def packed_rows(requests: list[Request], row_tokens: int = ROW_TOKENS) -> list[Row]:
    """Trie rows for requests in item, then choice order (see the module docstring): each item's
    requests in one row; an item joins the row of the item before it (in the order of their first
    requests' tokens) when their prompts share at least :data:`MIN_SHARED` leading tokens and the
    row stays within ``row_tokens`` tokens."""
    groups: list[list[int]] = []
    for i, r in enumerate(requests):
        if groups and requests[groups[-1][0]].group == r.group:
            groups[-1].append(i)
        else:
            groups.append([i])
    groups.sort(key=lambda g: requests[g[0]].input_ids)
    rows: list[Row] = []
    trie, previous = _Trie(), None
    for group in groups:
        first = requests[group[0]].input_ids
        if previous is not None:
            shared = _common_prefix(previous, first)
            added = trie.new_nodes([requests[i].input_ids for i in group])
            if shared < MIN_SHARED or len(trie.tokens) + added > row_tokens:
                rows.append(trie.row())
                trie = _Trie()
        for i in group:
            trie.insert(i, requests[i])
        previous = first
    if trie.tokens:
        rows.append(trie.row())
    return rows


def _common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def build_rows(requests: list[Request], pack: bool, row_tokens: int = ROW_TOKENS) -> list[Row]:
    """Rows for all requests (in item, then choice order): trie rows when ``pack``, else one
    row per request."""
    if not pack:
        return [unpacked_row(i, r) for i, r in enumerate(requests)]
    return packed_rows(requests, row_tokens)


def batch_rows(requests: list[Request], pack: bool, batch_tokens: int) -> list[Row]:
    """The rows the executors batch: :func:`build_rows`, and when ``pack`` the short ones
    filled side by side up to ``min(FILL_TOKENS, batch_tokens)`` (:func:`fill_rows`)."""
    rows = build_rows(requests, pack)
    return fill_rows(rows, min(FILL_TOKENS, batch_tokens)) if pack else rows


def fill_rows(rows: list[Row], fill_tokens: int = FILL_TOKENS) -> list[Row]:
    """Short trie rows side by side: the rows shorter than ``fill_tokens`` go into
    ceil(their tokens / ``fill_tokens``) rows, longest first to the shortest so far (so the
    filled rows come out nearly equal: at most ``fill_tokens`` plus one short row each); longer
    rows stay alone. Each keeps its own roots, so its tokens still see only their ancestors and
    keep their positions: the values change only by rounding, and the padding of a batch of
    short rows of unequal lengths goes (zero-shot capitals, 20 items: 500 padded tokens for 389
    real as one row per item, 392 filled)."""
    short = sorted(
        (r for r in rows if len(r.input_ids) < fill_tokens), key=lambda r: -len(r.input_ids)
    )
    alone = [r for r in rows if len(r.input_ids) >= fill_tokens]
    n_lines = -(-sum(len(r.input_ids) for r in short) // fill_tokens)
    lines: list[list[Row]] = [[] for _ in range(n_lines)]
    sizes = [0] * n_lines
    for row in short:
        at = sizes.index(min(sizes))
        lines[at].append(row)
        sizes[at] += len(row.input_ids)
    return alone + [line[0] if len(line) == 1 else _side_by_side(line) for line in lines if line]


def _side_by_side(rows: list[Row]) -> Row:
    ids: list[int] = []
    parents: list[int] = []
    scored: list[tuple[int, int, int]] = []
    for row in rows:
        offset = len(ids)
        own = row.parents if row.parents is not None else range(-1, len(row.input_ids) - 1)
        parents += [p + offset if p >= 0 else -1 for p in own]
        scored += [(pos + offset, tok, req) for pos, tok, req in row.scored]
        ids += row.input_ids
    return Row(tuple(ids), tuple(parents), tuple(scored))


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
    scored_rows, scored_positions: int64 [U] the distinct (row, position) pairs scored (derived),
    scored_index: int64 [N] each scored token's pair among them.
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

    def __post_init__(self) -> None:
        # The distinct (row, position) pairs among the scored tokens: in a trie row the first
        # token of every choice is predicted from the same position (the context's last token).
        width = self.input_ids.shape[1]
        keys, index = torch.unique(self.rows * width + self.positions, return_inverse=True)
        self.scored_rows, self.scored_positions = keys // width, keys % width  # [U] each
        self.scored_index = index  # [N]: the distinct pair each scored token is read from


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
    packed = any(r.parents is not None for r in rows)
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
    """[B, 1, T, T]: query q sees key k iff k is q or one of its ancestors in the row's trie (a
    plain row: k <= q). Padding queries see themselves only (a fully masked row would give NaN in
    SDPA)."""
    allowed = torch.zeros((len(rows), 1, t_max, t_max), dtype=torch.bool)
    for row_i, row in enumerate(rows):
        t = len(row.input_ids)
        if row.parents is None:
            allowed[row_i, 0, :t, :t] = torch.ones((t, t), dtype=torch.bool).tril()
        else:
            seen = allowed[row_i, 0]
            for q, p in enumerate(row.parents):
                if p >= 0:
                    seen[q, : p + 1] = seen[p, : p + 1]  # ancestors come before their descendants
                seen[q, q] = True
        idx = torch.arange(t, t_max)
        allowed[row_i, 0, idx, idx] = True
    if style == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
