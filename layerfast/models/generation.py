"""Greedy decoding under a coalition, with a KV cache keyed by the original layer index.

A removed attention sublayer is never run, so it writes no keys or values; a removed MLP only
leaves the residual stream as it is. The cache (:class:`~.kv_cache.KVStore`) therefore holds
entries for the attention sublayers that ran, under each block's own ``layer_idx``, which is what
the attention modules of ``transformers`` pass to ``cache.update``. Decoding may start from keys
and values a teacher-forced pass of the same coalition left (``past=``), and may check drafts
several tokens at a time (``drafts=``, :mod:`.drafting`).

Each step runs the same forward loop as scoring (:class:`~layerfast.models.SublayerModel`):
:meth:`~layerfast.models.SublayerModel.prepare` gives the embeddings and each block's branch
arguments (mask, rotary cos/sin, positions) for the whole sequence so far, cut to the new query
rows (:meth:`~layerfast.models.adapter.Adapter.query_rows`), so sliding windows, soft-capping,
parallel residuals and MoE blocks behave as in scoring. Batches are left-padded, with position
ids counted over real tokens as ``transformers``' ``generate`` does.

Greedy means ``argmax`` of the fp32 logits, ties to the lowest token id (``torch.argmax``).
A *near-tie* is a step whose top-2 logit gap is within the dtype's rounding
(:func:`~.greedy.near_tie_tolerance`): another order of the same arithmetic (a batch of another
size, a teacher-forced pass instead of step-by-step decoding) may pick the other token there.
They are counted per prompt, never hidden.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..errors import UsageError
from .drafting import FIRST_DRAFT, MAX_DRAFT, drafting_supported, propose
from .greedy import greedy
from .kv_cache import KVStore


@dataclass
class Generation:
    """What :func:`generate_ids` produced.

    tokens: per prompt, the new token ids (EOS, or the tokens that completed a stop string,
        included; a given ``prefix`` included at the front).
    near_ties: per prompt, greedy steps whose top-2 logit gap was within the dtype's rounding.
    decoded: tokens produced by decoding steps (one per prompt per step).
    passes: forward passes run (a prompt pass, then one per step).
    token_sublayers: kept sublayers run times the real query tokens, over every pass.
    accepted: draft tokens taken, each one a decoding step saved (:mod:`.drafting`).
    """

    tokens: list[list[int]]
    near_ties: list[int]
    decoded: int = 0
    passes: int = 0
    token_sublayers: int = 0  # kept sublayers times the real query tokens, over every pass
    accepted: int = 0  # draft tokens taken (each saved a decoding step)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids int64 [B, T], attention_mask int64 [B, T]) with rows padded on the left."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        if len(row):
            ids[b, width - len(row) :] = torch.as_tensor(list(row), dtype=torch.long)
            mask[b, width - len(row) :] = 1
    return ids, mask


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids [B, T] of a left-padded batch: real tokens counted from 0, padding at 1 (as
    ``transformers``' ``generate`` prepares them)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def eos_ids(model: Any) -> set[int]:
    """The token ids that end a generation: the generation config's ``eos_token_id`` (an id or a
    list), else the tokenizer's."""
    config = getattr(model.hf_model, "generation_config", None)
    ids = getattr(config, "eos_token_id", None)
    if ids is None:
        ids = getattr(model.tokenizer, "eos_token_id", None)
    if ids is None:
        return set()
    return {int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])}


def pad_id(model: Any) -> int:
    tok = model.tokenizer
    for value in (getattr(tok, "pad_token_id", None), getattr(tok, "eos_token_id", None)):
        if value is not None:
            return int(value)
    return 0


