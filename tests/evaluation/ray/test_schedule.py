"""The driver's scheduling loop without Ray: a fake backend of references, a fake clock.

Each fake worker finishes its units in the order it got them, one per ``wait``; a script says
which submission fails and how (our code raised, the process died, it died for good).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from layerfast.evaluation.ray.partition import IN_FLIGHT, Unit
from layerfast.evaluation.ray.schedule import Scheduler, WorkerError, WorkerLost


class Clock:
    def __init__(self):
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += max(0.0, s)


class FakeBackend:
    """References are submission numbers. ``fail[n]`` scripts submission n: "error" (our code
    raised), "lost" (the process died, Ray restarts it) or "dead" (it will not come back); a
    worker in ``down`` loses every unit it gets."""

    def __init__(self, clock: Clock, fail: dict[int, str] | None = None, down=()):
        self.clock = clock
        self.fail = dict(fail or {})
        self.down = set(down)
        self.sent: list[tuple[int, int, int]] = []  # (ref, worker, batch)
        self.open: dict[int, tuple[int, Unit]] = {}
        self.max_in_flight = Counter()
        self.cancelled: list[int] = []

    def submit(self, worker: int, unit: Unit) -> int:
        ref = len(self.sent)
        self.sent.append((ref, worker, unit.batch))
        self.open[ref] = (worker, unit)
        busy = sum(1 for w, _ in self.open.values() if w == worker)
        self.max_in_flight[worker] = max(self.max_in_flight[worker], busy)
        return ref

    def wait(self, refs, timeout):
        self.clock.t += 0.01
        return [min(refs)] if refs else []

    def result(self, ref):
        worker, unit = self.open.pop(ref)
        how = "dead" if worker in self.down else self.fail.get(ref)
        if how == "error":
            raise WorkerError(f"ValueError in unit {ref}")
        if how in ("lost", "dead"):
            raise WorkerLost(f"worker {worker} process died", dead=how == "dead")
        values = np.full((len(unit.rows), 2), float(unit.batch))
        info = {"steps": 3.0, "token_steps": 30.0, "seconds": 0.01, "start": 0.0, "end": 0.0}
        return values, info

    def cancel(self, refs):
        self.cancelled += list(refs)


def units(n: int) -> list[Unit]:
    return [Unit(batch=b, rows=np.arange(2) + 2 * b, steps=3, cost=30) for b in range(n)]


def run(backend: FakeBackend, n_workers: int, todo: list[Unit], clock: Clock, **kw):
    sched = Scheduler(n_workers, clock=clock.now, sleep=clock.sleep, **kw)
    got: list[tuple[int, int]] = []
    sched.run(backend, todo, lambda unit, values, worker: got.append((unit.batch, worker)))
    return sched, got


def test_every_unit_runs_once_and_workers_keep_in_flight_units():
    clock = Clock()
    backend = FakeBackend(clock)
    sched, got = run(backend, 3, units(20), clock)
    assert sorted(b for b, _ in got) == list(range(20))
    assert set(backend.max_in_flight.values()) == {IN_FLIGHT}  # each worker kept two queued
    assert {w for _, w in got} == {0, 1, 2}
    assert sum(s["units"] for s in sched.stats) == 20
    assert sched.token_steps == 20 * 30 and sched.units_rerun == 0
    assert sched.postfix().startswith("w0 ")


def test_a_lost_unit_runs_again_after_a_back_off():
    clock = Clock()
    backend = FakeBackend(clock, fail={1: "lost"})  # the second submission: worker 1's first
    sched, got = run(backend, 2, units(6), clock)
    assert sorted(b for b, _ in got) == list(range(6))  # nothing missing, nothing twice
    assert sched.units_rerun == 1 and sched.pairs_rerun == 2 and sched.failures == [0, 1]
    lost_batch = backend.sent[1][2]
    assert [b for _, _, b in backend.sent].count(lost_batch) == 2  # sent twice, stored once


def test_a_dead_worker_leaves_its_units_to_the_others():
    clock = Clock()
    backend = FakeBackend(clock, down={0})
    sched, got = run(backend, 2, units(8), clock)
    assert sorted(b for b, _ in got) == list(range(8)) and {w for _, w in got} == {1}
    assert sched.stats[0]["units"] == 0 and sched.failures[0] >= 1


class Restarting(FakeBackend):
    """Worker 0 loses every unit, as a process Ray keeps restarting (never reported dead)."""

    def result(self, ref):
        worker, _ = self.open[ref]
        if worker == 0:
            self.open.pop(ref)
            raise WorkerLost("worker 0 is restarting", dead=False)
        return super().result(ref)


def test_a_worker_unreachable_too_long_is_dropped():
    clock = Clock()
    sched, got = run(Restarting(clock), 2, units(10), clock, give_up_s=5.0)
    assert sorted(b for b, _ in got) == list(range(10)) and {w for _, w in got} == {1}
    assert sched.failures[0] >= 2  # retried with back-offs before it was given up


def test_every_worker_dead_stops_with_their_reasons():
    clock = Clock()
    backend = FakeBackend(clock, down={0, 1})
    with pytest.raises(RuntimeError, match="every Ray worker died.*worker 0.*worker 1"):
        run(backend, 2, units(4), clock)


def test_our_own_error_is_raised_and_the_rest_cancelled():
    clock = Clock()
    backend = FakeBackend(clock, fail={0: "error"})
    with pytest.raises(RuntimeError, match=r"Ray worker 0 failed on batch 0: ValueError"):
        run(backend, 2, units(6), clock)
    assert backend.cancelled and set(backend.cancelled) <= {r for r, _, _ in backend.sent}


def test_an_interrupt_in_the_driver_cancels_what_is_in_flight():
    clock = Clock()
    backend = FakeBackend(clock)
    sched = Scheduler(2, clock=clock.now, sleep=clock.sleep)

    def interrupted(unit, values, worker):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sched.run(backend, units(6), interrupted)
    assert sorted(backend.cancelled) == sorted(backend.open)
