"""The Ray runner: a Game's coalitions computed on K Ray workers, behind the same ``run`` as the
in-process runner (:mod:`layerfast.evaluation.runner`).

:func:`start` starts the pool (:class:`~.pool.RayPool`: the workers load the model), sizes the
batches every worker can take, builds the driver's executor (its batches, for the cache and for
pricing) and has every worker build the same one. :meth:`RayRunner.run` cuts the (coalition,
batch) pairs still needed into units that keep prefix sharing (:func:`~.partition.plan`) and
hands each unit's result to the Game's ``store`` as it arrives: only the driver writes the cache.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import UsageError
from ...models import SublayerModel
from ...tasks.requests import Request
from ..executors import make_executor
from ..naive_executor import NaiveExecutor
from ..runner import Note, Store, Tick
from .partition import plan
from .pool import RayPool


def check_workers(
    workers: Any, ray_address: Any, threads_per_worker: Any, gpus_per_worker: Any
) -> int | None:
    """``workers`` as None (in this process) or an int >= 2; UsageError naming the flag, also
    for a Ray option given without ``workers``."""
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1
    ):
        raise UsageError(f"workers (--workers) must be a whole number >= 1, got {workers!r}")
    workers = None if workers in (None, 1) else int(workers)
    if workers is None and ray_address is not None:
        raise UsageError("ray_address (--ray-address) needs workers >= 2 (--workers)")
    if gpus_per_worker is not None:
        if workers is None:
            raise UsageError("gpus_per_worker (--gpus-per-worker) needs workers >= 2 (--workers)")
        if isinstance(gpus_per_worker, bool) or not float(gpus_per_worker) > 0:
            raise UsageError(f"gpus_per_worker must be > 0, got {gpus_per_worker!r}")
    if threads_per_worker is not None:
        if workers is None:
            raise UsageError("threads_per_worker needs workers >= 2 (--workers)")
        if isinstance(threads_per_worker, bool) or int(threads_per_worker) < 1:
            raise UsageError(f"threads_per_worker must be >= 1, got {threads_per_worker!r}")
    return workers


class RayRunner:
    """Runs a Game's (coalition, batch) pairs on the workers of ``pool``.

    executor: the driver's copy of the executor the workers run (its batches and sizes).
    """

    def __init__(self, pool: RayPool, executor: NaiveExecutor):
        self.pool = pool
        self.executor = executor
        self.device_type = pool.device_type

    def run(
        self,
        masks: np.ndarray,
        need: np.ndarray,
        store: Store,
        tick: Tick | None = None,
        note: Note | None = None,
    ) -> None:
        """Every needed pair once, as units spread over the workers (see the module
        docstring); ``store`` gets each unit's rows as it arrives."""
        if self.pool is None:
            raise UsageError("this game's Ray workers were stopped (close()); make a new Game")
        batches = self.executor.batches
        units = plan(masks, need, [b.n_tokens for b in batches], len(self.pool.actors))

        def on_result(unit, values: np.ndarray, worker: int) -> None:
            store(unit.batch, unit.rows, values)
            if tick is not None:
                tick(len(unit.rows))

        self.pool.run(units, masks, on_result, note)

    @property
    def compute_run(self) -> int:
        """Token-sublayer evaluations every worker has run for this game."""
        return 0 if self.pool is None else self.pool.scheduler.token_steps

    def close(self) -> None:
        """Stop the workers (and the local Ray cluster the pool started, if any)."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None


def start(
    model: SublayerModel,
    requests: list[Request],
    executor: str,
    options: dict[str, Any],
    seq_len: int,
    workers: int,
    ray_address: str | None,
    threads_per_worker: int | None,
    gpus_per_worker: float | None,
) -> tuple[RayRunner, dict[str, Any]]:
    """Start K workers and build the executor ``executor`` over ``requests`` on each.

    options: the executor's options, ``batch_tokens`` and ``memory_budget`` possibly "auto" /
    None (resolved on every worker's device, the smallest kept: all must run the same batches)
    and ``pack``. Returns the runner and the sizing record ``{"batch_tokens", "memory_budget",
    "how"}``; on any error the workers are stopped.
    """
    pool = RayPool(model, workers, ray_address, threads_per_worker, gpus_per_worker)
    try:
        tokens, budget, how = pool.sizes(options["batch_tokens"], options["memory_budget"], seq_len)
        resolved = {**options, "batch_tokens": tokens, "memory_budget": budget}
        driver = make_executor(executor, model, requests, resolved)
        pool.setup(requests, executor, resolved, driver.batches)
    except BaseException:
        pool.close()
        raise
    sizing = {"batch_tokens": tokens, "memory_budget": budget, "how": how}
    return RayRunner(pool, driver), sizing
