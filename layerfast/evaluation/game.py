"""The Game: a callable from coalition masks to utilities, on a real model and task.

    game = lf.Game(model, task, utility="acc_norm")
    u = game(masks)   # masks: bool [m, n_players], True = kept -> float64 [m]

Every evaluated coalition's per-request log-likelihoods are memoised in memory and, with
``cache=``, in SQLite on disk, so repeated coalitions are never recomputed. Each forward batch's
results are stored as soon as that batch is done, so a killed sweep resumes where it stopped,
having lost at most one batch per coalition in flight.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..coalitions import as_masks, coalition_keys, masks_from_keys
from ..errors import UsageError, warn
from ..models import SublayerModel
from ..progress import progress as progress_bar
from ..tasks import Task
from ..tasks.requests import build_requests, model_max_length, requests_fingerprint
from ..tasks.scoring import scorer_for
from .cache import UtilityCache
from .naive_executor import NaiveExecutor
from .players import choose_players
from .prefix_executor import PrefixExecutor, trie_order
from .sizing import AUTO, longest_row, resolve_sizes

EXECUTORS = {"prefix": PrefixExecutor, "naive": NaiveExecutor}


class Game:
    """v(S) for coalitions S of a model's sublayers on a task.

    Args:
        model: a :class:`SublayerModel` (see ``lf.load``).
        task: a :class:`Task` (see ``lf.tasks.load``), or a task that brings its own requests
            and scorer (methods ``requests(tokenizer, max_length)`` and ``scorer()``, e.g. an
            ``lm_eval:`` task, :class:`~layerfast.bridges.lm_eval_tasks.HarnessTask`).
        utility: "acc" | "acc_norm" | "acc_bytes" | "logprob" | "margin" for a :class:`Task`;
            a metric of the task (``task.utilities``) for an ``lm_eval:`` task. None: the
            task's default (acc_norm; for an ``lm_eval:`` task acc_norm if it has it, else acc).
        executor: "prefix" (shares the hidden states of common prefixes; bit-identical to the
            reference) or "naive" (the reference: every coalition from scratch).
        cache: None (memory only), True (the user cache file) or a path to an SQLite file.
        batch_tokens: padded tokens (B x T) of one forward batch, or "auto" / None: 2048 on
            the CPU, on CUDA chosen from the device's free memory and the model's shape
            (:mod:`layerfast.evaluation.sizing`). Part of the cache key.
        memory_budget: bytes of residual states the prefix executor keeps per batch, or "auto" /
            None: 1 GiB on the CPU, on CUDA what the forward leaves of the free memory. Not in
            the cache key (a recomputed state is the same state).
        max_length: longest request in tokens; longer ones are left-truncated as the harness
            does, with one warning counting them (``truncation``). None: the model's own limit
            (:func:`~layerfast.tasks.requests.model_max_length`).
        progress: show a progress bar counting coalitions.
        pack: share each item's context across its choices (one row per item, see
            :mod:`layerfast.evaluation.batching`); turned off, with the reason in ``packing_note``,
            where it would not be exact (sliding-window attention over long inputs, flash
            attention).
        chunk: coalitions evaluated together, batch by batch (more shares more prefixes; each
            finished batch of a chunk is written to the cache at once, so a kill loses at most
            one batch of forward work per coalition of the chunk in flight).
        workers: None or 1: evaluate in this process. K > 1: on K Ray actors
            (:mod:`layerfast.evaluation.ray.pool`, ``pip install 'layerfast[ray]'``), started
            here, each loading the model once (as ``model.load_spec`` says, which may name
            another device or a device map than the driver's copy; or through Ray's object
            store for a model built in memory), on one GPU each (or the GPUs of its device
            map) or on a share of the CPU cores. "auto" sizes are resolved on the workers
            (the smallest kept). The missing (coalition, batch) pairs are cut into units
            that keep prefix sharing (:mod:`layerfast.evaluation.ray.partition`); only this
            process writes the cache, as each unit arrives. Results equal the in-process ones
            (bit for bit at the same thread count). Call :meth:`close` (or use ``with``) to
            stop the actors.
        ray_address: with ``workers``: a Ray cluster to join (e.g. "auto" or "host:6379");
            None starts a local one (or uses the one this process already started).
        threads_per_worker: with ``workers`` on the CPU: torch threads per actor (None: the
            cores here shared out).
        gpus_per_worker: with ``workers`` on CUDA: GPUs per actor (None: those of the load
            spec's device map or max_memory, else 1).
        players: the players, a subset of the unit's names (``attn0, mlp0, ...``, or
            ``block0, ...`` with ``unit="block"``), as a list or a comma-separated string; the
            other sublayers are always kept. None: every one.
        unit: "sublayer" (a player is one sublayer) or "block" (both sublayers of a block).
            Masks given to the game are over its players; a coalition is evaluated as the model
            keep-mask with the absent players' sublayers off
            (:mod:`layerfast.evaluation.players`), so sub-games share the full game's cache.

    Attributes set here: ``requests``, ``truncation`` ({"max_length", "limit_source",
    "n_truncated", "n_requests"}), ``sizing`` ({"batch_tokens", "memory_budget", "how"}: the
    values used and how they were chosen), ``packing_note``, ``cache_key`` and the counters
    ``n_forward`` (coalitions this game ran at least one batch of) and ``n_batches_run``
    (coalition-batches it ran; the rest came from the memo or the cache).
    """

    def __init__(
        self,
        model: SublayerModel,
        task: Task,
        utility: str | None = None,
        executor: str = "prefix",
        cache: bool | str | Path | None = None,
        batch_tokens: int | str | None = AUTO,
        max_length: int | None = None,
        progress: bool = True,
        chunk: int = 64,
        pack: bool = True,
        memory_budget: int | str | None = AUTO,
        workers: int | None = None,
        ray_address: str | None = None,
        threads_per_worker: int | None = None,
        gpus_per_worker: float | None = None,
        players: Sequence[str] | str | None = None,
        unit: str = "sublayer",
    ):
        if not isinstance(model, SublayerModel):
            raise TypeError(
                f"model must be a SublayerModel (use lf.load), got {type(model).__name__}"
            )
        if executor not in EXECUTORS:
            raise UsageError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
        if max_length is not None and (
            isinstance(max_length, bool) or int(max_length) != max_length or max_length < 1
        ):
            raise UsageError(f"max_length must be a whole number >= 1, got {max_length!r}")
        if chunk < 1:
            raise UsageError(f"chunk must be >= 1, got {chunk}")
        workers = _check_workers(workers, ray_address, threads_per_worker, gpus_per_worker)
        self.player_set = choose_players(model, players, unit)
        self.model = model
        self.task = task
        self.scorer = scorer_for(task)
        self.utility = self.scorer.check(utility)
        self.requests, self.truncation = _requests(model, task, max_length)
        self.workers = workers
        # the RayPool of `workers` (None in this process); a dict shared with with_utility()
        self._ray = {"pool": None}
        pool = None
        if workers is not None:
            from .ray.pool import RayPool

            pool = self._ray["pool"] = RayPool(
                model, workers, ray_address, threads_per_worker, gpus_per_worker
            )
        try:
            seq_len = longest_row(self.requests, pack)
            batch_tokens, memory_budget, how = (
                resolve_sizes(model, batch_tokens, memory_budget, seq_len)
                if pool is None
                else pool.sizes(batch_tokens, memory_budget, seq_len)
            )
            self.sizing = {"batch_tokens": batch_tokens, "memory_budget": memory_budget, "how": how}
            budget = {"memory_budget": memory_budget} if executor == "prefix" else {}
            self.executor_options = {"batch_tokens": batch_tokens, "pack": pack, **budget}
            self.executor = EXECUTORS[executor](model, self.requests, **self.executor_options)
            if pool is not None:
                pool.setup(self.requests, executor, self.executor_options, self.executor.batches)
        except BaseException:
            self.close()
            raise
        self.packing_note = self.executor.packing_note
        self.progress = progress
        self.chunk = chunk
        self.players = list(self.player_set.names)
        self.n_players = len(self.players)
        self._memo: dict[str, np.ndarray] = {}
        self._cache = (
            None
            if cache is None or cache is False
            else UtilityCache(None if cache is True else cache)
        )
        device_type = model.device.type if pool is None else pool.device_type
        self.cache_key = self._key = _cache_key(self, batch_tokens, device_type)
        if self._cache is not None:
            _warn_other_batch_tokens(self._cache, self._key, batch_tokens)
        self.n_forward = 0  # coalitions actually run by this game (not served from a cache)
        self.n_batches_run = 0  # (coalition, batch) pairs actually run by this game

    @property
    def pool(self):
        """The :class:`~layerfast.evaluation.ray.pool.RayPool` of ``workers`` (None in this
        process, or once closed)."""
        return self._ray["pool"]

    def close(self) -> None:
        """Stop the Ray workers (and the local Ray cluster this game started), if any."""
        if self._ray["pool"] is not None:
            self._ray["pool"].close()
            self._ray["pool"] = None

    def __enter__(self) -> Game:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def chance(self) -> float | None:
        """Utility of a uniform random guess (accuracy utilities only; None for smooth ones)."""
        return self.scorer.chance(self.utility)

    def with_utility(self, utility: str) -> Game:
        """The same game (sharing its memo and cache) scored by another utility."""
        other = object.__new__(Game)
        other.__dict__.update(self.__dict__)
        other.utility = self.scorer.check(utility)
        return other

    # --- evaluation ----------------------------------------------------------------------------
    def check_masks(self, masks) -> np.ndarray:
        """``masks`` as bool [m, n_players] (the game's players); see
        :func:`layerfast.coalitions.as_masks`."""
        return as_masks(masks, self.n_players, players=self.players)

    def loglik(self, masks) -> np.ndarray:
        """Per-request summed log-likelihoods, float64 [m, n_requests]."""
        arr = self.player_set.expand(self.check_masks(masks))  # model keep-masks
        keys = coalition_keys(arr)
        missing = [k for k in dict.fromkeys(keys) if k not in self._memo]
        if missing and self._cache is not None:
            self._memo.update(self._cache.get(self._key, missing))
            missing = [k for k in missing if k not in self._memo]
        if missing:
            if self.workers is None:
                self._evaluate(missing)
            else:
                self._evaluate_on_workers(missing)
        return (
            np.stack([self._memo[k] for k in keys]) if keys else np.zeros((0, len(self.requests)))
        )

    def _evaluate(self, keys: list[str]) -> None:
        """Run the coalitions ``keys`` (none finished anywhere) in trie-ordered chunks, resuming
        from the per-batch pieces the cache holds."""
        n_batches = max(1, len(self.executor.batches))
        stored = self._cache.get_partials(self._key, keys) if self._cache is not None else {}
        masks = masks_from_keys(keys, self.model.n_players)
        order = trie_order(masks)  # neighbours share prefixes
        masks, keys = masks[order], [keys[i] for i in order]
        bar = _progress(len(keys), self.progress and len(keys) > 1)
        tick = None
        if bar is not None:
            bar.update(sum(len(v) for v in stored.values()) / n_batches)
            tick = lambda k: bar.update(k / n_batches)  # noqa: E731
        for start in range(0, len(keys), self.chunk):
            stop = start + self.chunk
            self._evaluate_chunk(masks[start:stop], keys[start:stop], stored, tick)
        if bar is not None:
            bar.close()

    def _evaluate_chunk(self, masks: np.ndarray, keys: list[str], stored, tick) -> None:
        """Every batch of bool masks [m, n_players] not in ``stored`` (mask -> {batch: values}),
        batches outermost; each finished batch is stored in one transaction, and the finished
        rows (assembled with the stored pieces) in one more."""
        batches = self.executor.batches
        rows, need = self._assemble(keys, stored)
        run = np.flatnonzero(need.any(axis=1))

        def on_batch(b: int, computed: np.ndarray, values: np.ndarray) -> None:
            idx = run[computed]
            rows[np.ix_(idx, batches[b].request_index)] = values
            need[idx, b] = False
            self.n_batches_run += len(idx)
            if self._cache is not None:
                self._cache.put_partials(self._key, b, [(keys[i], v) for i, v in zip(idx, values)])

        if len(run):
            self.executor.loglik_many(masks[run], tick=tick, need=need[run], on_batch=on_batch)
            self.n_forward += len(run)
        if need.any():
            raise RuntimeError("the executor skipped a batch it was asked for")
        self._memo.update(zip(keys, rows))
        if self._cache is not None:
            self._cache.put_many(self._key, zip(keys, rows))

    def _evaluate_on_workers(self, keys: list[str]) -> None:
        """Run the coalitions ``keys`` on the Ray workers: the (coalition, batch) pairs the
        cache lacks are cut into units (:func:`~layerfast.evaluation.ray.partition.plan`), and each
        unit's result is stored here as it arrives; a coalition's row is finished (memo and
        cache) once its last batch is in."""
        from .ray.partition import plan

        batches = self.executor.batches
        stored = self._cache.get_partials(self._key, keys) if self._cache is not None else {}
        masks = masks_from_keys(keys, self.model.n_players)
        rows, need = self._assemble(keys, stored)
        done = [i for i in range(len(keys)) if not need[i].any()]
        self._finish([keys[i] for i in done], rows[done])
        if self.pool is None:
            raise UsageError("this game's Ray workers were stopped (close()); make a new Game")
        units = plan(masks, need, [b.n_tokens for b in batches], self.workers)
        bar = _progress(len(keys), self.progress and len(keys) > 1)
        n_batches = max(1, len(batches))
        if bar is not None:
            bar.update(float((~need).sum()) / n_batches)

        def on_result(unit, values: np.ndarray, worker: int) -> None:
            idx, b = unit.rows, unit.batch
            rows[np.ix_(idx, batches[b].request_index)] = values
            need[idx, b] = False
            self.n_batches_run += len(idx)
            finished = [i for i in idx if not need[i].any()]
            if self._cache is not None:  # the finished rows go whole into the cache below
                pieces = [(keys[i], v) for i, v in zip(idx, values) if need[i].any()]
                if pieces:
                    self._cache.put_partials(self._key, b, pieces)
            self.n_forward += len(finished)
            self._finish([keys[i] for i in finished], rows[finished])
            if bar is not None:
                bar.update(len(idx) / n_batches)

        def on_progress(postfix: str) -> None:
            if bar is not None:
                bar.set_postfix_str(postfix, refresh=False)

        try:
            self.pool.run(units, masks, on_result, on_progress)
        finally:
            if bar is not None:
                bar.close()
        if need.any():
            raise RuntimeError("the Ray workers left (coalition, batch) pairs unevaluated")

    def _assemble(self, keys: list[str], stored: dict) -> tuple[np.ndarray, np.ndarray]:
        """Rows float64 [len(keys), n_requests] filled from the stored per-batch pieces
        (``stored``: key -> {batch: values}; NaN elsewhere), and ``need`` bool [len(keys),
        n_batches]: the (coalition, batch) pairs still to run."""
        batches = self.executor.batches
        rows = np.full((len(keys), len(self.requests)), np.nan, dtype=np.float64)
        need = np.ones((len(keys), len(batches)), dtype=bool)
        for i, key in enumerate(keys):
            for b, values in stored.get(key, {}).items():
                if 0 <= b < len(batches) and len(values) == len(batches[b].request_index):
                    rows[i, batches[b].request_index] = values
                    need[i, b] = False
        return rows, need

    def _finish(self, keys: list[str], rows: np.ndarray) -> None:
        """Memoise and store finished coalitions' rows float64 [len(keys), n_requests]."""
        if not keys:
            return
        self._memo.update(zip(keys, rows))
        if self._cache is not None:
            self._cache.put_many(self._key, zip(keys, rows))

    def cost(self, masks) -> int:
        """Token-sublayer evaluations that ``loglik(masks)`` would run now (bool masks [m,
        n_players]): the coalitions not yet in memory, in trie order, cut into chunks of
        ``chunk`` as :meth:`loglik` runs them, each chunk sharing prefixes; kept sublayers run
        times the real tokens of every batch. Coalitions only in the disk cache are counted
        too (an upper bound), and so is nothing for a state the memory budget makes the
        prefix executor recompute (``executor.recomputed_steps``)."""
        from .ray.partition import prefix_steps

        arr = self.player_set.expand(self.check_masks(masks))
        keys = [k for k in dict.fromkeys(coalition_keys(arr)) if k not in self._memo]
        if not keys:
            return 0
        todo = masks_from_keys(keys, self.model.n_players)
        todo = todo[trie_order(todo)]
        steps = sum(
            int(prefix_steps(todo[i : i + self.chunk]).sum())
            for i in range(0, len(todo), self.chunk)
        )
        return steps * sum(b.n_tokens for b in self.executor.batches)

    def __call__(self, masks) -> np.ndarray:
        """Utilities float64 [m] for bool masks [m, n_players] (True = kept)."""
        return np.array(
            [self.scorer(ll, self.utility) for ll in self.loglik(masks)], dtype=np.float64
        )

    def per_item(self, mask, utility: str | None = None) -> np.ndarray:
        """The utility's per-item terms for one coalition, float64 [n_items]."""
        return self.scorer.per_item(self.loglik(mask)[0], utility or self.utility)

    def full_mask(self) -> np.ndarray:
        return np.ones(self.n_players, dtype=bool)

    def __repr__(self) -> str:
        return (
            f"Game({self.model.name!r}, task={self.task.name!r} ({len(self.task)} items), "
            f"utility={self.utility!r}, executor={self.executor.name!r}, "
            f"packed={self.executor.pack}{self._players_note()})"
        )

    def _players_note(self) -> str:
        if self.player_set.is_every_sublayer:
            return ""
        return f", players={self.players[0]}..{self.players[-1]} ({self.n_players})"


def _check_workers(workers, ray_address, threads_per_worker, gpus_per_worker) -> int | None:
    """``workers`` as None (in this process) or an int >= 2; UsageError naming the flag."""
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


def _requests(model: SublayerModel, task: Task, max_length: int | None):
    """The task's requests at ``max_length`` (None: the model's limit) and the truncation
    record; warns once when requests were truncated or run past the model's limit."""
    limit, source = model_max_length(model.config, model.tokenizer)
    length = limit if max_length is None else int(max_length)
    own = getattr(task, "requests", None)  # a task that tokenises its own requests
    requests = (
        own(model.tokenizer, length)
        if callable(own)
        else build_requests(task, model.tokenizer, length)
    )
    n_truncated = sum(r.n_dropped > 0 for r in requests)
    origin = f" (the model's limit, {source})" if max_length is None else ""
    if n_truncated:
        warn(
            f"{n_truncated} of {len(requests)} requests of task {task.name!r} are longer than "
            f"max_length={length} tokens{origin} and were left-truncated as lm-evaluation-harness "
            "does; set max_length= (--max-length) to change the limit"
        )
    longest = max((len(r.input_ids) for r in requests), default=0)
    if longest > limit:
        warn(
            f"max_length={length} lets requests of task {task.name!r} run to {longest} tokens, "
            f"past the model's limit of {limit} ({source}); positions beyond it were never "
            "trained"
        )
    record = {
        "max_length": length,
        "limit_source": source if max_length is None else "max_length=",
        "n_truncated": int(n_truncated),
        "n_requests": len(requests),
    }
    return requests, record


def _cache_key(game: Game, batch_tokens: int, device_type: str) -> tuple[str, str, str]:
    """(model, requests and options, device type): every input that changes the numbers;
    ``device_type`` is where the coalitions run (the workers' with ``workers``).

    The executor is left out (prefix and naive are bit-identical, tested), and so is the prefix
    executor's memory budget (a state recomputed is the same state)."""
    model, ex = game.model, game.executor
    options = "-".join(
        [
            "trie-packed" if ex.pack else "unpacked",
            f"L{game.truncation['max_length']}",
            f"B{batch_tokens}",
            f"V{ex.vocab_chunk}",
            str(model.dtype).replace("torch.", ""),
            str(model.config._attn_implementation),
        ]
    )
    requests = _short_hash(requests_fingerprint(game.requests))
    return model.fingerprint(), f"{game.task.fingerprint()}-{requests}-{options}", device_type


def _warn_other_batch_tokens(cache: UtilityCache, key: tuple[str, str, str], batch_tokens: int):
    """Warn when ``cache`` holds unfinished coalitions under a key that differs from ``key`` only
    in its batch_tokens (a killed run whose automatic batch size came out differently): they
    are not reused unless that batch_tokens is passed again."""
    model, requests, device = key
    head, _, tail = requests.rpartition(f"-B{batch_tokens}-")
    found = {}
    # a read-only query on the cache's connection (UtilityCache has no key listing)
    for other, n in cache._db.execute(
        "SELECT requests, COUNT(DISTINCT mask) FROM partials WHERE model=? AND device=? "
        "GROUP BY requests",
        (model, device),
    ):
        middle = other[len(head) + 2 : len(other) - len(tail) - 1]
        if (
            other.startswith(head + "-B")
            and other.endswith("-" + tail)
            and middle.isdigit()
            and int(middle) != batch_tokens
        ):
            found[int(middle)] = n
    if found:
        other, n = max(found.items(), key=lambda kv: kv[1])
        warn(
            f"the cache {cache.path} holds {n} unfinished coalition(s) of this model and task "
            f"evaluated with batch_tokens={other}, but this game uses batch_tokens={batch_tokens}"
            f", so they will be evaluated again; to resume them pass --batch-tokens {other} "
            f"(batch_tokens={other})"
        )


def _short_hash(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:16]


def _progress(total: int, show: bool):
    if not show:
        return None
    fmt = "{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}]"
    return progress_bar(total=total, desc="evaluating", unit="coalition", bar_format=fmt)
