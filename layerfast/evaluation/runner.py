"""Runners: who computes the (coalition, batch) pairs a Game still needs, behind one ``run``.

``run(masks, need, store, tick=None, note=None)``: ``masks`` bool [m, n_model] keep-masks,
``need`` bool [m, n_batches] the pairs to compute; every such pair is computed exactly once and
handed to ``store(batch, rows, values)`` as soon as it is done (``rows`` int [k] into ``masks``,
``values`` float64 [k, requests of the batch] in the batch's ``request_index`` order). ``tick(k)``
counts finished coalition-batches for a progress bar, ``note(text)`` sets a status line.

:class:`LocalRunner` runs the executor in this process: coalitions in trie order, cut into chunks,
each chunk batch by batch (the executor's outer loop), so every stored batch shares its
coalitions' prefixes. It hands finished coalitions of a batch to ``store`` as they come, at most
:data:`FLUSH_COALITIONS` at a time or :data:`FLUSH_SECONDS` apart (each ``store`` call is one
cache transaction), so a kill loses at most that much finished work, however many coalitions
one batch holds. :class:`~layerfast.evaluation.ray.runner.RayRunner` runs the same executor on
Ray workers. The Game does the bookkeeping (memo, cache) once, in its ``store``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from .naive_executor import NaiveExecutor
from .prefix_executor import trie_order

FLUSH_COALITIONS = 4  # finished coalitions of a batch handed to store together, at most
FLUSH_SECONDS = 2.0  # ... or fewer, once this long has passed since the last hand-over

Store = Callable[[int, np.ndarray, np.ndarray], None]  # (batch, rows int [k], values [k, R_b])
Tick = Callable[[int], None]  # finished coalition-batches
Note = Callable[[str], None]  # a status line (per-worker throughput)


class Runner(Protocol):
    """What a Game needs from whoever runs its coalitions. ``device_type``: where they run
    ("cpu" or "cuda", part of the cache key); ``pool``: the Ray pool, or None."""

    device_type: str
    pool: Any

    def run(
        self,
        masks: np.ndarray,
        need: np.ndarray,
        store: Store,
        tick: Tick | None = None,
        note: Note | None = None,
    ) -> None: ...

    @property
    def compute_run(self) -> int:
        """Token-sublayer evaluations run so far (a kept sublayer on one real token)."""

    def close(self) -> None: ...


class LocalRunner:
    """Runs ``executor`` in this process on chunks of ``chunk`` coalitions in trie order; hands
    finished coalition-batches to ``store`` every ``flush_coalitions`` of them or
    ``flush_seconds``, whichever comes first (and at the end of every batch)."""

    def __init__(
        self,
        executor: NaiveExecutor,
        chunk: int,
        flush_coalitions: int = FLUSH_COALITIONS,
        flush_seconds: float = FLUSH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.executor = executor
        self.device_type = executor.model.device.type
        self.pool = None  # no Ray workers
        self.chunk = int(chunk)
        self.flush_coalitions = int(flush_coalitions)
        self.flush_seconds = float(flush_seconds)
        self.clock = clock

    def run(
        self,
        masks: np.ndarray,
        need: np.ndarray,
        store: Store,
        tick: Tick | None = None,
        note: Note | None = None,
    ) -> None:
        order = trie_order(masks)  # neighbours share prefixes; a chunk is a part of the trie
        for start in range(0, len(order), self.chunk):
            part = order[start : start + self.chunk]
            run = part[need[part].any(axis=1)]
            if not len(run):
                continue
            pending = _Pending(self, store, run)
            self.executor.loglik_many(
                masks[run], tick=tick, need=need[run], on_row=pending.add, on_batch=pending.end
            )

    @property
    def compute_run(self) -> int:
        return int(self.executor.token_sublayer_evaluations)

    def close(self) -> None:
        pass


class _Pending:
    """Finished coalitions of the batch in progress, not yet handed to ``store``."""

    def __init__(self, runner: LocalRunner, store: Store, run: np.ndarray):
        self.runner, self.store, self.run = runner, store, run
        self.rows: list[int] = []
        self.values: list[np.ndarray] = []
        self.since = runner.clock()

    def add(self, b: int, row: int, values: np.ndarray) -> None:
        """Coalition ``run[row]`` of batch ``b`` is scored: keep it, hand over when due."""
        self.rows.append(row)
        self.values.append(np.array(values, dtype=np.float64))
        r = self.runner
        if len(self.rows) >= r.flush_coalitions or r.clock() - self.since >= r.flush_seconds:
            self.flush(b)

    def end(self, b: int, rows: np.ndarray, values: np.ndarray) -> None:
        """Batch ``b`` is done: hand over what is left of it."""
        self.flush(b)

    def flush(self, b: int) -> None:
        if self.rows:
            self.store(b, self.run[np.asarray(self.rows)], np.stack(self.values))
            self.rows, self.values = [], []
        self.since = self.runner.clock()
