"""The multiple-choice scorer: per-choice log-likelihoods -> one utility per coalition.

``acc`` argmax of the summed log-prob; ``acc_norm`` argmax of the sum divided by the choice's
length in characters; ``acc_bytes`` divided by its UTF-8 length (all as lm-evaluation-harness's
``process_results``, ties to the first choice like ``np.argmax``); ``logprob`` the mean over items
of the gold continuation's summed log-prob (nats); ``margin`` the mean over items of gold minus the
best other choice (nats). The last two are smooth: far lower-variance Shapley estimates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UsageError

ACCURACY_UTILITIES = ("acc", "acc_norm", "acc_bytes")
SMOOTH_UTILITIES = ("logprob", "margin")
UTILITIES = ACCURACY_UTILITIES + SMOOTH_UTILITIES
DEFAULT_UTILITY = "acc_norm"


def check_utility(name: str) -> str:
    """``name`` if it is a multiple-choice utility; UsageError listing them otherwise."""
    if name not in UTILITIES:
        raise UsageError(f"unknown utility {name!r}; choose one of {', '.join(UTILITIES)}")
    return name


class Scorer:
    """Scores a vector of per-request log-likelihoods (requests in item, then choice order:
    what ``Task.requests`` makes) of a multiple-choice task ``task`` (its ``items`` and
    ``chance``). ``requests``, when given, are checked to be one per choice."""

    utilities = UTILITIES
    accuracy_utilities = ACCURACY_UTILITIES
    default_utility = DEFAULT_UTILITY

    def __init__(self, task: Any, requests: Sequence[Any] | None = None):
        self.task = task
        self.n_choices = np.array([len(it.choices) for it in task.items])
        self.offsets = np.concatenate([[0], np.cumsum(self.n_choices)])
        self.gold = np.array([it.gold for it in task.items])
        self.chars = np.array([float(len(c)) for it in task.items for c in it.choices])
        self.bytes = np.array(
            [float(len(c.encode("utf-8"))) for it in task.items for c in it.choices]
        )
        if requests is not None and len(requests) != len(self.chars):
            raise ValueError(
                f"{len(requests)} requests for the {len(self.chars)} choices of task {task.name!r}"
            )

    def check(self, utility: str | None) -> str:
        """``utility`` (None: ``default_utility``) if it is known; ValueError otherwise."""
        return check_utility(self.default_utility if utility is None else utility)

    def describe(self, utility: str) -> None:
        """None: the utility's name says what it is."""
        return None

    def chance(self, utility: str) -> float | None:
        """Utility of a uniform random guess (accuracy utilities only; None for smooth ones)."""
        return self.task.chance if utility in ACCURACY_UTILITIES else None

    def _per_item(self, values: np.ndarray) -> list[np.ndarray]:
        return [values[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def predictions(self, loglik: np.ndarray, utility: str = "acc") -> np.ndarray:
        """Predicted choice per item, int [n_items]."""
        scaled = {
            "acc": loglik,
            "acc_norm": loglik / self.chars,
            "acc_bytes": loglik / self.bytes,
            "logprob": loglik,
            "margin": loglik,
        }[check_utility(utility)]
        return np.array([int(np.argmax(v)) for v in self._per_item(scaled)])

    def per_item(self, loglik: np.ndarray, utility: str) -> np.ndarray:
        """The utility's per-item terms, float64 [n_items]; v(S) is their mean."""
        check_utility(utility)
        if utility in ACCURACY_UTILITIES:
            return (self.predictions(loglik, utility) == self.gold).astype(np.float64)
        items = self._per_item(loglik)
        gold_ll = np.array([v[g] for v, g in zip(items, self.gold)])
        if utility == "logprob":
            return gold_ll
        best_other = np.array([np.max(np.delete(v, g)) for v, g in zip(items, self.gold)])
        return gold_ll - best_other

    def __call__(self, loglik: np.ndarray, utility: str) -> float:
        return float(np.mean(self.per_item(loglik, utility)))