def new_hidden(
    model: Any,
    input_ids: torch.Tensor,  # [B, T]
    attention_mask: torch.Tensor,  # [B, T]
    start: int,
    kept: Sequence[bool],
    store: KVStore,
    last_only: bool = True,
) -> torch.Tensor:
    """Final-normed hidden states of queries start..T-1, [B, T - start, d] (``last_only``: of the
    last position, [B, d]): runs them through the kept players, reading and extending
    ``store`` (which must hold positions 0..start-1)."""
    inputs = model.prepare(input_ids, attention_mask, positions(attention_mask))
    layer_kwargs = []
    for layer, kwargs in zip(model.blocks, inputs.layer_kwargs, strict=True):
        kwargs = model.adapter.query_rows(kwargs, start)
        kwargs[model.adapter.cache_argument(layer)] = store
        layer_kwargs.append(kwargs)
    inputs = replace(inputs, embeddings=inputs.embeddings[:, start:], layer_kwargs=layer_kwargs)
    state = model.initial_state(inputs)
    for j in range(model.n_players):
        state = model.step(j, state, inputs, kept[j])
    h = model.residual(state)  # [B, T - start, d]
    return model.adapter.final_norm()(h[:, -1] if last_only else h)


def _stops(stop: Any, n: int) -> list[tuple[str, ...]]:
    if stop is None:
        return [()] * n
    if isinstance(stop, str):
        return [(stop,)] * n
    stop = list(stop)
    if all(isinstance(s, str) for s in stop):
        return [tuple(stop)] * n
    if len(stop) != n:
        raise UsageError(f"stop: give one list of strings for all prompts or one per prompt ({n})")
    return [tuple([s] if isinstance(s, str) else (s or ())) for s in stop]


@torch.inference_mode()
def generate_ids(
    model: Any,
    prompts: Sequence[Sequence[int]],
    keep: Any = None,
    max_new_tokens: int | Sequence[int] = 32,
    stop: Sequence[str] | Sequence[Sequence[str]] | str | None = None,
    batch_size: int = 8,
    prefix: Sequence[Sequence[int]] | None = None,
    on_batch: Callable[[int], None] | None = None,
    drafts: Sequence[Sequence[Sequence[int]]] | None = None,
    past: Sequence[dict | None] | None = None,
) -> Generation:
    """Greedy decoding of token-id prompts (unpadded, each >= 1 token) under keep-mask ``keep``
    (bool [n_players], None = all kept).

    Each prompt gets at most ``max_new_tokens`` new tokens (an int, or one per prompt); it stops
    at an EOS id (:func:`eos_ids`) or once its new text (decoded with special tokens) contains
    one of its ``stop`` strings (a list for all prompts, or one list per prompt). ``prefix``:
    per prompt, new tokens already chosen (they count towards the limit and the stops; decoding
    resumes after them with one pass over prompt + prefix). Prompts run ``batch_size`` at a time,
    shortest first, left-padded; a finished prompt leaves its batch. ``on_batch(k)``: k more
    prompts finished (for a progress bar). ``drafts``: per prompt, candidate outputs (e.g.
    other coalitions') that propose tokens to check several at a time
    (:mod:`~layerfast.models.drafting`: the same greedy output in fewer passes). ``past``: per
    prompt, None or the keys and values of prompt + prefix but its last token, by layer index
    (``{layer: (keys [H, S, dh], values [H, S, dh])}``, from a teacher-forced pass of the same
    coalition): decoding then resumes without a pass over them.
    """
    n = len(prompts)
    kept = model.keep_mask(keep)
    per_row = isinstance(max_new_tokens, (list, tuple)) and len(max_new_tokens) == n
    maxes = [_check_max(m) for m in (max_new_tokens if per_row else [max_new_tokens] * n)]
    stops = _stops(stop, n)
    if prefix is not None and len(prefix) != n:
        raise UsageError(f"prefix: one token list per prompt ({n}), got {len(prefix)}")
    tokens = [list(p) for p in prefix] if prefix is not None else [[] for _ in range(n)]
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise UsageError(f"prompt {i} has no tokens: give at least one (e.g. BOS)")
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    out = Generation(tokens, [0] * n)
    stopper = _Stopper(model, eos_ids(model), stops, maxes)
    todo = [i for i in range(n) if not stopper.done(i, tokens[i])]
    todo.sort(key=lambda i: len(prompts[i]) + len(tokens[i]))
    for k in range(0, len(todo), batch_size):
        rows = todo[k : k + batch_size]
        longest = (
            max(len(prompts[r]) for r in rows) + 1 + max(maxes[r] for r in rows) * (1 + MAX_DRAFT)
        )
        rows_past = None if past is None else [past[r] for r in rows]
        if rows_past is not None and any(p is None for p in rows_past):
            rows_past = None
        if drafts is not None and drafting_supported(model, longest):
            _decode_with_drafts(model, rows, prompts, kept, stopper, out, drafts, rows_past)
        else:
            _decode_batch(model, rows, prompts, kept, stopper, out, rows_past)
        if on_batch is not None:
            on_batch(len(rows))
    return out


