"""Log-probabilities of chosen tokens without materialising [tokens x vocab].

The LM head is applied only to the hidden states at continuation positions, one vocabulary
chunk at a time, accumulating a running log-sum-exp in fp32; each target's logit is read from the
chunk that holds it, so it is the same number a full-vocabulary log-softmax would use.
:func:`token_logprobs_greedy` also tracks the running maximum, to tell whether each target is the
greedy token (lm-evaluation-harness's ``is_greedy``).
"""

from __future__ import annotations

import torch

from ..models.greedy import chunk_logits

DEFAULT_VOCAB_CHUNK = 8192


def token_logprobs(
    hidden: torch.Tensor,  # [U, d] final-normed hidden states at scored positions
    weight: torch.Tensor,  # [V, d] LM head weight
    targets: torch.Tensor,  # [N] int64 token ids to score
    bias: torch.Tensor | None = None,  # [V]
    softcap: float | None = None,
    chunk: int = DEFAULT_VOCAB_CHUNK,
    index: torch.Tensor | None = None,  # [N] int64 the row of hidden each target is read at
) -> torch.Tensor:
    """log p(targets | hidden): float32 [N]. With ``index``, several targets may share a
    hidden state (U < N): its logits and log-sum-exp are computed once."""
    return _scan(hidden, weight, targets, bias, softcap, chunk, greedy=False, index=index)[0]


def token_logprobs_greedy(
    hidden: torch.Tensor,  # [N, d] final-normed hidden states at scored positions
    weight: torch.Tensor,  # [V, d] LM head weight
    targets: torch.Tensor,  # [N] int64 token ids to score
    bias: torch.Tensor | None = None,  # [V]
    softcap: float | None = None,
    chunk: int = DEFAULT_VOCAB_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(targets | hidden) float32 [N], is_greedy bool [N]).

    The log-probs are bit-identical to :func:`token_logprobs`. ``is_greedy[i]``: the target is
    ``argmax`` of the (soft-capped) fp32 logits at position i, ties going to the lowest token id
    as ``torch.argmax`` breaks them, so a target tied with a lower id is not greedy.
    """
    lp, greedy = _scan(hidden, weight, targets, bias, softcap, chunk, greedy=True)
    assert greedy is not None
    return lp, greedy


def _scan(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None,
    softcap: float | None,
    chunk: int,
    greedy: bool,
    index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One pass over the vocabulary chunks: (log-probs float32 [N], is_greedy bool [N] or None);
    target i is read at hidden row ``index[i]`` (default i)."""
    n = targets.shape[0]
    rows = torch.arange(n, device=hidden.device) if index is None else index  # [N]
    if greedy and index is not None:
        hidden, rows = hidden[rows], torch.arange(n, device=hidden.device)
    lse = torch.full((hidden.shape[0],), float("-inf"), dtype=torch.float32, device=hidden.device)
    target_logit = torch.zeros(n, dtype=torch.float32, device=hidden.device)
    best = torch.full((n,), float("-inf"), dtype=torch.float32, device=hidden.device)
    best_id = torch.zeros(n, dtype=torch.long, device=hidden.device)
    for start in range(0, weight.shape[0], chunk):
        stop = min(start + chunk, weight.shape[0])
        logits = chunk_logits(hidden, weight, bias, softcap, start, stop)  # [N, chunk]
        lse = torch.logaddexp(lse, torch.logsumexp(logits, dim=-1))
        inside = (targets >= start) & (targets < stop)
        if inside.any():
            target_logit[inside] = logits[rows[inside], targets[inside] - start]
        if greedy:
            top, top_id = logits.max(dim=-1)  # the first maximum within the chunk
            better = top > best  # strict: an earlier chunk keeps a tie
            best = torch.where(better, top, best)
            best_id = torch.where(better, top_id + start, best_id)
    return target_logit - lse[rows], (best_id == targets) if greedy else None
