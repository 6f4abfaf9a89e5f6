"""Run a sweep's units on K long-lived Ray actors, each holding one model replica.

The driver (the process that owns the :class:`~layerfast.evaluation.game.Game`) starts a local
Ray cluster or joins one (``ray_address``), creates K :class:`~layerfast.evaluation.ray.worker.
SweepWorker` actors, hands them units (:mod:`layerfast.evaluation.ray.partition`) as they become
free and passes each result to a callback that stores it: only the driver writes the cache.

Faults: an actor whose process dies is restarted by Ray (``max_restarts``) and loads the model
again; the units it had in flight are put back at the front of the queue and run again
(counted in :attr:`RayPool.units_rerun`). An actor that has died more often than it may restart
is dropped; with no actor left the sweep stops with the reasons. An exception raised by our own
code in a worker is not retried: it is raised in the driver with the worker's traceback.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import numpy as np

from ... import threads as thread_count
from ...errors import UsageError
from .partition import IN_FLIGHT, Unit
from .worker import SweepWorker, batches_digest

MAX_RESTARTS = 3  # per actor
RETRY_S = 0.5  # first wait before sending units to an actor whose call failed (doubles)
RETRY_MAX_S = 30.0
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

    Use: ``pool = RayPool(model, K)`` (the actors load the model), ``pool.sizes(...)`` (the
    batch size every worker can take), ``pool.setup(requests, ...)`` (each builds its executor),
    then :meth:`run` for each set of units, and :meth:`close`.

    Args:
        model: the driver's :class:`~layerfast.models.SublayerModel`. Workers load it again
            from ``model.load_spec`` (a packaged name or folder, with the device or device map
            the spec names) or, for a model built in memory, receive its weights through Ray's
            object store and put them on the driver model's device type.
        n_workers: actors to start (K).
        ray_address: a running cluster to join ("auto", "ray://host:10001", "host:6379"), or
            None for a local cluster (or the one this process already started).
        threads: CPU threads per worker (None: the cores here shared out, at least 1).
        gpus_per_worker: GPUs each actor reserves (None: on CUDA the GPUs of the spec's device
            map or max_memory, else 1; 0 on the CPU).
    """

    def __init__(
        self,
        model,
        n_workers: int,
        ray_address: str | None = None,
        threads: int | None = None,
        gpus_per_worker: float | None = None,
    ):
        ray = import_ray()
        self._ray = ray
        self.actors: list = []
        self._owns_ray = False
        spec = getattr(model, "load_spec", None)
        self.spec = spec if spec and spec.get("model") is not None else None
        self.device_type = worker_device_type(model, self.spec)
        on_cuda = self.device_type == "cuda"
        cores = thread_count.available()
        if threads is None:
            threads = 1 if on_cuda else max(1, cores // n_workers)
        if gpus_per_worker is None:
            gpus_per_worker = gpus_of(model, self.spec) if on_cuda else 0
        self.threads, self.gpus_per_worker = threads, gpus_per_worker
        self._owns_ray = start_ray(ray, ray_address, max(cores, n_workers * threads))
        # held for the pool's life: a restarted actor reads its constructor arguments again
        self._hf_ref = None if self.spec else ray.put(model.hf_model)
        actor = ray.remote(SweepWorker).options(
            num_cpus=threads,
            num_gpus=gpus_per_worker,
            max_restarts=MAX_RESTARTS,
            max_task_retries=0,  # the driver requeues a lost unit itself, and counts it
        )
        args = (
            self.spec,
            self._hf_ref,
            None if self.spec else model.tokenizer,
            self.device_type,
            None if on_cuda else threads,
        )
        self.actors = [actor.remote(*args) for _ in range(n_workers)]
        self._setup_ref = None
        self.failures = [0] * n_workers  # units lost per actor (its process died or restarted)
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
        self.workers = self._ready(model)

    # --- start-up -----------------------------------------------------------------------------
    def _gather(self, refs: list, what: str, timeout: float = READY_TIMEOUT) -> list:
        """ray.get of one call per actor; errors name the worker and carry its message, and
        stop the pool."""
        ray = self._ray
        done, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        if pending:
            self.close()
            raise UsageError(
                f"only {len(done)} of {len(refs)} Ray workers {what} within {timeout:.0f} s; the "
                f"cluster has {ray.cluster_resources()}; each worker asks for {self.threads} "
                f"CPU(s) and {self.gpus_per_worker} GPU(s): lower --workers"
            )
        out = []
        for i, ref in enumerate(refs):
            try:
                out.append(ray.get(ref))
            except Exception as e:  # noqa: BLE001  (RayActorError or the worker's own error)
                self.close()
                raise RuntimeError(f"Ray worker {i} could not {what}: {_reason(e)}") from None
        return out

    def _ready(self, model) -> list[dict[str, Any]]:
        """Wait for every actor to load its model; check it holds the driver's weights."""
        info = self._gather([a.describe.remote() for a in self.actors], "load the model")
        want = model.fingerprint()
        for i, w in enumerate(info):
            if w["fingerprint"] != want:
                self.close()
                source = f" loaded from {self.spec['model']!r}" if self.spec else ""
                raise RuntimeError(
                    f"Ray worker {i} (pid {w['pid']} on {w['host']}){source} holds other "
                    "weights than the driver's model; was the model changed after lf.load, or "
                    "does that host have another layerfast or transformers version?"
                )
        return info

    def sizes(self, batch_tokens: Any, memory_budget: Any, seq_len: int) -> tuple[int, int, str]:
        """(batch_tokens, memory_budget, how) that every worker can take: "auto" resolved on
        each worker's device, the smallest kept (all must run the same batches)."""
        found = self._gather(
            [a.sizes.remote(batch_tokens, memory_budget, seq_len) for a in self.actors],
            "size its batches",
        )
        tokens, budget, how = min(found, key=lambda f: (f[0], f[1]))
        budget = min(f[1] for f in found)
        return tokens, budget, f"{how} (the smallest of {len(found)} Ray workers)"

    def setup(self, requests: list, executor: str, options: dict[str, Any], batches: list) -> None:
        """Every worker builds its executor; its batches must hash as the driver's do."""
        self._setup_ref = self._ray.put((requests, executor, options))
        info = self._gather(
            [a.setup.remote(self._setup_ref) for a in self.actors], "build its batches"
        )
        want = batches_digest(batches)
        for i, w in enumerate(info):
            if w["batches"] != want:
                self.close()
                raise RuntimeError(
                    f"Ray worker {i} (pid {w['pid']} on {w['host']}) built other batches than "
                    "the driver from the same requests: does that host have another layerfast, "
                    "torch or transformers version?"
                )
        self.workers = info

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
        # an actor Ray is restarting fails calls at once: wait before sending it more
        not_before = [0.0] * len(self.actors)
        down_since: dict[int, float] = {}  # actor -> when it first failed in a row
        tries = [0] * len(self.actors)  # failed calls in a row, for the wait
        errors: list[str] = []

        def submit(a: int) -> None:
            unit = queue.popleft()
            ref = self.actors[a].run.remote(unit.batch, masks[unit.rows], [self._setup_ref])
            in_flight[ref] = (a, unit, time.time())

        def top_up() -> None:
            """Give every live, reachable actor units until it has IN_FLIGHT or the queue is
            empty."""
            now = time.time()
            busy = Counter(a for a, _, _ in in_flight.values())
            for _ in range(IN_FLIGHT):
                for a in sorted(alive):
                    if queue and busy[a] < IN_FLIGHT and now >= not_before[a]:
                        submit(a)
                        busy[a] += 1

        def lost(a: int, unit: Unit, error: BaseException) -> None:
            """The unit died with its actor: put it back; drop an actor Ray reports dead for
            good, or one that stays unreachable past READY_TIMEOUT."""
            queue.appendleft(unit)
            self.units_rerun += 1
            self.pairs_rerun += len(unit.rows)
            self.failures[a] += 1
            now = time.time()
            first = down_since.setdefault(a, now)
            dead = isinstance(error, ray.exceptions.ActorDiedError)
            if a in alive and (dead or now - first > READY_TIMEOUT):
                alive.discard(a)
                errors.append(f"worker {a}: {_reason(error)}")
            tries[a] += 1
            not_before[a] = now + min(RETRY_MAX_S, RETRY_S * 2 ** min(tries[a] - 1, 10))

        top_up()
        while in_flight or queue:
            if not alive:
                self._cancel(in_flight)
                raise RuntimeError(
                    "every Ray worker died more often than it may restart: " + "; ".join(errors)
                )
            if not in_flight:  # every live actor is restarting: wait for the first to be due
                time.sleep(max(0.0, min(not_before[a] for a in alive) - time.time()))
                top_up()
                continue
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=RETRY_S)
            if not ready:
                top_up()
                continue
            ref = ready[0]
            a, unit, sent = in_flight.pop(ref)
            try:
                values, info = ray.get(ref)
            except ray.exceptions.RayTaskError as e:  # our own code raised in the worker
                self._cancel(in_flight)
                raise RuntimeError(f"Ray worker {a} failed on batch {unit.batch}: {e}") from None
            except ray.exceptions.RayActorError as e:  # the worker process died or restarts
                lost(a, unit, e)
                top_up()
                continue
            down_since.pop(a, None)
            tries[a] = 0
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
            top_up()
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
        ray = self._ray
        deadline = time.time() + READY_TIMEOUT
        while True:
            try:
                return [int(p) for p in ray.get([a.pid.remote() for a in self.actors])]
            except ray.exceptions.ActorUnavailableError:  # one is restarting: ask again
                if time.time() > deadline:
                    raise
                time.sleep(RETRY_S)

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


