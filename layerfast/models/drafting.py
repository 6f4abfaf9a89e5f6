"""Draft-and-verify greedy decoding: other outputs for the same prompt propose the next tokens,
one pass checks them all.

Neighbouring coalitions of a sweep tend to generate the same text with local edits. After the
tokens a prompt has so far, :func:`propose` looks them up in candidate outputs (other
coalitions' outputs for the same prompt): where the candidate continues the same last n tokens,
its next tokens are the draft (4 tokens, doubled up to 16 while drafts are taken whole). One
pass feeds ``[last chosen token] + draft`` and reads the greedy
token at every position; the draft is accepted as far as it equals those greedy tokens, and the
greedy token after the accepted part is chosen too. Every chosen token is the argmax the plain
step-by-step decoding would take there (the same tokens, up to near-ties: a pass of several
queries adds in another order), so the output is the greedy output; only the number of
sequential passes shrinks.

Rejected draft tokens stay in the KV cache but are masked out (attention mask 0, positions
counted over real tokens only), which is exact for full attention. Drafting is used only where
that holds: ``sdpa`` or ``eager`` attention, and no sliding window the columns could outgrow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MAX_DRAFT = 16  # draft tokens per pass, at most
FIRST_DRAFT = 4  # a prompt's first draft length; doubled each time a draft is taken whole, back
# to this after a rejection (a rejected draft token costs a query row of compute)
NGRAM = 4  # the longest run of last tokens looked up in a candidate


def propose(tokens: Sequence[int], candidates: Sequence[Sequence[int]], limit: int) -> list[int]:
    """Up to ``limit`` tokens to follow ``tokens`` (the new tokens so far): the continuation in
    the first candidate that starts with ``tokens``; else after the longest run of the last
    1..NGRAM tokens found in a candidate; else none."""
    if limit < 1:
        return []
    n = len(tokens)
    for cand in candidates:
        if len(cand) > n and list(cand[:n]) == list(tokens):
            return list(cand[n : n + limit])
    for width in range(min(NGRAM, n), 0, -1):
        tail = list(tokens[-width:])
        for cand in candidates:
            for q in range(width, len(cand)):
                if list(cand[q - width : q]) == tail:
                    return list(cand[q : q + limit])
    return []


def drafting_supported(model: Any, longest: int) -> bool:
    """True where masked-out draft columns are exact: sdpa/eager attention, and a sliding window
    (if any) longer than ``longest`` columns."""
    if model.adapter.attention_implementation not in ("sdpa", "eager"):
        return False
    window = model.adapter.sliding_window
    return window is None or longest < window