def _check_max(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"max_new_tokens must be a whole number >= 1, got {value!r}")
    return value


class _Stopper:
    """Whether a prompt's new tokens are finished: limit, EOS or a stop string in its text."""

    def __init__(self, model: Any, eos: set[int], stops: list, maxes: list[int]):
        self.tokenizer, self.eos, self.stops, self.maxes = model.tokenizer, eos, stops, maxes

    def done(self, i: int, tokens: list[int]) -> bool:
        if not tokens:
            return False
        if len(tokens) >= self.maxes[i] or tokens[-1] in self.eos:
            return True
        if not self.stops[i]:
            return False
        text = self.tokenizer.decode(tokens, skip_special_tokens=False)
        return any(s and s in text for s in self.stops[i])


def _start(ids: torch.Tensor, past) -> tuple[KVStore, int]:
    """(store, first query column) for a left-padded batch [B, T]: empty and 0, or ``past``
    right-aligned in the first T - 1 columns and T - 1 (only the last token is new)."""
    if past is None:
        return KVStore(), 0
    return KVStore.prefilled(past, ids.shape[1] - 1), ids.shape[1] - 1


def _keep_unfinished(store: KVStore, ids, attn, active: list[int], still: list[int]):
    """(ids, attn, active) and ``store`` cut to the batch rows ``still`` (those not finished)."""
    if len(still) == len(active):
        return ids, attn, active
    rows = torch.as_tensor(still, dtype=torch.long)
    store.keep_rows(rows)
    return ids[rows.to(ids.device)], attn[rows.to(attn.device)], [active[b] for b in still]


def _decode_batch(model, rows, prompts, kept, stopper: _Stopper, out: Generation, past=None):
    ids, attn = left_pad([list(prompts[r]) + out.tokens[r] for r in rows], pad_id(model))
    ids, attn = ids.to(model.device), attn.to(model.device)
    (store, start), active = _start(ids, past), list(rows)
    n_kept = sum(bool(k) for k in kept)
    while active:
        out.token_sublayers += n_kept * int(attn[:, start:].sum())
        with torch.inference_mode():
            token, near = greedy(model, new_hidden(model, ids, attn, start, kept, store))
        out.passes += 1
        out.decoded += len(active)
        still = []
        for b, r in enumerate(active):
            out.tokens[r].append(token[b])
            out.near_ties[r] += near[b]
            if not stopper.done(r, out.tokens[r]):
                still.append(b)
        if not still:
            return
        ids, attn, active = _keep_unfinished(store, ids, attn, active, still)
        start = ids.shape[1]
        column = torch.as_tensor([out.tokens[r][-1] for r in active], device=ids.device)
        ids = torch.cat([ids, column[:, None]], dim=1)  # [B, T + 1]
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)


