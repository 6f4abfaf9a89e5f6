"""Reference verification: one teacher-forced pass tells whether a coalition's greedy output is a
reference output, and where it leaves it.

For a prompt and a reference output ``ref`` (new tokens, n >= 1), the request is
``input_ids = prompt + ref[:-1]``, ``targets = ref``: the greedy token the coalition predicts at
each target position is compared with the reference token there. If every one agrees, the
coalition's own greedy decoding would produce exactly ``ref`` (same tokens, so the same stop:
EOS, stop string or length); otherwise its output starts with ``ref[:k]``, ``k`` the first
position that differs, and decoding resumes there.

The verifiers are the executors of :mod:`.executors` with another score: per request, not the
summed log-likelihood but ``k``, the near-ties among positions 0..k (top-2 logit gap within
the dtype's rounding, :func:`~layerfast.models.greedy.near_tie_tolerance`) and the
coalition's own token at ``k``, packed into one float64 (:func:`pack`) so that runners, Ray
workers and the cache carry them as they carry log-likelihoods. Coalitions still share prefixes
in the prefix verifier.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..models.greedy import greedy_scan, near_tie_tolerance
from ..models.kv_cache import KVRecorder
from ..tasks.prompts import Prompt
from ..tasks.requests import Request
from .batching import Batch
from .executors import make_executor
from .naive_executor import NaiveExecutor
from .prefix_executor import PrefixExecutor

FIELD = 1 << 20  # packed value: (k * FIELD + near-ties) * FIELD + the coalition's token at k


def pack(first: np.ndarray, near_ties: np.ndarray, token: np.ndarray) -> np.ndarray:
    """float64 [R] of int arrays [R]: first difference k, near-ties, the coalition's greedy token
    at k (0 where it never differs); exact in float64 while k < 2**12 (outputs of at most 4096
    tokens, checked by :func:`verification_requests`) and token ids < 2**20."""
    near = np.minimum(near_ties, FIELD - 1).astype(np.float64)
    return (first.astype(np.float64) * FIELD + near) * FIELD + token.astype(np.float64)


def unpack(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first difference, near-ties, token at the difference), int64 [R] each."""
    values = np.asarray(values, dtype=np.int64)
    return values // (FIELD * FIELD), (values // FIELD) % FIELD, values % FIELD


def verification_requests(prompts: list[Prompt], references: list[list[int]]) -> list[Request]:
    """One request per prompt: ``prompt + ref[:-1]`` scored at the reference's tokens."""
    out = []
    for i, (prompt, ref) in enumerate(zip(prompts, references, strict=True)):
        if not ref:
            raise ValueError(f"reference output {i} is empty")
        if len(ref) >= 1 << 12 or max(ref) >= FIELD:
            raise ValueError(
                f"reference output {i}: {len(ref)} tokens (max id {max(ref)}); verification "
                "takes outputs under 4096 tokens with ids under 2**20"
            )
        out.append(Request(i, i, tuple(prompt.input_ids) + tuple(ref[:-1]), tuple(ref)))
    return out


class _VerifyScore:
    """The score of a verifier: first difference and near-ties per request (packed). Each pass
    also records the attention sublayers' keys and values (``last_kv``: by layer index, [B, H, T,
    dh], set as each coalition is scored), for decoding to resume from without a prompt pass."""

    model: Any
    vocab_chunk: int
    last_kv: dict[int, tuple[torch.Tensor, torch.Tensor]]

    def _prepare(self, batch: Batch):
        inputs = super()._prepare(batch)
        self.recorder = KVRecorder()
        for layer, kwargs in zip(self.model.blocks, inputs.layer_kwargs, strict=True):
            kwargs[self.model.adapter.cache_argument(layer)] = self.recorder
        return inputs

    def score(self, state, batch: Batch) -> np.ndarray:
        # layers removed in this coalition hold another coalition's entries: the caller filters
        self.last_kv = dict(self.recorder.layers)
        hidden = self.final_hidden(state, batch)  # [N, d]
        with self.model.head_weights() as (weight, bias):
            token, top, gap = greedy_scan(
                hidden.to(weight.device), weight, bias, self.model.adapter.logit_softcap,
                self.vocab_chunk,
            )  # fmt: skip
        tolerance = near_tie_tolerance(self.model.dtype)
        near = (gap <= tolerance * top.abs().clamp(min=1.0)).cpu().numpy()
        agree = (token.cpu() == batch.targets).numpy()
        owner = batch.owner.numpy()
        n = len(batch.request_index)
        first = np.zeros(n, dtype=np.int64)
        ties = np.zeros(n, dtype=np.int64)
        own = np.zeros(n, dtype=np.int64)
        chosen = token.cpu().numpy()
        stopped = np.zeros(n, dtype=bool)
        for pos in range(len(owner)):  # a request's targets are consecutive, in order
            r = owner[pos]
            if stopped[r]:
                continue
            ties[r] += bool(near[pos])
            if agree[pos]:
                first[r] += 1
            else:
                stopped[r] = True
                own[r] = chosen[pos]
        return pack(first, ties, own)


class NaiveVerifier(_VerifyScore, NaiveExecutor):
    """Verification with the reference executor (every coalition from the embeddings)."""


class PrefixVerifier(_VerifyScore, PrefixExecutor):
    """Verification sharing the residual states of coalitions' common prefixes."""


VERIFIERS: dict[str, type[NaiveExecutor]] = {"prefix": PrefixVerifier, "naive": NaiveVerifier}


def make_verifier(
    name: str, model: Any, requests: list[Request], options: dict[str, Any]
) -> NaiveExecutor:
    """The verifier of executor ``name`` over verification ``requests`` (never packed: each
    prompt is its own row)."""
    with torch.inference_mode():
        return make_executor(name, model, requests, dict(options, pack=False), VERIFIERS)
