"""Prompts: the unit of work a *generative* task hands to evaluation, and the contract of such
tasks.

A generative task (``task.generative is True``) is built in one order, like the likelihood
kinds of :mod:`.contract`::

    prompts = task.prompts(tokenizer, max_length)   # list[Prompt], tokenised, left-truncated
    scorer = task.scorer(prompts)                    # reads one generated text per prompt

Evaluation greedily decodes each prompt under a coalition (at most ``max_new_tokens`` new
tokens, stopping at EOS or once the new text holds one of ``until``), decodes the new tokens to
text, cuts the text before its first stop string (:func:`cut_at_stops`, the harness's rule) and
hands the scorer one text per prompt, in prompt order.

Truncation, as lm-evaluation-harness's HFLM ``generate_until``: the context is encoded without
being split from a continuation and left-truncated to ``max_length - max_new_tokens`` tokens, so
that prompt and answer fit the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import UsageError, warn
from .requests import encode, model_max_length, prefix_token_id

__all__ = [
    "Prompt",
    "GenerativeScorer",
    "GenerativeTask",
    "cut_at_stops",
    "generated_text",
    "encode_prompt",
    "check_generation",
    "prompts_fingerprint",
    "tokenise_prompts",
    "is_generative",
]


@dataclass(frozen=True)
class Prompt:
    """One greedy generation to run.

    unit: the index of the item (document) whose answer this is: the scorer reads the text by it.
    input_ids: the context tokens, length T >= 1 (left-truncated: see the module docstring).
    until: stop strings: decoding stops once the new text contains one; the scored text is cut
        before the first (:func:`cut_at_stops`). EOS always stops.
    max_new_tokens: at most this many new tokens (>= 1).
    n_dropped: context tokens left-truncated away.
    """

    unit: int
    input_ids: tuple[int, ...]
    until: tuple[str, ...]
    max_new_tokens: int
    n_dropped: int = 0


def cut_at_stops(text: str, until: Sequence[str]) -> str:
    """``text`` before the first occurrence of each stop string in turn (the harness's
    ``for term in until: s = s.split(term)[0]``)."""
    for term in until:
        if term:
            text = text.split(term)[0]
    return text


def generated_text(tokenizer: Any, tokens: Sequence[int], until: Sequence[str]) -> str:
    """The scored text of generated token ids: decoded without special tokens (as the harness's
    ``tok_decode``), cut before the first stop string (:func:`cut_at_stops`)."""
    return cut_at_stops(tokenizer.decode(list(tokens), skip_special_tokens=True), until)


def check_generation(until: Sequence[str] | None, max_new_tokens: Any, where: str) -> tuple:
    """``(until tuple, max_new_tokens int)`` after the checks every generative source shares:
    ``max_new_tokens`` a whole number >= 1, ``until`` strings. ``where`` names the culprit in the
    message (a task, a file line, a flag)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)):
        raise UsageError(
            f"{where}: max_gen_toks must be a whole number >= 1, got {max_new_tokens!r}"
        )
    if max_new_tokens < 1:
        raise UsageError(f"{where}: max_gen_toks must be >= 1, got {max_new_tokens}")
    if until is None:
        until = ()
    if isinstance(until, str):
        until = (until,)
    until = tuple(until)
    if not all(isinstance(s, str) for s in until):
        raise UsageError(f"{where}: stop strings (until) must be strings, got {list(until)!r}")
    return until, int(max_new_tokens)


def encode_prompt(
    tokenizer: Any,
    context: str,
    unit: int,
    until: Sequence[str],
    max_new_tokens: int,
    max_length: int,
) -> Prompt:
    """One context as a :class:`Prompt`: encoded as the harness encodes a ``generate_until``
    context (:func:`~.requests.encode`; an empty context is the prefix token, BOS else EOS),
    left-truncated to ``max_length - max_new_tokens`` tokens (at least 1)."""
    ids = encode(tokenizer, context) if context else [prefix_token_id(tokenizer)]
    room = max(1, int(max_length) - int(max_new_tokens))
    kept = ids[-room:]
    return Prompt(unit, tuple(kept), tuple(until), int(max_new_tokens), len(ids) - len(kept))


def prompts_fingerprint(prompts: Sequence[Prompt]) -> bytes:
    """Bytes that change whenever any prompt's tokens, stops or length limit change."""
    parts = []
    for p in prompts:
        head = (p.unit, len(p.input_ids), p.max_new_tokens, len(p.until))
        parts.append(np.asarray(head, np.int64).tobytes())
        parts.append(np.asarray(p.input_ids, np.int64).tobytes())
        parts.append("\x00".join(p.until).encode() + b"\x01")
    return b"".join(parts)


@runtime_checkable
class GenerativeScorer(Protocol):
    """Turns one coalition's generated texts (one per prompt, in prompt order, each cut at its
    stops) into utilities. Same names as :class:`~.contract.Scorer`, texts instead of
    log-likelihoods."""

    utilities: Sequence[str]
    accuracy_utilities: Sequence[str]
    default_utility: str

    def check(self, utility: str | None) -> str: ...

    def chance(self, utility: str) -> float | None: ...

    def per_item(self, texts: Sequence[str], utility: str) -> np.ndarray:
        """texts [n_prompts] -> per-item terms float64 [n_items]; their mean is v."""

    def __call__(self, texts: Sequence[str], utility: str) -> float: ...

    def describe(self, utility: str) -> str | None: ...


@runtime_checkable
class GenerativeTask(Protocol):
    """A task scored on what the model generates."""

    generative: bool  # True
    name: str
    source: str
    notes: dict[str, Any]
    utilities: Sequence[str]
    default_utility: str

    def __len__(self) -> int: ...

    def check_utility(self, name: str | None) -> str: ...

    def fingerprint(self) -> str: ...

    def prompts(self, tokenizer: Any, max_length: int) -> list[Prompt]: ...

    def scorer(self, prompts: list[Prompt]) -> GenerativeScorer: ...


def is_generative(task: Any) -> bool:
    """True for a task scored on generated text (see :class:`GenerativeTask`)."""
    return getattr(task, "generative", False) is True


def tokenise_prompts(task: Any, tokenizer: Any, config: Any, max_length: int | None):
    """``task.prompts(tokenizer, L)`` at ``L = max_length`` (None: the model's own limit), and
    the truncation record ``{"max_length", "limit_source", "n_truncated", "n_requests"}``; warns
    once when contexts were truncated."""
    limit, source = model_max_length(config, tokenizer)
    length = limit if max_length is None else int(max_length)
    prompts = task.prompts(tokenizer, length)
    n_truncated = sum(p.n_dropped > 0 for p in prompts)
    if n_truncated:
        warn(
            f"{n_truncated} of {len(prompts)} prompts of task {task.name!r} are longer than "
            f"max_length={length} tokens less their max_gen_toks and were left-truncated as "
            "lm-evaluation-harness does; set max_length= (--max-length) to change the limit"
        )
    record = {
        "max_length": length,
        "limit_source": source if max_length is None else "max_length=",
        "n_truncated": int(n_truncated),
        "n_requests": len(prompts),
    }
    return prompts, record
