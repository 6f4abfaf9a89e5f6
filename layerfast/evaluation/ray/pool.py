"""Run a sweep's units on K long-lived Ray actors, each holding one model replica.

The driver (the process that owns the :class:`~layerfast.evaluation.game.Game`) starts a local
Ray cluster or joins one (``ray_address``), creates K :class:`~layerfast.evaluation.ray.worker.
SweepWorker` actors, hands them units (:mod:`layerfast.evaluation.ray.partition`) as they become
free and passes each result to a callback that stores it: only the driver writes the cache.

Start-up: before any actor is made, what the K actors ask for (CPUs, GPUs) is checked against
the cluster's nodes (:func:`check_resources`), since Ray keeps an actor it can never place
pending forever; actors that could be placed but do not start (the resources are busy) fail
after :data:`READY_TIMEOUT` seconds, naming the workers still pending.

Faults: an actor whose process dies is restarted by Ray (``max_restarts``) and loads the model
again; the units it had in flight are put back at the front of the queue and run again
(counted in :attr:`RayPool.units_rerun`). An actor that has died more often than it may restart
is dropped; with no actor left the sweep stops with the reasons. An exception raised by our own
code in a worker is not retried: it is raised in the driver with the worker's traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ... import threads as thread_count
from ...errors import UsageError
from ...models.placement import gpus_of, worker_device_type
from .cluster import import_ray, reason, start_ray
from .partition import IN_FLIGHT, Unit
from .schedule import RETRY_S, Scheduler, WorkerError, WorkerLost
from .worker import SweepWorker, batches_digest

__all__ = [
    "RayPool",
    "IN_FLIGHT",
    "MAX_RESTARTS",
    "READY_TIMEOUT",
    "SweepWorker",
    "check_resources",
]

MAX_RESTARTS = 3  # per actor
READY_TIMEOUT = 600.0  # seconds for every actor to load its model


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
        try:  # an error or Ctrl-C while the workers start leaves no actor or local cluster
            self._start(model, n_workers, threads, gpus_per_worker, on_cuda)
        except BaseException:
            self.close()
            raise

    def _start(self, model, n_workers: int, threads: int, gpus: float, on_cuda: bool) -> None:
        """Check the cluster can place the workers, start them and wait until they are ready."""
        ray = self._ray
        # Ray would keep actors it can never place pending forever, without a word
        check_resources(ray, n_workers, threads, gpus, self.device_type)
        # held for the pool's life: a restarted actor reads its constructor arguments again
        self._hf_ref = None if self.spec else ray.put(model.hf_model)
        actor = ray.remote(SweepWorker).options(
            num_cpus=threads,
            num_gpus=gpus,
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
        # statistics of every unit run; timestamps are wall clock, so the overhead it reports
        # is exact on one host only
        self.scheduler = Scheduler(n_workers, give_up_s=READY_TIMEOUT)
        self.workers = self._ready(model)

    # --- start-up -----------------------------------------------------------------------------
    def _gather(self, refs: list, what: str, timeout: float | None = None) -> list:
        """ray.get of one call per actor (waiting at most ``timeout`` s, default
        :data:`READY_TIMEOUT`); errors name the worker and carry its message, and stop the
        pool."""
        ray = self._ray
        timeout = READY_TIMEOUT if timeout is None else timeout
        done, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        if pending:
            waiting = set(pending)
            late = ", ".join(str(i) for i, ref in enumerate(refs) if ref in waiting)
            free, total = _count(ray.available_resources()), _count(ray.cluster_resources())
            self.close()
            raise UsageError(
                f"only {len(done)} of {len(refs)} Ray workers could {what} within {timeout:.0f} "
                f"s; still pending: worker(s) {late}, each asking for "
                f"{_ask(self.threads, self.gpus_per_worker)}; the Ray cluster has {free} free "
                f"of {total} (other jobs may hold the rest): lower --workers, free the "
                "cluster, or see `ray status`"
            )
        out = []
        for i, ref in enumerate(refs):
            try:
                out.append(ray.get(ref))
            except Exception as e:  # noqa: BLE001  (RayActorError or the worker's own error)
                self.close()
                raise RuntimeError(f"Ray worker {i} could not {what}: {reason(e)}") from None
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
        a line of per-worker throughput after each result. The loop is
        :class:`~.schedule.Scheduler`'s."""
        self.scheduler.run(_RayBackend(self, masks), units, on_result, on_progress)

    def postfix(self) -> str:
        """Per-worker throughput in coalition-batches per second of compute, e.g. 'w0 3.1/s'."""
        return self.scheduler.postfix()

    @property
    def stats(self) -> list[dict[str, float]]:
        """Per worker: units, (coalition, batch) pairs, steps, token_steps, seconds, wall."""
        return self.scheduler.stats

    @property
    def failures(self) -> list[int]:
        return self.scheduler.failures

    @property
    def units_rerun(self) -> int:
        return self.scheduler.units_rerun

    @property
    def pairs_rerun(self) -> int:
        return self.scheduler.pairs_rerun

    @property
    def unit_log(self) -> list[dict[str, float]]:
        return self.scheduler.unit_log

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


