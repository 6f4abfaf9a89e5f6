"""Greedy choice from final hidden states, without materialising [tokens x vocab]: the argmax of
the fp32 logits (ties to the lowest id), and how close the runner-up was."""

from __future__ import annotations

from typing import Any

import torch

VOCAB_CHUNK = 8192


def near_tie_tolerance(dtype: torch.dtype) -> float:
    """Relative top-2 logit gap under which a greedy choice counts as a near-tie: 64 units of
    the dtype's rounding (the logits pass through every layer's rounding)."""
    return 64 * torch.finfo(dtype).eps


def chunk_logits(
    hidden: torch.Tensor,  # [N, d] final-normed hidden states
    weight: torch.Tensor,  # [V, d] LM head weight
    bias: torch.Tensor | None,  # [V]
    softcap: float | None,
    start: int,
    stop: int,
) -> torch.Tensor:
    """The logits of vocabulary rows ``start:stop``, fp32 [N, stop - start]: the head's output in
    its dtype, cast to fp32, then soft-capped where the model is (cap * tanh(z / cap))."""
    b = None if bias is None else bias[start:stop]
    logits = torch.nn.functional.linear(hidden, weight[start:stop], b).float()
    return torch.tanh(logits / softcap) * softcap if softcap else logits


def greedy_scan(
    hidden: torch.Tensor,  # [N, d] final-normed hidden states
    weight: torch.Tensor,  # [V, d] LM head weight
    bias: torch.Tensor | None = None,  # [V]
    softcap: float | None = None,
    chunk: int = VOCAB_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy tokens without materialising [N, V]: (token int64 [N], top logit fp32 [N], gap to
    the second-best logit fp32 [N]). Logits are the head's output in its dtype, cast to fp32
    (then soft-capped), as ``transformers`` compares them; ties go to the lowest id."""
    n = hidden.shape[0]
    top = torch.full((n,), float("-inf"), dtype=torch.float32, device=hidden.device)
    second = top.clone()
    best = torch.zeros(n, dtype=torch.long, device=hidden.device)
    for start in range(0, weight.shape[0], chunk):
        stop = min(start + chunk, weight.shape[0])
        logits = chunk_logits(hidden, weight, bias, softcap, start, stop)  # [N, c]
        k = min(2, logits.shape[1])
        vals, ids = logits.topk(k, dim=-1)  # [N, k]
        first = logits.argmax(dim=-1)  # the lowest id among equal maxima
        c1 = vals[:, 0]
        c2 = vals[:, 1] if k == 2 else torch.full_like(c1, float("-inf"))
        better = c1 > top  # strict: an earlier chunk keeps a tie
        second = torch.where(better, torch.maximum(top, c2), torch.maximum(second, c1))
        top = torch.where(better, c1, top)
        best = torch.where(better, first + start, best)
    return best, top, top - second


def greedy(model: Any, hidden: torch.Tensor) -> tuple[list[int], list[bool]]:
    """Greedy tokens and near-tie flags of final-normed hidden states [N, d]."""
    with model.head_weights() as (weight, bias):
        token, top, gap = greedy_scan(
            hidden.to(weight.device), weight, bias, model.adapter.logit_softcap
        )
    near = gap <= near_tie_tolerance(model.dtype) * top.abs().clamp(min=1.0)
    return token.tolist(), near.tolist()
