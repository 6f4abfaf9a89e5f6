"""Tokenise (context, continuation) requests exactly as lm-evaluation-harness does for causal LMs.

Harness rules (``lm_eval/api/model.py``, ``_encode_pair`` and ``loglikelihood``): trailing spaces of
the context move to the continuation; the whole string is encoded and split at the context's token
count; an empty context becomes the prefix token (BOS, else EOS); the model input is
``(context + continuation)[-(max_length + 1):][:-1]`` and the continuation's tokens are predicted at
the input's last ``len(continuation)`` positions. ``max_length`` defaults to the model's own limit,
resolved as the harness's ``resolve_max_length`` does (:func:`model_max_length`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError
from ..tasks import Task


@dataclass(frozen=True)
class Request:
    """One (item, choice) pair, tokenised.

    input_ids: the model input, length T (the whole sequence minus its last token).
    targets: the continuation token ids, length C <= T; predicted at positions T-C .. T-1.
    """

    item: int
    choice: int
    input_ids: tuple[int, ...]
    targets: tuple[int, ...]
    n_dropped: int = 0  # tokens left-truncated away to fit max_length (0: the whole request)


DEFAULT_MAX_LENGTH = 2048  # the harness's default when neither config nor tokenizer says
_SEQLEN_CONFIG_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx")
_TOKENIZER_INFINITY = int(1e30)  # transformers' "no limit" model_max_length (and larger)


def model_max_length(config: Any, tokenizer: Any = None) -> tuple[int, str]:
    """The model's own request length limit in tokens, and where it came from.

    As lm-evaluation-harness resolves it (``resolve_max_length``, used by HFLM.max_length): the
    first of ``n_positions``, ``max_position_embeddings``, ``n_ctx`` that is set on the config
    (its ``text_config`` when it has one), else the tokenizer's ``model_max_length`` unless that
    is transformers' "unlimited" value, else 2048.
    """
    cfg = getattr(config, "text_config", None) or config
    for attr in _SEQLEN_CONFIG_ATTRS:
        value = getattr(cfg, attr, None)
        if value is not None:
            return int(value), f"config.{attr}"
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and int(limit) < _TOKENIZER_INFINITY:
        return int(limit), "tokenizer.model_max_length"
    return DEFAULT_MAX_LENGTH, "default"


def prefix_token_id(tokenizer: Any) -> int:
    for attr in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    raise ValueError(
        "the tokenizer has neither a BOS nor an EOS token to stand for an empty context"
    )


def _encode(tokenizer: Any, text: str) -> list[int]:
    # The harness leaves add_special_tokens to the tokenizer's default, except when the string
    # already starts with the BOS text.
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos):
        return list(tokenizer.encode(text, add_special_tokens=False))
    return list(tokenizer.encode(text))


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context_ids, continuation_ids) as the harness splits them."""
    if context == "":
        cont = list(tokenizer.encode(continuation, add_special_tokens=False))
        prefix = prefix_token_id(tokenizer)
        return ([prefix], cont) if cont[:1] != [prefix] else (cont[:1], cont[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = _encode(tokenizer, context + continuation)
    ctx = _encode(tokenizer, context)
    return ctx, whole[len(ctx) :]


def build_requests(
    task: Task, tokenizer: Any, max_length: int = DEFAULT_MAX_LENGTH
) -> list[Request]:
    """All (item, choice) requests of a task in item order, each left-truncated to at most
    ``max_length`` input tokens (``Request.n_dropped`` says how many it lost)."""
    if max_length < 1:
        raise UsageError(f"max_length must be >= 1 token, got {max_length}")
    if tokenizer is None:
        raise ValueError("this model has no tokenizer: pass one to lf.load(..., tokenizer=...)")
    requests = []
    for i, item in enumerate(task.items):
        for c, choice in enumerate(item.choices):
            ctx, cont = encode_pair(tokenizer, item.context, task.delimiter + choice)
            if not cont:
                raise ValueError(
                    f"item {item.id!r} choice {c} ({choice!r}) encodes to no tokens "
                    "after its context"
                )
            whole = (ctx + cont)[-(max_length + 1) :]
            n_scored = min(len(cont), len(whole) - 1)
            dropped = len(ctx) + len(cont) - len(whole)
            requests.append(Request(i, c, tuple(whole[:-1]), tuple(cont[-n_scored:]), dropped))
    return requests


def requests_fingerprint(requests: list[Request]) -> bytes:
    """Bytes that change whenever any request's tokens change (for cache keys)."""
    parts = []
    for r in requests:
        parts.append(np.asarray((r.item, r.choice, len(r.input_ids), len(r.targets)), np.int64))
        parts.append(np.asarray(r.input_ids, np.int64))
        parts.append(np.asarray(r.targets, np.int64))
    return np.concatenate(parts).tobytes()


def encode_request(
    tokenizer: Any,
    context: str,
    continuation: str,
    max_length: int,
    item: int,
    choice: int,
) -> Request:
    """One harness ``(context, continuation)`` pair as a :class:`Request`, tokenised by
    :func:`encode_pair` and left-truncated to at most ``max_length`` input tokens exactly as
    :func:`build_requests` does (``Request.n_dropped`` says how many it lost). ``item`` groups
    requests for packing (consecutive requests with one ``item`` may share their context row).
    Raises ValueError when the continuation encodes to no tokens."""
    if max_length < 1:
        raise UsageError(f"max_length must be >= 1 token, got {max_length}")
    ctx, cont = encode_pair(tokenizer, context, continuation)
    if not cont:
        raise ValueError(
            f"the continuation {continuation!r} encodes to no tokens after its context"
        )
    whole = (ctx + cont)[-(max_length + 1) :]
    n_scored = min(len(cont), len(whole) - 1)
    dropped = len(ctx) + len(cont) - len(whole)
    return Request(item, choice, tuple(whole[:-1]), tuple(cont[-n_scored:]), dropped)
