"""The Game: a callable from coalition masks to utilities, on a real model and task.

    game = lf.Game(model, task, utility="acc_norm")
    u = game(masks)   # masks: bool [m, n_players], True = kept -> float64 [m]

Every evaluated coalition's per-request log-likelihoods are memoised in memory and, with
``cache=``, in SQLite on disk, so repeated coalitions are never recomputed and a killed sweep
resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..coalitions import as_masks, coalition_keys, masks_from_keys
from ..errors import UsageError
from ..models import SublayerModel
from ..progress import progress as progress_bar
from ..tasks import Task
from .cache import UtilityCache
from .naive_executor import NaiveExecutor
from .prefix_executor import PrefixExecutor, trie_order
from .requests import build_requests, requests_fingerprint
from .utility import ACCURACY_UTILITIES, Scorer, check_utility

EXECUTORS = {"prefix": PrefixExecutor, "naive": NaiveExecutor}


class Game:
    """v(S) for coalitions S of a model's sublayers on a task.

    Args:
        model: a :class:`SublayerModel` (see ``lf.load``).
        task: a :class:`Task` (see ``lf.tasks.load``).
        utility: "acc" | "acc_norm" | "acc_bytes" | "logprob" | "margin".
        executor: "prefix" (shares the hidden states of common prefixes; bit-identical to the
            reference) or "naive" (the reference: every coalition from scratch).
        cache: None (memory only), True (the user cache file) or a path to an SQLite file.
        batch_tokens: token budget of one forward batch (padded B x T).
        progress: show a progress bar counting coalitions.
        pack: share each item's context across its choices (one row per item, see
            :mod:`layerfast.evaluation.batching`); turned off, with the reason in ``packing_note``,
            where it would not be exact (sliding-window attention over long inputs, flash
            attention).
        chunk: coalitions evaluated together (more shares more prefixes; each finished chunk
            is written to the cache at once, so a kill loses at most one chunk).
    """

    def __init__(
        self,
        model: SublayerModel,
        task: Task,
        utility: str = "acc_norm",
        executor: str = "prefix",
        cache: bool | str | Path | None = None,
        batch_tokens: int = 2048,
        max_length: int = 2048,
        progress: bool = True,
        chunk: int = 64,
        pack: bool = True,
    ):
        if not isinstance(model, SublayerModel):
            raise TypeError(
                f"model must be a SublayerModel (use lf.load), got {type(model).__name__}"
            )
        if executor not in EXECUTORS:
            raise UsageError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
        self.model = model
        self.task = task
        self.utility = check_utility(utility)
        self.scorer = Scorer(task)
        self.requests = build_requests(task, model.tokenizer, max_length)
        self.executor = EXECUTORS[executor](
            model, self.requests, batch_tokens=batch_tokens, pack=pack
        )
        self.packing_note = self.executor.packing_note
        self.progress = progress
        if chunk < 1:
            raise UsageError(f"chunk must be >= 1, got {chunk}")
        self.chunk = chunk
        self.players = list(model.players)
        self.n_players = model.n_players
        self._memo: dict[str, np.ndarray] = {}
        self._cache = (
            None
            if cache is None or cache is False
            else UtilityCache(None if cache is True else cache)
        )
        layout = "packed" if self.executor.pack else "unpacked"  # packing changes the last bits
        self._key = (
            model.fingerprint(),
            f"{task.fingerprint()}-{_short_hash(requests_fingerprint(self.requests))}-{layout}",
            model.device.type,
        )
        self.n_forward = 0  # coalitions actually run by this game (not served from a cache)

    @property
    def chance(self) -> float | None:
        """Utility of a uniform random guess (accuracy utilities only; None for smooth ones)."""
        return self.task.chance if self.utility in ACCURACY_UTILITIES else None

    def with_utility(self, utility: str) -> Game:
        """The same game (sharing its memo and cache) scored by another utility."""
        other = object.__new__(Game)
        other.__dict__.update(self.__dict__)
        other.utility = check_utility(utility)
        return other

    # --- evaluation ----------------------------------------------------------------------------
    def check_masks(self, masks) -> np.ndarray:
        """``masks`` as bool [m, n_players]; see :func:`layerfast.coalitions.as_masks`."""
        return as_masks(masks, self.n_players, players=self.players)

    def loglik(self, masks) -> np.ndarray:
        """Per-request summed log-likelihoods, float64 [m, n_requests]."""
        arr = self.check_masks(masks)
        keys = coalition_keys(arr)
        missing = [k for k in dict.fromkeys(keys) if k not in self._memo]
        if missing and self._cache is not None:
            self._memo.update(self._cache.get(self._key, missing))
            missing = [k for k in missing if k not in self._memo]
        if missing:
            todo = masks_from_keys(missing, self.n_players)
            order = trie_order(todo)  # neighbours share prefixes
            todo, todo_keys = todo[order], [missing[i] for i in order]
            bar = _progress(len(todo_keys), self.progress and len(todo_keys) > 1)
            n_batches = len(self.executor.batches)
            tick = (lambda k: bar.update(k / n_batches)) if bar is not None else None
            for start in range(0, len(todo_keys), self.chunk):
                chunk = todo_keys[start : start + self.chunk]
                lls = self.executor.loglik_many(todo[start : start + self.chunk], tick=tick)
                for key, ll in zip(chunk, lls):
                    self.n_forward += 1
                    self._memo[key] = ll
                    if self._cache is not None:
                        self._cache.put(self._key, key, ll)
            if bar is not None:
                bar.close()
        return (
            np.stack([self._memo[k] for k in keys]) if keys else np.zeros((0, len(self.requests)))
        )

    def __call__(self, masks) -> np.ndarray:
        """Utilities float64 [m] for bool masks [m, n_players] (True = kept)."""
        return np.array(
            [self.scorer(ll, self.utility) for ll in self.loglik(masks)], dtype=np.float64
        )

    def per_item(self, mask, utility: str | None = None) -> np.ndarray:
        """The utility's per-item terms for one coalition, float64 [n_items]."""
        return self.scorer.per_item(self.loglik(mask)[0], utility or self.utility)

    def full_mask(self) -> np.ndarray:
        return np.ones(self.n_players, dtype=bool)

    def __repr__(self) -> str:
        return (
            f"Game({self.model.name!r}, task={self.task.name!r} ({len(self.task)} items), "
            f"utility={self.utility!r}, executor={self.executor.name!r}, "
            f"packed={self.executor.pack})"
        )


def _short_hash(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:16]


def _progress(total: int, show: bool):
    if not show:
        return None
    fmt = "{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}]"
    return progress_bar(total=total, desc="evaluating", unit="coalition", bar_format=fmt)