def worker_device_type(model, spec: dict | None) -> str:
    """ "cuda" or "cpu": where the workers run ``model``. With a load spec, where the spec puts
    it (a device map with a GPU, or "auto" where this process sees CUDA); else where the
    driver's model is."""
    if spec is None:
        return model.device.type
    device_map = spec.get("device_map")
    if device_map is not None:
        if isinstance(device_map, dict):
            return "cuda" if any(_is_gpu(d) for d in device_map.values()) else "cpu"
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec.get("device"):
        import torch

        return torch.device(spec["device"]).type
    return model.device.type


def gpus_of(model, spec: dict | None) -> float:
    """GPUs one replica spans: the GPUs of the spec's device map or max_memory, or of the
    driver model's device map, else 1."""
    for mapping in (
        (spec or {}).get("device_map"),
        (spec or {}).get("max_memory"),
        getattr(model.hf_model, "hf_device_map", None),
    ):
        if isinstance(mapping, dict):
            values = mapping.values() if mapping is not (spec or {}).get("max_memory") else mapping
            gpus = {str(d) for d in values if _is_gpu(d)}
            if gpus:
                return float(len(gpus))
    return 1.0


def _is_gpu(where: Any) -> bool:
    return (
        (isinstance(where, int) and not isinstance(where, bool))
        or str(where).startswith("cuda")
        or str(where).isdigit()
    )


def _reason(error: BaseException) -> str:
    """The useful line(s) of a Ray error: the worker's own exception when there is one."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    text = str(error).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    tail = [ln for ln in lines if "Error" in ln or "error" in ln]
    return (tail[-1] if tail else (lines[-1] if lines else type(error).__name__))[:500]
