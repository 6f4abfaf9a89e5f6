"""Requests: the unit of work every task kind hands to evaluation, and the tokenisation rules of
lm-evaluation-harness that make them.

A :class:`Request` is one scored continuation: the model input and the target tokens predicted at
its last positions, with two indices that say what it belongs to (``group``, for packing;
``unit``, for scoring). Evaluation sees only requests and their summed log-likelihoods; each task
kind's scorer turns those back into utilities (:mod:`layerfast.tasks.contract`).

Harness rules (``lm_eval/api/model.py``, ``_encode_pair`` and ``loglikelihood``): trailing spaces of
the context move to the continuation; the whole string is encoded and split at the context's token
count; an empty context becomes the prefix token (BOS, else EOS); the model input is
``(context + continuation)[-(max_length + 1):][:-1]`` (:func:`truncate`, the one truncation rule)
and the continuation's tokens are predicted at the input's last ``len(continuation)`` positions.
``max_length`` defaults to the model's own limit, resolved as the harness's
``resolve_max_length`` does (:func:`model_max_length`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError, warn


@dataclass(frozen=True)
class Request:
    """One scored continuation, tokenised.

    group: the packing group. Consecutive requests of one group may share a row (their common
        context is computed once): a multiple-choice item's choices, a harness document's
        requests with one context, one text window.
    unit: the scored unit, the key by which the task's scorer reads this request's
        log-likelihood: the choice within its item (multiple choice; for an ``lm_eval:`` task
        the harness's instance index within its document), or the document a text window
        belongs to.
    input_ids: the model input, length T (the whole sequence minus its last token).
    targets: the continuation token ids, length C <= T; predicted at positions T-C .. T-1.
    n_dropped: tokens left-truncated away to fit ``max_length`` (0: the whole request).
    """

    group: int
    unit: int
    input_ids: tuple[int, ...]
    targets: tuple[int, ...]
    n_dropped: int = 0


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


def encode(tokenizer: Any, text: str) -> list[int]:
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
    whole = encode(tokenizer, context + continuation)
    ctx = encode(tokenizer, context)
    return ctx, whole[len(ctx) :]


def requests_fingerprint(requests: list[Request]) -> bytes:
    """Bytes that change whenever any request's tokens change (for cache keys)."""
    parts = []
    for r in requests:
        parts.append(np.asarray((r.group, r.unit, len(r.input_ids), len(r.targets)), np.int64))
        parts.append(np.asarray(r.input_ids, np.int64))
        parts.append(np.asarray(r.targets, np.int64))
    return np.concatenate(parts).tobytes()


class EmptyContinuation(ValueError):
    """A continuation that encodes to no tokens after its context (nothing to score)."""


def check_max_length(max_length: int) -> int:
    """``max_length`` if it is at least one token; UsageError otherwise."""
    if max_length < 1:
        raise UsageError(f"max_length must be >= 1 token, got {max_length}")
    return max_length


def truncate(
    context: Sequence[int], continuation: Sequence[int], max_length: int
) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """The harness's left truncation: ``(input_ids, targets, n_dropped)`` of a (context,
    continuation) token pair, the input ``(context + continuation)[-(max_length + 1):][:-1]``
    and the targets the continuation's tokens still inside it (all of them unless the
    continuation alone is longer than ``max_length``)."""
    check_max_length(max_length)
    context, continuation = list(context), list(continuation)
    whole = (context + continuation)[-(max_length + 1) :]
    n_scored = min(len(continuation), len(whole) - 1)
    dropped = len(context) + len(continuation) - len(whole)
    return tuple(whole[:-1]), tuple(continuation[len(continuation) - n_scored :]), dropped


def encode_request(
    tokenizer: Any, context: str, continuation: str, max_length: int, group: int, unit: int
) -> Request:
    """One ``(context, continuation)`` string pair as a :class:`Request`, tokenised by
    :func:`encode_pair` and left-truncated by :func:`truncate` (``Request.n_dropped`` says how
    many tokens it lost). Raises :class:`EmptyContinuation` when the continuation encodes to no
    tokens, UsageError for a ``max_length`` below one token."""
    check_max_length(max_length)
    ctx, cont = encode_pair(tokenizer, context, continuation)
    if not cont:
        raise EmptyContinuation(
            f"the continuation {continuation!r} encodes to no tokens after its context"
        )
    return Request(group, unit, *truncate(ctx, cont, max_length))


def check_tokenizer(tokenizer: Any) -> Any:
    """``tokenizer``, or the error every task kind gives a model without one."""
    if tokenizer is None:
        raise ValueError("this model has no tokenizer: pass one to lf.load(..., tokenizer=...)")
    return tokenizer


def tokenise(task: Any, tokenizer: Any, config: Any, max_length: int | None):
    """``task.requests(tokenizer, L)`` at ``L = max_length`` (None: the model's own limit,
    :func:`model_max_length` of ``config``), and the truncation record ``{"max_length",
    "limit_source", "n_truncated", "n_requests"}``. Warns once when requests were truncated or
    run past the model's limit."""
    limit, source = model_max_length(config, tokenizer)
    length = limit if max_length is None else int(max_length)
    requests = task.requests(tokenizer, length)
    n_truncated = sum(r.n_dropped > 0 for r in requests)
    origin = f" (the model's limit, {source})" if max_length is None else ""
    if n_truncated:
        warn(
            f"{n_truncated} of {len(requests)} requests of task {task.name!r} are longer than "
            f"max_length={length} tokens{origin} and were left-truncated as lm-evaluation-harness "
            "does; set max_length= (--max-length) to change the limit"
        )
    longest = max((len(r.input_ids) for r in requests), default=0)
    if longest > limit:
        warn(
            f"max_length={length} lets requests of task {task.name!r} run to {longest} tokens, "
            f"past the model's limit of {limit} ({source}); positions beyond it were never "
            "trained"
        )
    record = {
        "max_length": length,
        "limit_source": source if max_length is None else "max_length=",
        "n_truncated": int(n_truncated),
        "n_requests": len(requests),
    }
    return requests, record
