"""Runners: who computes the (coalition, batch) pairs a Game still needs, behind one ``run``.

``run(masks, need, store, tick=None, note=None)``: ``masks`` bool [m, n_model] keep-masks,
``need`` bool [m, n_batches] the pairs to compute; every such pair is computed exactly once and
handed to ``store(batch, rows, values)`` as soon as it is done (``rows`` int [k] into ``masks``,
``values`` float64 [k, requests of the batch] in the batch's ``request_index`` order). ``tick(k)``
counts finished coalition-batches for a progress bar, ``note(text)`` sets a status line.

:class:`LocalRunner` runs the executor in this process: coalitions in trie order, cut into chunks,
each chunk batch by batch (the executor's outer loop), so every stored batch shares its
coalitions' prefixes. :class:`~layerfast.evaluation.ray.runner.RayRunner` runs the same executor
on Ray workers. The Game does the bookkeeping (memo, cache) once, in its ``store``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from .naive_executor import NaiveExecutor
from .prefix_executor import trie_order

Store = Callable[[int, np.ndarray, np.ndarray], None]  # (batch, rows int [k], values [k, R_b])
Tick = Callable[[int], None]  # finished coalition-batches
Note = Callable[[str], None]  # a status line (per-worker throughput)


class Runner(Protocol):
    """What a Game needs from whoever runs its coalitions."""

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
    """Runs ``executor`` in this process on chunks of ``chunk`` coalitions in trie order."""

    def __init__(self, executor: NaiveExecutor, chunk: int):
        self.executor = executor
        self.chunk = int(chunk)

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

            def on_batch(b: int, rows: np.ndarray, values: np.ndarray, run=run) -> None:
                store(b, run[rows], values)

            self.executor.loglik_many(masks[run], tick=tick, need=need[run], on_batch=on_batch)

    @property
    def compute_run(self) -> int:
        return int(self.executor.token_sublayer_evaluations)

    def close(self) -> None:
        pass
