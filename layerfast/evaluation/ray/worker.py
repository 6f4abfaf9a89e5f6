"""One sweep worker: the body of a Ray actor (:mod:`layerfast.evaluation.ray.pool`).

Its life: the constructor loads the model once; :meth:`SweepWorker.sizes` answers what "auto"
batch size and memory budget come out on its device (the driver takes the smallest over its
workers, so every worker runs the same batches); :meth:`SweepWorker.setup` builds the executor
over the driver's requests with the driver's options (its batches checked against the driver's
by :func:`batches_digest`); :meth:`SweepWorker.run` runs units: one batch for a run of coalitions
(:class:`~layerfast.evaluation.ray.partition.Unit`). A worker that Ray restarted after its process
died has run only the constructor: ``run`` then builds the executor from the setup the driver
passes with every unit (a reference into Ray's object store, read only in that case). It never
writes the cache; the driver does.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from typing import Any

import numpy as np

from ..batching import Batch
from ..executors import make_executor


def batches_digest(batches: list[Batch]) -> str:
    """A short hash of every batch's tokens, masks, positions and scored targets."""
    h = hashlib.sha256()
    for b in batches:
        for t in (b.input_ids, b.attention_mask, b.position_ids, b.rows, b.positions, b.targets):
            if t is not None:
                h.update(str(tuple(t.shape)).encode())
                h.update(t.cpu().contiguous().numpy().tobytes())
        h.update(np.asarray(b.request_index, np.int64).tobytes())
    return h.hexdigest()[:16]


class SweepWorker:
    """Holds one model replica and runs units of a sweep.

    Args:
        load_spec: how ``lf.load`` should make the model here (``SublayerModel.load_spec`` of
            the driver's model, possibly with the workers' own device or device map), used
            when ``hf_model`` is None.
        hf_model, tokenizer: the driver's model object and tokenizer, sent through Ray's object
            store, for a model that ``lf.load`` cannot make again (built in memory).
        device: "cpu" or "cuda" (the actor sees only its own GPUs); ignored with a device_map.
        threads: torch's CPU threads in this process (None: leave torch's default).
    """

    def __init__(
        self,
        load_spec: dict[str, Any] | None,
        hf_model: Any,
        tokenizer: Any,
        device: str,
        threads: int | None,
    ):
        from ... import threads as thread_count
        from ...models import load

        start = time.perf_counter()
        if threads is not None:
            thread_count.apply(threads)
        if hf_model is None:
            spec = dict(load_spec)
            if spec.get("device_map") is None:
                spec["device"] = device
            else:
                spec.pop("device", None)
                if spec.get("offload_folder"):  # replicas on one host must not share it
                    spec["offload_folder"] = os.path.join(
                        spec["offload_folder"], f"worker-{os.getpid()}"
                    )
            self.model = load(**spec)
        else:
            self.model = load(hf_model, tokenizer=tokenizer, device=device)
        self.executor = None
        self.load_seconds = time.perf_counter() - start

    def sizes(self, batch_tokens: Any, memory_budget: Any, seq_len: int) -> tuple[int, int, str]:
        """:func:`~layerfast.evaluation.sizing.resolve_sizes` on this worker's device."""
        from ..sizing import resolve_sizes

        return resolve_sizes(self.model, batch_tokens, memory_budget, seq_len)

    def setup(self, setup: tuple[list, str, dict[str, Any]]) -> dict[str, Any]:
        """Build the executor from (requests, executor name, its options); returns
        :meth:`describe`."""
        requests, executor, options = setup
        self.executor = make_executor(executor, self.model, requests, options)
        return self.describe()

    def describe(self) -> dict[str, Any]:
        """Where this worker runs and what it holds, for the driver's checks and report."""
        import torch

        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "device": str(self.model.device),
            "threads": torch.get_num_threads(),
            "fingerprint": self.model.fingerprint(),
            "batches": None if self.executor is None else batches_digest(self.executor.batches),
            "load_seconds": self.load_seconds,
        }

    def pid(self) -> int:
        return os.getpid()

    def run(
        self, batch: int, masks: np.ndarray, setup: list | None = None
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Batch ``batch`` for bool keep-masks [k, n_players]: float64 [k, requests of the
        batch] (its ``request_index`` order), and {"steps": kept sublayers run, "token_steps":
        the same weighted by the batch's real tokens, "seconds":
        compute time, "start"/"end": wall-clock times (s since the epoch), "pid"}.

        setup: ``[reference to (requests, executor, options)]``, read only when this worker
        has no executor yet (Ray restarted it)."""
        if self.executor is None:
            if not setup:
                raise RuntimeError("this worker has no executor: call setup() first")
            import ray

            self.setup(ray.get(setup[0]))
        before = self.executor.sublayer_evaluations
        token_before = self.executor.token_sublayer_evaluations
        began, start = time.time(), time.perf_counter()
        values = self.executor.batch_loglik(self.executor.batches[batch], masks)
        seconds = time.perf_counter() - start
        info = {
            "steps": float(self.executor.sublayer_evaluations - before),
            "token_steps": float(self.executor.token_sublayer_evaluations - token_before),
            "seconds": seconds,
            "start": began,
            "end": time.time(),
        }
        return values, {**info, "pid": float(os.getpid())}
