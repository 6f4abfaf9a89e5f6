"""One sweep worker: the body of a Ray actor (:mod:`layerfast.evaluation.ray_pool`).

It loads the model once, builds the executor over the driver's requests with the driver's
options (so its batches are the driver's, checked by :func:`batches_digest`), and then runs
units: one batch for a run of coalitions (:class:`~layerfast.evaluation.partition.Unit`). It
never writes the cache; the driver does. Nothing here imports Ray.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from typing import Any

import numpy as np

from .batching import Batch


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
        load_spec: ``SublayerModel.load_spec`` of the driver's model (how ``lf.load`` made it),
            used when ``hf_model`` is None: the worker loads the same model itself.
        hf_model, tokenizer: the driver's model object and tokenizer, sent through Ray's object
            store, for a model that ``lf.load`` cannot make again (built in memory).
        requests: the driver's requests (:class:`~layerfast.evaluation.requests.Request`).
        executor: "prefix" or "naive"; options: its keyword arguments (batch_tokens, pack,
            memory_budget, vocab_chunk), the driver's resolved values.
        device: "cpu" or "cuda" (the actor sees only its own GPUs); ignored with a device_map.
        threads: torch's CPU threads in this process (None: leave torch's default).
    """

    def __init__(
        self,
        load_spec: dict[str, Any] | None,
        hf_model: Any,
        tokenizer: Any,
        requests: list,
        executor: str,
        options: dict[str, Any],
        device: str,
        threads: int | None,
    ):
        from .. import load
        from .. import threads as thread_count
        from .game import EXECUTORS

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
            model = load(**spec)
        else:
            model = load(hf_model, tokenizer=tokenizer, device=device)
        self.model = model
        self.executor = EXECUTORS[executor](model, requests, **options)
        self.load_seconds = time.perf_counter() - start

    def describe(self) -> dict[str, Any]:
        """Where this worker runs and what it holds, for the driver's checks and report."""
        import torch

        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "device": str(self.model.device),
            "threads": torch.get_num_threads(),
            "fingerprint": self.model.fingerprint(),
            "batches": batches_digest(self.executor.batches),
            "load_seconds": self.load_seconds,
        }

    def pid(self) -> int:
        return os.getpid()

    def run(self, batch: int, masks: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """Batch ``batch`` for bool keep-masks [k, n_players]: float64 [k, requests of the
        batch] (its ``request_index`` order), and {"steps": kept sublayers run, "seconds":
        compute time, "start"/"end": wall-clock times (s since the epoch), "pid"}."""
        before = self.executor.sublayer_evaluations
        began, start = time.time(), time.perf_counter()
        values = self.executor.batch_loglik(self.executor.batches[batch], masks)
        seconds = time.perf_counter() - start
        steps = self.executor.sublayer_evaluations - before
        info = {"steps": float(steps), "seconds": seconds, "start": began, "end": time.time()}
        return values, {**info, "pid": float(os.getpid())}
