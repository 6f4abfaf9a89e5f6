"""Perplexity of plain text under a coalition: a smooth utility that needs no task.

Each text is tokenised on its own (BOS prepended where the tokenizer has one and does not add
it), split into windows of at most ``max_length`` tokens, and every token after the first of a
window is scored. Log-probs come from the chunked LM head (:mod:`layerfast.evaluation.logprobs`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..models import SublayerModel
from .batching import pad_right
from .logprobs import token_logprobs


@torch.inference_mode()
def perplexity(
    model: SublayerModel,
    texts: Sequence[str],
    keep=None,
    max_length: int = 512,
    batch_size: int = 8,
) -> float:
    """exp(mean negative log-likelihood per scored token) over ``texts``; keep: bool [n_players]."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    tok = model.tokenizer
    if tok is None:
        raise ValueError("this model has no tokenizer: pass one to lf.load(..., tokenizer=...)")
    windows = []
    for text in texts:
        ids = list(tok.encode(text))
        bos = getattr(tok, "bos_token_id", None)
        if bos is not None and ids[:1] != [bos]:
            ids = [bos] + ids
        windows += [ids[i : i + max_length] for i in range(0, len(ids), max_length)]
    windows = [w for w in windows if len(w) > 1]
    if not windows:
        raise ValueError("no text has two or more tokens to score")
    softcap = getattr(model.config, "final_logit_softcapping", None)
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        ids, mask = pad_right(windows[start : start + batch_size])
        hidden = model.hidden_states(ids, keep, mask)  # [B, T, d]
        rows, cols = torch.nonzero(mask[:, 1:], as_tuple=True)  # predict token t+1 at position t
        with model.head_weights() as (weight, bias):  # offloaded weights loaded meanwhile
            lp = token_logprobs(
                hidden[rows, cols].to(weight.device),
                weight,
                ids[rows, cols + 1].to(weight.device),
                bias,
                softcap,
            )
        total -= float(lp.double().sum())
        count += len(lp)
    return math.exp(total / count)
