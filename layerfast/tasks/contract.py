"""The task contract: what evaluation may use of any kind of task.

A Game builds a task in one order, the same for every kind::

    requests = task.requests(tokenizer, max_length)   # list[Request], tokenised and truncated
    scorer = task.scorer(requests)                     # reads those requests' log-likelihoods

and from then on sees only the requests (to batch and run them) and the scorer (to turn one
coalition's per-request log-likelihoods, float64 [n_requests] in request order, into a utility
and per-item terms). The kinds: multiple-choice items (:class:`~layerfast.tasks.task.Task`,
JSONL files and the built-in tasks), plain text (:class:`~layerfast.tasks.text_task.TextTask`)
and lm-evaluation-harness tasks (:class:`~layerfast.bridges.lm_eval_tasks.HarnessTask`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .requests import Request

__all__ = ["Request", "Scorer", "TaskKind"]


@runtime_checkable
class Scorer(Protocol):
    """Turns one coalition's per-request log-likelihoods into utilities.

    utilities: the names it can score; accuracy_utilities: those that are 0/1 per item (they
    have a chance level); default_utility: the one used when none is asked for.
    """

    utilities: Sequence[str]
    accuracy_utilities: Sequence[str]
    default_utility: str

    def check(self, utility: str | None) -> str:
        """``utility`` (None: the default) if it is one of ``utilities``; UsageError if not."""

    def chance(self, utility: str) -> float | None:
        """The utility of a uniform random guess; None where there is none (smooth utilities)."""

    def per_item(self, loglik: np.ndarray, utility: str) -> np.ndarray:
        """float64 [n_requests] -> per-item terms float64 [n_items]; their mean is v."""

    def __call__(self, loglik: np.ndarray, utility: str) -> float:
        """float64 [n_requests] -> v, the utility of the coalition."""

    def describe(self, utility: str) -> str | None:
        """What v is when the name alone does not say (e.g. its sign), else None."""


@runtime_checkable
class TaskKind(Protocol):
    """A task of any kind: its items, how to tokenise them and how to score them."""

    name: str
    source: str
    notes: dict[str, Any]
    utilities: Sequence[str]
    default_utility: str

    def __len__(self) -> int:
        """Items (documents for text, harness documents for an ``lm_eval:`` task)."""

    def check_utility(self, name: str | None) -> str:
        """``name`` (None: the default) if this task can be scored by it; UsageError if not.
        Needs no tokenizer, so a command line can check it before a model loads."""

    def fingerprint(self) -> str:
        """A short hash of everything in the task that changes its requests."""

    def requests(self, tokenizer: Any, max_length: int) -> list[Request]:
        """Every request, tokenised and left-truncated to at most ``max_length`` input tokens."""

    def scorer(self, requests: list[Request]) -> Scorer:
        """The scorer of ``requests`` (what :meth:`requests` returned)."""
