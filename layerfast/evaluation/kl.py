"""The label-free objective ``kl``: how far a coalition's next-token distributions are from the
full model's, at the task's scored positions (what FinerCut and EvoPress minimise).

Per request, the executors here store the summed KL(p_full || p_S) over its target positions
(nats) instead of a log-likelihood; :class:`KLScorer` turns those into per-item terms
``-(KL summed over the item's positions) / (its positions)`` and v = their mean, so that, as for
every utility, higher is better and the full model scores 0.

Exact without keeping [positions x vocab] probabilities: with logits ``z = W h + b``,

    KL = sum_v p(v) log p(v) - sum_v p(v) z_S(v) + lse(z_S)
       = c - h_S . m + lse(z_S),   m = W^T p  [d],   c = sum_v p log p - b . p

(p the full model's distribution), so the full model leaves one d-vector ``m`` and one number
``c`` per scored position (computed once per batch, on first use, by one full forward), and a
coalition needs only its own log-sum-exp, taken over vocabulary chunks as for log-likelihoods.
Soft-capped logits (Gemma 2) are not linear in h: there the full model's log-probabilities
[positions, vocab] are kept instead, up to :data:`MAX_FULL_BYTES`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import UsageError
from ..models import SublayerModel
from ..models.greedy import chunk_logits
from ..tasks.requests import Request
from .batching import Batch
from .naive_executor import NaiveExecutor
from .prefix_executor import PrefixExecutor

KL = "kl"
KL_NOTE = "v = -(mean KL divergence from the full model's next-token distribution, nats/token)"
MAX_FULL_BYTES = 4 << 30  # full-model log-probs kept for soft-capped heads, at most


class _KLScore:
    """Executor mixin: per request, the summed KL(p_full || p_S) over its targets, float64."""

    model: SublayerModel
    batches: list[Batch]
    vocab_chunk: int

    def score(self, state, batch: Batch) -> np.ndarray:
        ref = self._reference(batch)
        hidden = self.final_hidden(state, batch)  # [N, d]
        with self.model.head_weights() as (weight, bias):
            hidden = hidden.to(weight.device)
            cap = self.model.adapter.logit_softcap
            if cap:
                kl = _kl_full(hidden, weight, bias, cap, ref, self.vocab_chunk)
            else:
                m, c = (t.to(weight.device) for t in ref)
                lse = _logsumexp(hidden, weight, bias, None, self.vocab_chunk)  # [N]
                kl = c - (hidden.double() * m).sum(-1) + lse.double()  # [N]
        sums = torch.zeros(len(batch.request_index), dtype=torch.float64, device=kl.device)
        sums.index_add_(0, batch.owner.to(kl.device), kl.double())
        return sums.cpu().numpy()

    def _reference(self, batch: Batch) -> tuple[torch.Tensor, ...]:
        """The full model's (m float64 [N, d], c float64 [N]) at ``batch``'s scored positions, or
        its log-probs float32 [N, V] for a soft-capped head; one full forward, on first use."""
        refs = self.__dict__.setdefault("_refs", {})
        key = id(batch)
        if key not in refs:
            inputs = self._prepare(batch)
            state = self.model.initial_state(inputs)
            for j in range(self.model.n_players):
                state = self.model.step(j, state, inputs, True)
            self.sublayer_evaluations += self.model.n_players
            self.token_sublayer_evaluations += self.model.n_players * batch.n_tokens
            hidden = self.final_hidden(state, batch)
            with self.model.head_weights() as (weight, bias):
                refs[key] = _full_reference(
                    hidden.to(weight.device), weight, bias, self.model.adapter.logit_softcap,
                    self.vocab_chunk,
                )  # fmt: skip
        return refs[key]


def _logsumexp(hidden, weight, bias, cap, chunk: int) -> torch.Tensor:
    """log-sum-exp of the logits, float32 [N], one vocabulary chunk at a time."""
    lse = torch.full((hidden.shape[0],), float("-inf"), device=hidden.device)
    for start in range(0, weight.shape[0], chunk):
        z = chunk_logits(hidden, weight, bias, cap, start, min(start + chunk, weight.shape[0]))
        lse = torch.logaddexp(lse, torch.logsumexp(z, dim=-1))
    return lse


def _full_reference(hidden, weight, bias, cap, chunk: int) -> tuple[torch.Tensor, ...]:
    n, vocab = hidden.shape[0], weight.shape[0]
    lse = _logsumexp(hidden, weight, bias, cap, chunk)  # [N]
    if cap:
        if n * vocab * 4 > MAX_FULL_BYTES:
            raise UsageError(
                f"utility 'kl' on a soft-capped head keeps the full model's log-probabilities: "
                f"{n} positions x {vocab} tokens = {n * vocab * 4 / 2**30:.1f} GiB in one batch, "
                f"over {MAX_FULL_BYTES / 2**30:.0f} GiB; use fewer --batch-tokens"
            )
        return (torch.cat([
            chunk_logits(hidden, weight, bias, cap, s, min(s + chunk, vocab)) - lse[:, None]
            for s in range(0, vocab, chunk)
        ], dim=1),)  # fmt: skip
    m = torch.zeros(hidden.shape, dtype=torch.float64, device=hidden.device)  # [N, d]
    c = torch.zeros(n, dtype=torch.float64, device=hidden.device)
    for start in range(0, vocab, chunk):
        stop = min(start + chunk, vocab)
        logp = (chunk_logits(hidden, weight, bias, None, start, stop) - lse[:, None]).double()
        p = logp.exp()  # [N, chunk]
        m += p @ weight[start:stop].double()
        c += (p * logp).sum(-1)
        if bias is not None:
            c -= p @ bias[start:stop].double()
    return m, c


def _kl_full(hidden, weight, bias, cap, ref, chunk: int) -> torch.Tensor:
    """KL float64 [N] against kept full-model log-probs ``ref[0]`` float32 [N, V]."""
    full = ref[0].to(hidden.device)
    lse = _logsumexp(hidden, weight, bias, cap, chunk)
    kl = torch.zeros(hidden.shape[0], dtype=torch.float64, device=hidden.device)
    for start in range(0, weight.shape[0], chunk):
        stop = min(start + chunk, weight.shape[0])
        logq = (chunk_logits(hidden, weight, bias, cap, start, stop) - lse[:, None]).double()
        logp = full[:, start:stop].double()
        kl += (logp.exp() * (logp - logq)).sum(-1)
    return kl


class NaiveKL(_KLScore, NaiveExecutor):
    """KL with the reference executor (every coalition from the embeddings)."""


class PrefixKL(_KLScore, PrefixExecutor):
    """KL sharing the residual states of coalitions' common prefixes."""


