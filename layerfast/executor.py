"""Executors: evaluate coalitions (keep-masks) on a fixed list of tokenised requests.

:class:`NaiveExecutor` is the reference: for every coalition and every batch it runs the whole
forward loop of :class:`~layerfast.models.SublayerModel` with the switched-off sublayers skipped
(never computed), then scores only the continuation positions. Batches are fixed once (requests
sorted by length, longest first, packed to a token budget, right-padded), so every coalition sees
the same batch composition: the fast executor is tested bit-for-bit against this one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .logprobs import DEFAULT_VOCAB_CHUNK, token_logprobs
from .models import SublayerModel
from .requests import Request


@dataclass
class Batch:
    """A padded batch of requests.

    request_index: int64 [B] positions of these requests in the request list.
    input_ids, attention_mask: int64 [B, T] (right-padded).
    rows, positions, targets: int64 [N] one entry per scored token (N = sum of continuation lengths).
    owner: int64 [N] which row of the batch each scored token belongs to.
    """

    request_index: np.ndarray
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    rows: torch.Tensor
    positions: torch.Tensor
    targets: torch.Tensor


def make_batches(requests: list[Request], batch_tokens: int, pad_id: int) -> list[Batch]:
    """Sort by length (longest first) and pack so that B * T_max <= batch_tokens (B >= 1)."""
    order = sorted(range(len(requests)), key=lambda i: (-len(requests[i].input_ids), i))
    batches, current = [], []
    for i in order:
        t_max = len(requests[current[0]].input_ids) if current else len(requests[i].input_ids)
        if current and (len(current) + 1) * t_max > batch_tokens:
            batches.append(_pad(requests, current, pad_id))
            current = []
        current.append(i)
    if current:
        batches.append(_pad(requests, current, pad_id))
    return batches


def _pad(requests: list[Request], index: list[int], pad_id: int) -> Batch:
    t_max = max(len(requests[i].input_ids) for i in index)
    ids = torch.full((len(index), t_max), pad_id, dtype=torch.long)
    mask = torch.zeros((len(index), t_max), dtype=torch.long)
    rows, positions, targets = [], [], []
    for b, i in enumerate(index):
        r = requests[i]
        t = len(r.input_ids)
        ids[b, :t] = torch.tensor(r.input_ids)
        mask[b, :t] = 1
        rows += [b] * len(r.targets)
        positions += range(t - len(r.targets), t)
        targets += r.targets
    as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return Batch(np.asarray(index), ids, mask, as_long(rows), as_long(positions), as_long(targets))


class NaiveExecutor:
    """Runs every coalition from the embeddings to the LM head, batch by batch."""

    name = "naive"

    def __init__(self, model: SublayerModel, requests: list[Request], batch_tokens: int = 2048,
                 vocab_chunk: int = DEFAULT_VOCAB_CHUNK):
        self.model = model
        self.requests = requests
        tok = model.tokenizer
        pad_id = getattr(tok, "pad_token_id", None)
        if pad_id is None:
            pad_id = getattr(tok, "eos_token_id", None) or 0
        self.batches = make_batches(requests, batch_tokens, pad_id)
        self.vocab_chunk = vocab_chunk
        self.sublayer_evaluations = 0  # sublayer runs x batches, a machine-independent cost count

    @torch.inference_mode()
    def loglik(self, keep: np.ndarray) -> np.ndarray:
        """Summed continuation log-prob per request, float64 [n_requests], for one keep-mask."""
        kept = self.model.keep_mask(keep)
        out = np.zeros(len(self.requests), dtype=np.float64)
        for batch in self.batches:
            inputs = self.model.prepare(batch.input_ids, batch.attention_mask)
            state = self.model.initial_state(inputs)
            for j in range(self.model.n_players):
                state = self.model.step(j, state, inputs, kept[j])
            self.sublayer_evaluations += sum(kept)
            out[batch.request_index] = self.score(state, batch)
        return out

    def loglik_many(self, masks: np.ndarray, tick: Callable[[int], None] | None = None) -> np.ndarray:
        """float64 [m, n_requests] for bool masks [m, n_players], one coalition at a time;
        ``tick(k)`` reports progress in coalition-batches."""
        out = np.zeros((len(masks), len(self.requests)), dtype=np.float64)
        for i, mask in enumerate(masks):
            out[i] = self.loglik(mask)
            if tick is not None:
                tick(len(self.batches))
        return out

    def score(self, state, batch: Batch) -> np.ndarray:
        """Summed log-prob per row of the batch from the residual state after the last sublayer."""
        device = self.model.device
        h = self.model.residual(state)  # [B, T, d]
        picked = h[batch.rows.to(device), batch.positions.to(device)]  # [N, d]
        hidden = self.model.adapter.final_norm()(picked)
        head = self.model.adapter.lm_head()
        lp = token_logprobs(hidden, head.weight, batch.targets.to(device), head.bias,
                            getattr(self.model.config, "final_logit_softcapping", None),
                            self.vocab_chunk)
        sums = torch.zeros(len(batch.request_index), dtype=torch.float64, device=device)
        sums.index_add_(0, batch.rows.to(device), lp.double())
        return sums.cpu().numpy()
