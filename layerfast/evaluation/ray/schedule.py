"""The driver's scheduling loop over K workers, written against a small :class:`Backend` so that
it runs (and is tested) without Ray: :class:`~layerfast.evaluation.ray.pool.RayPool` supplies a
backend of Ray actors, the tests one of fake references.

The loop hands units to workers as they become free (each keeps :data:`IN_FLIGHT` queued, so the
next starts while a result travels), passes each result to ``on_result`` as it arrives, and
handles failures:

* :class:`WorkerError`: our own code raised in the worker; not retried, raised in the driver.
* :class:`WorkerLost`: the worker's process died or is restarting; the unit goes back to the
  front of the queue and runs again (counted in ``units_rerun``); the worker gets no new unit
  for a back-off that doubles from :data:`RETRY_S` to :data:`RETRY_MAX_S`. It is dropped when
  the backend says it is dead for good (``dead=True``) or it stays unreachable past
  ``give_up_s``. With no worker left the sweep stops with every worker's reason.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from .partition import IN_FLIGHT, Unit

RETRY_S = 0.5  # first wait before sending units to a worker whose call failed (doubles)
RETRY_MAX_S = 30.0
GIVE_UP_S = 600.0  # a worker unreachable this long is dropped


class WorkerError(Exception):
    """Our own code raised in a worker (a bug or a bad input): the sweep stops."""


class WorkerLost(Exception):
    """A worker's process died or is being restarted; ``dead``: it will not come back."""

    def __init__(self, reason: str, dead: bool = False):
        super().__init__(reason)
        self.dead = dead


class Backend(Protocol):
    """How the loop talks to the workers; references are opaque and hashable."""

    def submit(self, worker: int, unit: Unit) -> Any:
        """Start ``unit`` on ``worker``; returns a reference to its result."""

    def wait(self, refs: Sequence[Any], timeout: float) -> list[Any]:
        """Those of ``refs`` that are finished (at most one is needed), after at most
        ``timeout`` seconds."""

    def result(self, ref: Any) -> tuple[np.ndarray, dict[str, float]]:
        """The finished unit's (values float64 [k, R_b], info); raises :class:`WorkerError`
        or :class:`WorkerLost`. ``info`` has "steps", "seconds", "start", "end"."""

    def cancel(self, refs: Sequence[Any]) -> None:
        """Stop the units of ``refs`` if they still run (best effort)."""


OnResult = Callable[[Unit, np.ndarray, int], None]  # (unit, values [k, R_b], worker index)


