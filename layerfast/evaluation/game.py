"""The Game: a callable from coalition masks to utilities, on a real model and task.

    game = lf.Game(model, task, utility="acc_norm")
    u = game(masks)   # masks: bool [m, n_players], True = kept -> float64 [m]

A Game is a memo, a cache and a runner. The memo holds every coalition's per-request
log-likelihoods it has seen; the on-disk cache (:mod:`.cache`, with ``cache=``) holds the same
rows, and the per-batch pieces of coalitions not finished yet, so a killed sweep resumes where it
stopped; the runner (:mod:`.runner`: in this process, or :mod:`.ray` on Ray workers) computes the
(coalition, batch) pairs neither holds and hands each result to :meth:`Game._store`, the one
place that fills rows, writes the cache and finishes coalitions. Utilities come from the task's
own scorer (:mod:`layerfast.tasks.contract`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..coalitions import as_masks, coalition_keys, masks_from_keys
from ..errors import UsageError
from ..models import SublayerModel
from ..progress import progress as progress_bar
from ..tasks.contract import TaskKind
from ..tasks.prompts import is_generative
from ..tasks.requests import requests_fingerprint, tokenise
from .cache import CacheKey, open_cache, warn_unfinished_elsewhere
from .executors import EXECUTORS, check_executor, make_executor
from .generative_game import GenerativeGame
from .kl import KL, KL_EXECUTORS, kl_scorer, refuse_kl
from .players import choose_players
from .prefix_executor import prefix_steps, trie_order
from .ray.runner import check_workers
from .ray.runner import start as start_ray
from .runner import LocalRunner
from .sizing import AUTO, longest_row, resolve_sizes


class Game:
    """v(S) for coalitions S of a model's sublayers on a task.

    Args:
        model: a :class:`SublayerModel` (see ``lf.load``).
        task: a task of any kind (``lf.tasks.load``; the contract is
            :class:`~layerfast.tasks.contract.TaskKind`): multiple-choice items, ``text:`` or
            ``lm_eval:``. A generative task (``task.generative``) makes a
            :class:`~.generative_game.GenerativeGame` instead (same arguments).
        utility: one of ``task.utilities``: "acc" | "acc_norm" | "acc_bytes" | "logprob" |
            "margin" for multiple-choice items, "nll" | "ppl" for text, a metric of an
            ``lm_eval:`` task; or "kl" on any non-generative task (:mod:`.kl`: the rows then
            hold KL divergences from the full model). None: the task's default.
        executor: "prefix" (shares the hidden states of common prefixes; bit-identical to the
            reference unless it stacks) or "naive" (the reference: every coalition from scratch).
        cache: None (memory only), True (the user cache file) or a path to an SQLite file.
        batch_tokens: padded tokens (B x T) of one forward batch, or "auto" / None: 2048 on
            the CPU, on CUDA chosen from the device's free memory and the model's shape
            (:mod:`layerfast.evaluation.sizing`). Part of the cache key.
        memory_budget: bytes of residual states the prefix executor keeps per batch, or "auto" /
            None: 1 GiB on the CPU, on CUDA what the forward leaves of the free memory. Not in
            the cache key (a recomputed state is the same state).
        stack_tokens: padded tokens up to which the prefix executor stacks a small batch's
            coalitions (:mod:`.stacking`; equal within rounding, not in the key); 0 = never.
        max_length: longest request in tokens; longer ones are left-truncated as the harness
            does, with one warning counting them (``truncation``). None: the model's own limit
            (:func:`~layerfast.tasks.requests.model_max_length`).
        progress: show a progress bar counting coalitions.
        pack: share each item's context across its choices (:mod:`.batching`); turned off, with
            the reason in ``packing_note``, where it would not be exact.
        chunk: coalitions evaluated together, batch by batch (more shares more prefixes);
            finished coalition-batches are stored as they come, at most 4 at a time or 2 s
            apart (:mod:`.runner`), so a kill loses at most that much finished work.
        workers: None or 1: evaluate in this process. K > 1: on K Ray actors, each holding one
            model replica (as ``model.load_spec`` says; :mod:`layerfast.evaluation.ray.runner`,
            ``pip install 'layerfast[ray]'``); only this process writes the cache, as each
            result arrives; results equal the in-process ones (bit for bit at the same thread
            count). Call :meth:`close` (or use ``with``) to stop the actors.
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
            A coalition runs as the model keep-mask with the absent players' sublayers off
            (:mod:`layerfast.evaluation.players`), so sub-games share the full game's cache.

    Attributes: ``requests``, ``scorer``, ``truncation`` ({"max_length", "limit_source",
    "n_truncated", "n_requests"}), ``sizing`` ({"batch_tokens", "memory_budget", "how"}),
    ``packing_note``, ``runner``, ``executor``, ``key`` (:class:`~.cache.CacheKey`, computed on
    first use: it hashes the weights), ``cache_key`` (its stored columns), ``n_forward``
    (coalitions this game ran a batch of), ``n_batches_run`` (coalition-batches it ran) and
    ``kl``. It keeps the estimators' contract (:mod:`layerfast.estimators.contract`).
    """

    def __new__(cls, model: Any = None, task: Any = None, *args: Any, **kwargs: Any):
        if cls is Game and is_generative(task):  # scored on generated text: its own game
            refuse_kl(task, kwargs.get("utility", args[0] if args else None))
            return GenerativeGame(model, task, *args, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        model: SublayerModel,
        task: TaskKind,
        utility: str | None = None,
        executor: str = "prefix",
        cache: bool | str | Path | None = None,
        batch_tokens: int | str | None = AUTO,
        max_length: int | None = None,
        progress: bool = True,
        chunk: int = 64,
        pack: bool = True,
        memory_budget: int | str | None = AUTO,
        stack_tokens: int | str | None = AUTO,
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
        check_executor(executor)
        if max_length is not None and (
            isinstance(max_length, bool) or int(max_length) != max_length or max_length < 1
        ):
            raise UsageError(f"max_length must be a whole number >= 1, got {max_length!r}")
        if chunk < 1:
            raise UsageError(f"chunk must be >= 1, got {chunk}")
        workers = check_workers(workers, ray_address, threads_per_worker, gpus_per_worker)
        self.player_set = choose_players(model, players, unit)
        self.model = model
        self.task = task
        self.requests, self.truncation = tokenise(task, model.tokenizer, model.config, max_length)
        self.kl = utility == KL  # rows hold KL divergences, not log-likelihoods (:mod:`.kl`)
        if self.kl and workers is not None:
            raise UsageError("utility 'kl' runs in this process: leave out workers (--workers)")
        self.scorer = kl_scorer(task, self.requests) if self.kl else task.scorer(self.requests)
        self.utility = self.scorer.check(utility)
        self.workers = workers
        seq_len = longest_row(self.requests, pack)
        if workers is None:
            tokens, budget, how = resolve_sizes(model, batch_tokens, memory_budget, seq_len)
            options = {"batch_tokens": tokens, "memory_budget": budget, "pack": pack}
            options["stack_tokens"] = stack_tokens
            table = KL_EXECUTORS if self.kl else EXECUTORS
            self.executor = make_executor(executor, model, self.requests, options, table)
            self.runner = LocalRunner(self.executor, chunk)
            self.sizing = {"batch_tokens": tokens, "memory_budget": budget, "how": how}
        else:  # on Ray workers: sizes resolved on their devices, the smallest kept
            options = {"batch_tokens": batch_tokens, "memory_budget": memory_budget, "pack": pack}
            options["stack_tokens"] = stack_tokens
            self.runner, self.sizing = start_ray(
                model, self.requests, executor, options, seq_len, workers, ray_address,
                threads_per_worker, gpus_per_worker,
            )  # fmt: skip
            self.executor = self.runner.executor
        try:
            self.packing_note = self.executor.packing_note
            self.progress = progress
            self._chunk = int(chunk)
            self.players = list(self.player_set.names)
            self.n_players = len(self.players)
            self._memo: dict[str, np.ndarray] = {}
            self._cache = open_cache(cache)
            if self._cache is not None:
                warn_unfinished_elsewhere(self._cache, self.key)
        except BaseException:
            self.close()
            raise
        self.n_forward = 0  # coalitions actually run by this game (not served from a cache)
        self.n_batches_run = 0  # (coalition, batch) pairs actually run by this game

    # --- the key, the runner ----------------------------------------------------------------
    @property
    def key(self) -> CacheKey:
        """Every input that changes the numbers (:class:`~.cache.CacheKey`); computed once, on
        first use (it hashes the weights)."""
        if "_key" not in self.__dict__:
            batch_tokens, device_type = self.sizing["batch_tokens"], self.runner.device_type
            self.__dict__["_key"] = self._make_key(batch_tokens, device_type)
        return self.__dict__["_key"]

    @property
    def cache_key(self) -> tuple[str, str, str]:
        """The key as the cache stores it: (model, requests and options, device type)."""
        return self.key.columns()

    def _make_key(self, batch_tokens: int, device_type: str) -> CacheKey:
        """The key of this game's coalitions run with ``batch_tokens`` on ``device_type``."""
        model, ex = self.model, self.executor
        return CacheKey(
            model=model.fingerprint(),
            task=self.task.fingerprint(),
            requests=hashlib.sha256(requests_fingerprint(self.requests)).hexdigest()[:16],
            layout=("trie-filled" if ex.pack else "unpacked") + ("-kl" if self.kl else ""),
            max_length=int(self.truncation["max_length"]),
            batch_tokens=int(batch_tokens),
            vocab_chunk=int(ex.vocab_chunk),
            dtype=str(model.dtype).replace("torch.", ""),
            attention=model.adapter.attention_implementation,
            device=device_type,
        )

    @property
    def chunk(self) -> int:
        """Coalitions the in-process runner evaluates together, batch by batch."""
        return self._chunk

    @chunk.setter
    def chunk(self, value: int) -> None:
        self._chunk = int(value)
        if isinstance(self.runner, LocalRunner):
            self.runner.chunk = self._chunk

    pool = property(lambda self: self.runner.pool, doc="The Ray pool of ``workers`` (or None).")

    def close(self) -> None:
        """Stop the Ray workers (and the local Ray cluster this game started), if any."""
        self.runner.close()

    def __enter__(self) -> Game:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def chance(self) -> float | None:
        """Utility of a uniform random guess (accuracy utilities only; None for smooth ones)."""
        return self.scorer.chance(self.utility)

    @property
    def n_items(self) -> int:
        """Items of the task: the per-item terms of :meth:`per_item`."""
        return int(getattr(self.scorer, "n_items", len(self.task)))

    compute_run = property(
        lambda self: self.runner.compute_run,
        doc="Token-sublayer evaluations this game's runner has run (every worker's, with Ray).",
    )

    draws_progress = property(lambda self: bool(self.progress))  # a bar of its own

    def with_utility(self, utility: str) -> Game:
        """The same game (sharing its memo, cache and runner) scored by another utility."""
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
            self._memo.update(self._cache.get(self.key, missing))
            missing = [k for k in missing if k not in self._memo]
        if missing:
            self._evaluate(missing)
        return (
            np.stack([self._memo[k] for k in keys]) if keys else np.zeros((0, len(self.requests)))
        )

    def _evaluate(self, keys: list[str]) -> None:
        """Compute the coalitions ``keys`` (finished nowhere): resume from the per-batch pieces
        the cache holds, and let the runner compute the rest, storing each piece as it comes."""
        batches = self.executor.batches
        n_batches = max(1, len(batches))
        stored = self._cache.get_partials(self.key, keys) if self._cache is not None else {}
        rows, need = self._assemble(keys, stored)
        done = [i for i in range(len(keys)) if not need[i].any()]
        self._finish([keys[i] for i in done], rows[done])
        bar = _progress(len(keys), self.progress and len(keys) > 1)
        if bar is not None:
            bar.update(float((~need).sum()) / n_batches)

        def store(b: int, idx: np.ndarray, values: np.ndarray) -> None:
            self._store(b, idx, values, keys, rows, need)

        def tick(k: int) -> None:
            bar.update(k / n_batches)

        def note(text: str) -> None:
            bar.set_postfix_str(text, refresh=False)

        masks = masks_from_keys(keys, self.model.n_players)
        try:
            shown = bar is not None
            self.runner.run(masks, need, store, tick if shown else None, note if shown else None)
        finally:
            if bar is not None:
                bar.close()
        if need.any():
            raise RuntimeError("the runner left (coalition, batch) pairs unevaluated")

    def _store(self, b: int, idx, values, keys: list[str], rows, need) -> None:
        """Batch ``b``'s log-likelihoods float64 [k, R_b] of the coalitions ``idx`` int [k]
        (into ``keys``): into their rows, into the cache's partials (one transaction), and the
        coalitions whose every batch is now in are finished (memo and cache)."""
        rows[np.ix_(idx, self.executor.batches[b].request_index)] = values
        need[idx, b] = False
        self.n_batches_run += len(idx)
        if self._cache is not None:
            self._cache.put_partials(self.key, b, [(keys[i], v) for i, v in zip(idx, values)])
        finished = [int(i) for i in idx if not need[i].any()]
        if finished:
            self.n_forward += len(finished)
            self._finish([keys[i] for i in finished], rows[finished])

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
            self._cache.put_many(self.key, zip(keys, rows))

    def cost(self, masks) -> int:
        """Token-sublayer evaluations ``loglik(masks)`` would run now (bool masks [m,
        n_players]): the coalitions not in memory, in trie order, in chunks of ``chunk`` sharing
        prefixes; kept sublayers times the real tokens of every batch. An upper bound: it counts
        coalitions only in the disk cache, and no state the memory budget makes the prefix
        executor recompute (``executor.recomputed_steps``)."""
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
        return self.item_values(mask, utility)[0]

    def item_values(self, masks, utility: str | None = None) -> np.ndarray:
        """Per-item terms of many coalitions, float64 [m, n_items], in one batched run."""
        rows = self.loglik(masks)
        terms = [self.scorer.per_item(ll, utility or self.utility) for ll in rows]
        return np.stack(terms) if terms else np.zeros((0, self.n_items))

    def full_mask(self) -> np.ndarray:  # bool [n_players], every player kept
        return np.ones(self.n_players, dtype=bool)

    def __repr__(self) -> str:
        p, every = self.players, self.player_set.is_every_sublayer
        note = "" if every else f", players={p[0]}..{p[-1]} ({self.n_players})"
        return (
            f"Game({self.model.name!r}, task={self.task.name!r} ({len(self.task)} items), "
            f"utility={self.utility!r}, executor={self.executor.name!r}, "
            f"packed={self.executor.pack}{note})"
        )


def _progress(total: int, show: bool):
    fmt = "{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}]"
    bar = progress_bar if show else lambda **_: None
    return bar(total=total, desc="evaluating", unit="coalition", bar_format=fmt)