KL_EXECUTORS: dict[str, type[NaiveExecutor]] = {"prefix": PrefixKL, "naive": NaiveKL}


class KLScorer:
    """Scores the KL executors' rows: per-item terms -(summed KL / scored positions), float64
    [n_items], their mean v. Items: a text task's documents, otherwise the requests' packing
    groups (a multiple-choice item, a harness document's context)."""

    utilities = (KL,)
    accuracy_utilities: tuple[str, ...] = ()
    default_utility = KL

    def __init__(self, requests: list[Request], documents: np.ndarray | None = None):
        keys = np.array([r.group for r in requests], dtype=np.int64)
        if documents is not None:
            keys = np.asarray(documents, dtype=np.int64)
        _, self.item_of = np.unique(keys, return_inverse=True)  # [n_requests] -> item
        self.n_items = int(self.item_of.max()) + 1 if len(keys) else 0
        self.tokens = np.bincount(
            self.item_of, weights=[len(r.targets) for r in requests], minlength=self.n_items
        )

    def check(self, utility: str | None) -> str:
        if utility not in (None, KL):
            raise UsageError(
                f"this game stores KL divergences: it scores only utility 'kl', not {utility!r} "
                "(make another Game for a task utility)"
            )
        return KL

    def chance(self, utility: str) -> None:
        self.check(utility)
        return None

    def describe(self, utility: str) -> str:
        self.check(utility)
        return KL_NOTE

    def per_item(self, kl: np.ndarray, utility: str = KL) -> np.ndarray:
        self.check(utility)
        kl = np.asarray(kl, dtype=np.float64)
        if kl.shape != self.item_of.shape:
            raise ValueError(f"expected {len(self.item_of)} KL sums, got shape {kl.shape}")
        return -np.bincount(self.item_of, weights=kl, minlength=self.n_items) / self.tokens

    def __call__(self, kl: np.ndarray, utility: str = KL) -> float:
        return float(self.per_item(kl, utility).mean())


def refuse_kl(task: Any, utility: str | None) -> None:
    """UsageError for utility ``kl`` on a generative task (its outputs are generated, not scored
    at given positions)."""
    if utility == KL and getattr(task, "generative", False):
        raise UsageError(
            f"utility 'kl' needs scored positions; task {task.name!r} is generative: use "
            "plain text (e.g. --task text:lee) or a multiple-choice task for kl"
        )


def kl_scorer(task: Any, requests: list[Request]) -> KLScorer:
    """The :class:`KLScorer` of ``task``'s ``requests`` (see :func:`refuse_kl`)."""
    refuse_kl(task, KL)
    documents = getattr(task.scorer(requests), "document_of", None)
    return KLScorer(requests, documents)
