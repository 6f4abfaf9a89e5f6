"""Run a sweep's units on K long-lived Ray actors, each holding one model replica.

The driver (the process that owns the :class:`~layerfast.evaluation.game.Game`) starts a local
Ray cluster or joins one (``ray_address``), creates K :class:`~layerfast.evaluation.worker.
SweepWorker` actors, hands them units (:mod:`layerfast.evaluation.partition`) as they become
free and passes each result to a callback that stores it: only the driver writes the cache.

Faults: an actor whose process dies is restarted by Ray (``max_restarts``) and loads the model
again; the units it had in flight are put back at the front of the queue and run again
(counted in :attr:`RayPool.units_rerun`). An actor that has died more often than it may restart
is dropped; with no actor left the sweep stops with the reasons. An exception raised by our own
code in a worker is not retried: it is raised in the driver with the worker's traceback.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import threads as thread_count
from ..errors import UsageError
from .partition import Unit
from .worker import SweepWorker, batches_digest

IN_FLIGHT = 2  # units queued per actor, so the next starts while the last result travels
MAX_RESTARTS = 3  # per actor
READY_TIMEOUT = 600.0  # seconds for every actor to load its model
INSTALL_HINT = "pip install 'layerfast[ray]'"


def import_ray():
    """The ``ray`` module, or a UsageError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(
            f"workers > 1 (--workers) runs the sweep on Ray, which is not installed: {INSTALL_HINT}"
        ) from None
    return ray