class Scheduler:
    """Runs units on ``n_workers`` workers of a backend; keeps per-worker statistics over every
    :meth:`run`.

    Attributes:
        stats: per worker {"units", "pairs", "steps", "token_steps", "seconds", "wall"}.
        failures: units lost per worker. units_rerun, pairs_rerun: units (and their
            (coalition, batch) pairs) lost with a worker and run again.
        unit_log: per unit received: batch, rows, worker, compute_s, overhead_s (transfer and
            scheduling, not the wait behind the worker's previous unit), store_s.
    """

    def __init__(
        self,
        n_workers: int,
        give_up_s: float = GIVE_UP_S,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.n_workers = n_workers
        self.give_up_s = give_up_s
        self.clock, self.sleep = clock, sleep
        self.failures = [0] * n_workers
        self.units_rerun = 0
        self.pairs_rerun = 0
        keys = ("units", "pairs", "steps", "token_steps", "seconds", "wall")
        self.stats: list[dict[str, float]] = [dict.fromkeys(keys, 0.0) for _ in range(n_workers)]
        self.unit_log: list[dict[str, float]] = []

    def run(
        self,
        backend: Backend,
        units: Sequence[Unit],
        on_result: OnResult,
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        """Run every unit once on ``backend`` (largest first, as given); ``on_result`` is called
        in this process as each one finishes, ``on_progress(postfix)`` after it."""
        queue = deque(units)
        alive = set(range(self.n_workers))
        in_flight: dict[Any, tuple[int, Unit, float]] = {}
        last_end = [0.0] * self.n_workers  # wall time each worker's last unit ended
        not_before = [0.0] * self.n_workers  # no new unit for a worker before this time
        down_since: dict[int, float] = {}  # worker -> when it first failed in a row
        tries = [0] * self.n_workers  # failed calls in a row, for the back-off
        errors: list[str] = []

        def top_up() -> None:
            now = self.clock()
            busy = Counter(a for a, _, _ in in_flight.values())
            for _ in range(IN_FLIGHT):
                for a in sorted(alive):
                    if queue and busy[a] < IN_FLIGHT and now >= not_before[a]:
                        unit = queue.popleft()
                        in_flight[backend.submit(a, unit)] = (a, unit, self.clock())
                        busy[a] += 1

        def lost(a: int, unit: Unit, error: WorkerLost) -> None:
            queue.appendleft(unit)
            self.units_rerun += 1
            self.pairs_rerun += len(unit.rows)
            self.failures[a] += 1
            now = self.clock()
            first = down_since.setdefault(a, now)
            if a in alive and (error.dead or now - first > self.give_up_s):
                alive.discard(a)
                errors.append(f"worker {a}: {error}")
            tries[a] += 1
            not_before[a] = now + min(RETRY_MAX_S, RETRY_S * 2 ** min(tries[a] - 1, 10))

        def stop() -> None:
            backend.cancel(list(in_flight))
            in_flight.clear()

        try:
            top_up()
            while in_flight or queue:
                if not alive:
                    raise RuntimeError(
                        "every Ray worker died more often than it may restart: " + "; ".join(errors)
                    )
                if not in_flight:  # every live worker is backing off: wait for the first
                    self.sleep(max(0.0, min(not_before[a] for a in alive) - self.clock()))
                    top_up()
                    continue
                ready = backend.wait(list(in_flight), RETRY_S)
                if not ready:
                    top_up()
                    continue
                ref = ready[0]
                a, unit, sent = in_flight.pop(ref)
                try:
                    values, info = backend.result(ref)
                except WorkerError as e:
                    stop()
                    raise RuntimeError(
                        f"Ray worker {a} failed on batch {unit.batch}: {e}"
                    ) from None
                except WorkerLost as e:
                    lost(a, unit, e)
                    top_up()
                    continue
                down_since.pop(a, None)
                tries[a] = 0
                self._record(a, unit, info, sent, last_end, on_result, values)
                top_up()
                if on_progress is not None:
                    on_progress(self.postfix())
        except BaseException:  # an error, or Ctrl-C in the driver: leave nothing running
            stop()
            raise

    def _record(self, a, unit, info, sent, last_end, on_result, values) -> None:
        """Count a finished unit of worker ``a`` and hand it to ``on_result``."""
        stats = self.stats[a]
        stats["units"] += 1
        stats["pairs"] += len(unit.rows)
        stats["steps"] += info["steps"]
        stats["token_steps"] += info.get("token_steps", 0.0)
        stats["seconds"] += info["seconds"]
        received = self.clock()
        stats["wall"] += received - sent
        waited = max(0.0, min(info["start"], last_end[a]) - sent)  # behind its last unit
        last_end[a] = info["end"]
        began = time.perf_counter()
        on_result(unit, values, a)
        self.unit_log.append(
            {
                "batch": unit.batch,
                "rows": len(unit.rows),
                "worker": a,
                "compute_s": info["seconds"],
                "overhead_s": max(0.0, received - sent - waited - info["seconds"]),
                "store_s": time.perf_counter() - began,
            }
        )

    def postfix(self) -> str:
        """Per-worker throughput in coalition-batches per second of compute, e.g. 'w0 3.1/s'."""
        parts = []
        for i, s in enumerate(self.stats):
            rate = s["pairs"] / s["seconds"] if s["seconds"] > 0 else 0.0
            parts.append(f"w{i} {rate:.1f}/s")
        return " ".join(parts)

    @property
    def token_steps(self) -> int:
        """Token-sublayer evaluations every worker ran (a kept sublayer on one real token)."""
        return int(sum(s["token_steps"] for s in self.stats))
