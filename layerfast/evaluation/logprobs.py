"""Log-probabilities of chosen tokens without materialising [tokens x vocab].

The LM head is applied only to the hidden states at continuation positions, one vocabulary
chunk at a time, accumulating a running log-sum-exp in fp32; each target's logit is read from the
chunk that holds it, so it is the same number a full-vocabulary log-softmax would use.
"""

from __future__ import annotations

import torch

DEFAULT_VOCAB_CHUNK = 8192


def token_logprobs(
    hidden: torch.Tensor,  # [N, d] final-normed hidden states at scored positions
    weight: torch.Tensor,  # [V, d] LM head weight
    targets: torch.Tensor,  # [N] int64 token ids to score
    bias: torch.Tensor | None = None,  # [V]
    softcap: float | None = None,
    chunk: int = DEFAULT_VOCAB_CHUNK,
) -> torch.Tensor:
    """log p(targets | hidden): float32 [N]."""
    n = hidden.shape[0]
    lse = torch.full((n,), float("-inf"), dtype=torch.float32, device=hidden.device)
    target_logit = torch.zeros(n, dtype=torch.float32, device=hidden.device)
    rows = torch.arange(n, device=hidden.device)
    for start in range(0, weight.shape[0], chunk):
        stop = min(start + chunk, weight.shape[0])
        logits = torch.nn.functional.linear(
            hidden, weight[start:stop], None if bias is None else bias[start:stop]
        ).float()  # [N, chunk]
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        lse = torch.logaddexp(lse, torch.logsumexp(logits, dim=-1))
        inside = (targets >= start) & (targets < stop)
        if inside.any():
            target_logit[inside] = logits[rows[inside], targets[inside] - start]
    return target_logit - lse