def start_ray(ray, address: str | None, cpus: int) -> bool:
    """Join the cluster at ``address`` or start a local one with ``cpus`` CPUs, unless Ray is
    already initialised in this process. Returns True when this call started it (the pool
    then shuts it down)."""
    if ray.is_initialized():
        return False
    if address is not None and address != "auto":
        check_reachable(address)
    options = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        if address is None:
            ray.init(num_cpus=cpus, **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        where = f"the Ray cluster at {address!r} (--ray-address)" if address else "a local Ray"
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise UsageError(f"cannot start or join {where}: {reason}") from None
    return True


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """A UsageError unless a TCP connection to ``address`` ("host:port" or
    "ray://host:port") opens within ``timeout`` seconds: Ray itself keeps retrying an
    unreachable address for minutes."""
    import socket

    where = address.split("://", 1)[-1]
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray-address {address!r}: expected host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise UsageError(
            f"cannot reach the Ray cluster at {address!r} (--ray-address): {reason}; is "
            "`ray start --head` running there?"
        ) from None


class RayPool:
    """K actors holding replicas of ``model``, running the units of :meth:`run`.

    Args:
        model: the driver's :class:`~layerfast.models.SublayerModel`; workers load it again
            from ``model.load_spec`` (a packaged name or folder) or, for a model built in
            memory, receive its weights through Ray's object store.
        requests, executor, options: what the driver's executor was built from (see
            :class:`~layerfast.evaluation.worker.SweepWorker`).
        batches: the driver's batches; every worker's must hash the same.
        n_workers: actors to start (K).
        ray_address: a running cluster to join ("auto", "ray://host:10001", "host:6379"), or
            None for a local cluster.
        threads: CPU threads per worker (None: the cores here shared out, at least 1).
        gpus_per_worker: GPUs each actor reserves (None: 1 on CUDA, or the GPUs of the model's
            device map; 0 on the CPU).
    """

    def __init__(
        self,
        model,
        requests: list,
        executor: str,
        options: dict[str, Any],
        batches: list,
        n_workers: int,
        ray_address: str | None = None,
        threads: int | None = None,
        gpus_per_worker: float | None = None,
    ):
        ray = import_ray()
        self._ray = ray
        on_cuda = model.device.type == "cuda"
        cores = thread_count.available()
        if threads is None:
            threads = max(1, cores // n_workers) if not on_cuda else 1
        if gpus_per_worker is None:
            gpus_per_worker = _gpus_of(model) if on_cuda else 0
        self.threads = threads
        self._owns_ray = start_ray(ray, ray_address, max(cores, n_workers * threads))
        spec = getattr(model, "load_spec", None)
        from_source = bool(spec) and spec.get("model") is not None
        # held for the pool's life: a restarted actor reads its constructor arguments again
        self._hf_ref = hf_ref = None if from_source else ray.put(model.hf_model)
        actor = ray.remote(SweepWorker).options(
            num_cpus=threads,
            num_gpus=gpus_per_worker,
            max_restarts=MAX_RESTARTS,
            max_task_retries=0,  # the driver requeues a lost unit itself, and counts it
        )
        args = (
            spec if from_source else None,
            hf_ref,
            None if from_source else model.tokenizer,
            requests,
            executor,
            options,
            "cuda" if on_cuda else "cpu",
            None if on_cuda else threads,
        )
        self.actors = [actor.remote(*args) for _ in range(n_workers)]
        self.failures = [0] * n_workers
        self.units_rerun = 0  # units lost with a dead worker and run again
        self.pairs_rerun = 0  # their (coalition, batch) pairs
        self.stats: list[dict[str, float]] = [
            {"units": 0, "pairs": 0, "steps": 0.0, "seconds": 0.0, "wall": 0.0}
            for _ in range(n_workers)
        ]
        # per unit received: batch, rows, worker, compute_s, overhead_s (transfer and
        # scheduling, not the wait behind the worker's previous unit), store_s (the driver's
        # on_result); timestamps are wall clock, so the overhead is exact on one host only
        self.unit_log: list[dict[str, float]] = []
        self.workers = self._ready(model, batches, spec if from_source else None)

    # --- start-up -----------------------------------------------------------------------------
    def _ready(self, model, batches: list, spec) -> list[dict[str, Any]]:
        """Wait for every actor to load its model; check it holds the driver's model and
        batches. Errors name the worker and carry its message."""
        ray = self._ray
        refs = [a.describe.remote() for a in self.actors]
        done, pending = ray.wait(refs, num_returns=len(refs), timeout=READY_TIMEOUT)
        if pending:
            self.close()
            raise UsageError(
                f"only {len(done)} of {len(refs)} Ray workers started within {READY_TIMEOUT:.0f} "
                f"s; the cluster has {ray.cluster_resources()}; each worker asks for "
                f"{self.threads} CPU(s) and the GPUs of one replica: lower --workers"
            )
        info = []
        for i, ref in enumerate(refs):
            try:
                info.append(ray.get(ref))
            except Exception as e:  # noqa: BLE001  (RayActorError or the constructor's error)
                self.close()
                raise RuntimeError(
                    f"Ray worker {i} could not load the model: {_reason(e)}"
                ) from None
        want = (model.fingerprint(), batches_digest(batches))
        for i, w in enumerate(info):
            if (w["fingerprint"], w["batches"]) != want:
                self.close()
                what = "weights" if w["fingerprint"] != want[0] else "batches"
                source = f" loaded from {spec['model']!r}" if spec else ""
                raise RuntimeError(
                    f"Ray worker {i} (pid {w['pid']} on {w['host']}){source} holds other "
                    f"{what} than the driver's model; was the model changed after lf.load, or "
                    "does that host have another layerfast or transformers version?"
                )
        return info

    # --- the sweep ----------------------------------------------------------------------------
    def run(
        self,
        units: list[Unit],
        masks: np.ndarray,
        on_result: Callable[[Unit, np.ndarray, int], None],
        on_progress: Callable[[str], None] | None = None,
    ) -> None:
        """Run ``units`` (bool keep-masks [m, n_players] indexed by ``unit.rows``) on the
        actors, largest first as given; ``on_result(unit, values float64 [k, R_b], worker
        index)`` is called in the driver as each one finishes. ``on_progress(postfix)`` gets
        a line of per-worker throughput after each result."""
        ray = self._ray
        queue = deque(units)
        alive = set(range(len(self.actors)))
        in_flight: dict[Any, tuple[int, Unit, float]] = {}

        last_end = [0.0] * len(self.actors)  # wall time the worker's last unit ended

        def submit(a: int) -> None:
            unit = queue.popleft()
            ref = self.actors[a].run.remote(unit.batch, masks[unit.rows])
            in_flight[ref] = (a, unit, time.time())

        for _ in range(IN_FLIGHT):
            for a in sorted(alive):
                if queue:
                    submit(a)
        errors: list[str] = []
        while in_flight:
            [ref], _ = ray.wait(list(in_flight), num_returns=1)
            a, unit, sent = in_flight.pop(ref)
            try:
                values, info = ray.get(ref)
            except ray.exceptions.RayTaskError as e:  # our own code raised in the worker
                self._cancel(in_flight)
                raise RuntimeError(f"Ray worker {a} failed on batch {unit.batch}: {e}") from None
            except ray.exceptions.RayActorError as e:  # the worker process died
                queue.appendleft(unit)
                self.units_rerun += 1
                self.pairs_rerun += len(unit.rows)
                self.failures[a] += 1
                # each death fails the units it had in flight; past its restarts Ray fails
                # every call at once
                if self.failures[a] > (MAX_RESTARTS + 1) * IN_FLIGHT and a in alive:
                    alive.discard(a)
                    errors.append(f"worker {a}: {_reason(e)}")
                if not alive:
                    self._cancel(in_flight)
                    raise RuntimeError(
                        "every Ray worker died more often than it may restart: " + "; ".join(errors)
                    ) from None
                if a in alive:
                    submit(a)  # Ray restarts it; the call waits for the new process
                continue
            stats = self.stats[a]
            stats["units"] += 1
            stats["pairs"] += len(unit.rows)
            stats["steps"] += info["steps"]
            stats["seconds"] += info["seconds"]
            received = time.time()
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
            if queue:
                submit(a)
            if on_progress is not None:
                on_progress(self.postfix())

    def postfix(self) -> str:
        """Per-worker throughput in coalition-batches per second of compute, e.g. 'w0 3.1/s'."""
        parts = []
        for i, s in enumerate(self.stats):
            rate = s["pairs"] / s["seconds"] if s["seconds"] > 0 else 0.0
            parts.append(f"w{i} {rate:.1f}/s")
        return " ".join(parts)

    def pids(self) -> list[int]:
        """The actors' current process ids (a restarted actor has a new one)."""
        return [int(p) for p in self._ray.get([a.pid.remote() for a in self.actors])]

    def _cancel(self, in_flight: dict) -> None:
        for ref in in_flight:
            try:
                self._ray.cancel(ref)
            except Exception:  # noqa: BLE001,S110  (already finished or its actor is gone)
                pass
        in_flight.clear()

    def close(self) -> None:
        """Stop the actors, and the local cluster if this pool started it."""
        ray = self._ray
        for a in getattr(self, "actors", []):
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001,S110  (already gone)
                pass
        self.actors = []
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False


def _gpus_of(model) -> float:
    """GPUs one replica of ``model`` spans: those named in its device map, else 1."""
    device_map = getattr(model.hf_model, "hf_device_map", None) or {}
    gpus = {str(d) for d in device_map.values() if str(d) not in ("cpu", "disk", "meta")}
    return float(max(1, len(gpus)))


def _reason(error: BaseException) -> str:
    """The useful line(s) of a Ray error: the worker's own exception when there is one."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    text = str(error).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    tail = [ln for ln in lines if "Error" in ln or "error" in ln]
    return (tail[-1] if tail else (lines[-1] if lines else type(error).__name__))[:500]