def check_resources(
    ray, n_workers: int, cpus: float, gpus: float, device_type: str = "cpu"
) -> None:
    """A UsageError at once when the Ray cluster can never place ``n_workers`` actors of
    ``cpus`` CPUs and ``gpus`` GPUs each (Ray would keep them pending forever): an actor needs
    all it asks for on one alive node, so a node takes ``min over resources of floor(has /
    asks)`` of them. Resources that exist but are busy are not counted against it (they may
    come free: :meth:`RayPool._gather` times out on those)."""
    ask = {k: float(v) for k, v in (("CPU", cpus), ("GPU", gpus)) if v and v > 0}
    if not ask:
        return
    nodes = [n.get("Resources") or {} for n in ray.nodes() if n.get("Alive", True)]
    nodes = nodes or [ray.cluster_resources()]
    room = sum(min(int(node.get(k, 0.0) / v + 1e-9) for k, v in ask.items()) for node in nodes)
    if room >= n_workers:
        return
    total = ray.cluster_resources()
    short = [k for k, v in ask.items() if total.get(k, 0.0) < n_workers * v] or list(ask)
    if "GPU" in short and not total.get("GPU"):
        advice = (
            "leave out --gpus-per-worker (gpus_per_worker=None): the model runs on the CPU here"
            if device_type == "cpu"
            else "use a Ray cluster with GPUs (--ray-address) or run without --workers"
        )
    elif "GPU" in short:
        advice = "use fewer --workers or a smaller --gpus-per-worker"
    else:
        advice = "use fewer --workers or fewer --threads per worker (threads_per_worker=)"
    where = f" on {len(nodes)} nodes" if len(nodes) > 1 else ""
    raise UsageError(
        f"{n_workers} Ray workers (--workers) ask for {_ask(cpus, gpus)} each, and the Ray "
        f"cluster has {_count(total)}{where}: room for {room}; {advice}"
    )


def _ask(cpus: float, gpus: float) -> str:
    """``"1 CPU and 1 GPU"``: what one worker asks for."""
    return f"{_n(cpus)} CPU{'s' * (cpus != 1)} and {_n(gpus)} GPU{'s' * (gpus != 1)}"


def _count(resources: dict) -> str:
    """``"2 CPUs and 0 GPUs"`` of a Ray resources dict."""
    return _ask(resources.get("CPU", 0.0), resources.get("GPU", 0.0))


def _n(x: float) -> str:
    return f"{x:g}"


class _RayBackend:
    """:class:`~.schedule.Backend` over the pool's actors: a unit runs as ``actor.run`` on its
    rows of ``masks``; Ray's errors become :class:`WorkerError` (our code raised) or
    :class:`WorkerLost` (the process died or is restarting; ``dead`` once Ray gives up)."""

    def __init__(self, pool: RayPool, masks: np.ndarray):
        self.pool, self.masks, self.ray = pool, masks, pool._ray

    def submit(self, worker: int, unit: Unit) -> Any:
        actor = self.pool.actors[worker]
        return actor.run.remote(unit.batch, self.masks[unit.rows], [self.pool._setup_ref])

    def wait(self, refs: list, timeout: float) -> list:
        return self.ray.wait(list(refs), num_returns=1, timeout=timeout)[0]

    def result(self, ref: Any) -> tuple[np.ndarray, dict[str, float]]:
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(ref)
        except exceptions.RayTaskError as e:  # our own code raised in the worker
            raise WorkerError(str(e)) from None
        except exceptions.RayActorError as e:  # the worker process died or restarts
            raise WorkerLost(reason(e), dead=isinstance(e, exceptions.ActorDiedError)) from None

    def cancel(self, refs: list) -> None:
        for ref in refs:
            try:
                self.ray.cancel(ref)
            except Exception:  # noqa: BLE001,S110  (already finished or its actor is gone)
                pass
