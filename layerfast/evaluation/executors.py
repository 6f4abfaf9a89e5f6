"""The executor registry: one table of the executors a Game (or a Ray worker) can run, and one
function that builds one.

Both executors take the same requests and options; ``prefix`` shares the residual states of
common prefixes across coalitions, ``naive`` is the reference that runs every coalition from the
embeddings. They are bit-identical (tested) unless the prefix executor stacks small batches
(``stack_tokens``, :mod:`.stacking`: equal within rounding, tested).
"""

from __future__ import annotations

from typing import Any

from ..errors import UsageError
from ..models import SublayerModel
from ..tasks.requests import Request
from .naive_executor import NaiveExecutor
from .prefix_executor import PrefixExecutor

EXECUTORS: dict[str, type[NaiveExecutor]] = {"prefix": PrefixExecutor, "naive": NaiveExecutor}


def check_executor(name: str) -> str:
    """``name`` if it is a registered executor; UsageError listing them otherwise."""
    if name not in EXECUTORS:
        raise UsageError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    return name


def make_executor(
    name: str,
    model: SublayerModel,
    requests: list[Request],
    options: dict[str, Any],
    table: dict[str, type[NaiveExecutor]] = EXECUTORS,
) -> NaiveExecutor:
    """The executor ``name`` over ``requests``, from ``table`` (the log-likelihood executors, or
    the same two with another score: :data:`.kl.KL_EXECUTORS`, :data:`.verify.VERIFIERS`).
    ``options``: ``batch_tokens`` (int), ``pack`` (bool) and, read by the prefix executor only,
    ``memory_budget`` (bytes) and ``stack_tokens`` (int or "auto")."""
    options = dict(options)
    if check_executor(name) != "prefix":
        options.pop("memory_budget", None)
        options.pop("stack_tokens", None)
    return table[name](model, requests, **options)