def _decode_with_drafts(
    model: Any, rows: list[int], prompts, kept, stopper: _Stopper, out: Generation, drafts, past
) -> None:
    """Greedy decoding of prompts ``rows`` (one batch), each pass checking the drafts that
    :func:`~.drafting.propose` makes from ``drafts[r]`` (candidate outputs of prompt r), the
    first pass too (prompt + prefix, then a draft)."""
    ids, attn = left_pad([list(prompts[r]) + out.tokens[r] for r in rows], pad_id(model))
    # One more padding column: the model then builds an explicit mask, which a pass of several
    # queries after the cached ones needs (a kernel's own causal mask would align them wrongly).
    ids = torch.cat([torch.full_like(ids[:, :1], pad_id(model)), ids], dim=1)
    attn = torch.cat([torch.zeros_like(attn[:, :1]), attn], dim=1)
    ids, attn = ids.to(model.device), attn.to(model.device)
    (store, start), active = _start(ids, past), list(rows)
    n_kept = sum(bool(k) for k in kept)
    lengths = dict.fromkeys(rows, FIRST_DRAFT)  # per prompt: doubled when taken whole
    proposed = {r: _propose(r, out, stopper, drafts, lengths[r]) for r in rows}
    block_ids, block_mask = _block(model, [proposed[r] for r in rows], attn.dtype)
    ids = torch.cat([ids, block_ids.to(ids.device)], dim=1)  # [B, T + longest draft]
    attn = torch.cat([attn, block_mask.to(attn.device)], dim=1)
    width = 1 + block_ids.shape[1]  # the last chosen (or prompt) token, then the drafts
    while active:
        out.token_sublayers += n_kept * int(attn[:, start:].sum())
        with torch.inference_mode():
            hidden = new_hidden(model, ids, attn, start, kept, store, last_only=False)
        hidden = hidden[:, -width:]  # [B, width, d]
        token, near = greedy(model, hidden.reshape(-1, hidden.shape[-1]))  # [B * width]
        out.passes += 1
        out.decoded += len(active)
        still = []
        for b, r in enumerate(active):
            draft = proposed[r]
            picks = token[b * width : (b + 1) * width]
            accepted = 0
            while accepted < len(draft) and draft[accepted] == picks[accepted]:
                accepted += 1
            out.accepted += accepted
            taken_whole = bool(draft) and accepted == len(draft)
            lengths[r] = min(MAX_DRAFT, 2 * lengths[r]) if taken_whole else FIRST_DRAFT
            finished = False
            for j, t in enumerate([*draft[:accepted], picks[accepted]]):
                out.tokens[r].append(t)
                out.near_ties[r] += near[b * width + j]
                if stopper.done(r, out.tokens[r]):
                    finished = True
                    break
            attn[b, ids.shape[1] - width + 1 + accepted :] = 0  # the rejected draft columns
            if not finished:
                still.append(b)
        if not still:
            return
        ids, attn, active = _keep_unfinished(store, ids, attn, active, still)
        proposed = {r: _propose(r, out, stopper, drafts, lengths[r]) for r in active}
        block_ids, block_mask = _block(
            model, [[out.tokens[r][-1], *proposed[r]] for r in active], attn.dtype
        )
        width = block_ids.shape[1]
        start = ids.shape[1]
        ids = torch.cat([ids, block_ids.to(ids.device)], dim=1)  # [B, T + width]
        attn = torch.cat([attn, block_mask.to(attn.device)], dim=1)


def _propose(r: int, out: Generation, stopper: _Stopper, drafts, most: int) -> list[int]:
    """At most ``most`` draft tokens for prompt r, leaving room for the token chosen after."""
    room = stopper.maxes[r] - len(out.tokens[r]) - 1
    return propose(out.tokens[r], drafts[r], min(most, room))


def _block(model: Any, rows: list[list[int]], dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids int64 [B, W], mask [B, W]) of token rows padded on the right, W the longest (>= 0)."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_id(model), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=dtype)
    for b, row in enumerate(rows):
        if row:
            ids[b, : len(row)] = torch.as_tensor(row, dtype=torch.long)
            mask[b, : len(row)] = 1
    return ids, mask
