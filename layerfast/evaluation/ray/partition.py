"""Cut a sweep into units of work for several workers without losing prefix sharing.

A unit is one forward batch and a run of coalitions that are consecutive in trie order
(:func:`~layerfast.evaluation.prefix_executor.trie_order`). Within a unit the prefix executor
shares every common prefix, exactly as in one process; what a cut costs is the prefix the first
coalition of a unit would have shared with the coalition before it, run again from the
embeddings. Batches are independent, so cutting between batches costs nothing: the plan uses
one unit per batch when there are enough batches to keep every worker busy, and otherwise cuts
each batch's coalitions where they share the least (a subtree boundary of the trie), near the
points that balance the estimated work. How many units per worker is chosen by simulating the
pool (largest unit first to the first free worker): more units balance better, more cuts
repeat more prefixes.

Costs are counted as the prefix executor counts them (:attr:`NaiveExecutor.sublayer_evaluations`):
one per kept sublayer run on one batch, weighted by the batch's real tokens for balancing.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..prefix_executor import prefix_steps, restart_cost, trie_order

IN_FLIGHT = 2  # units the pool keeps queued per worker, so the next starts while a result travels
SEARCH = 0.25  # a cut may move this fraction of a chunk's cost to find a shallower branch


@dataclass(frozen=True)
class Unit:
    """One batch for a run of coalitions consecutive in trie order.

    batch: index into the executor's batches.
    rows: int [k] indices into the sweep's coalition list, in trie order.
    steps: kept sublayers the prefix executor runs for these rows on this batch.
    cost: ``steps * n_tokens`` of the batch (token-sublayer evaluations), for balancing.
    """

    batch: int
    rows: np.ndarray
    steps: int
    cost: int


def cut(ordered: np.ndarray, n_chunks: int) -> list[slice]:
    """Split bool masks [m, n] in trie order into at most ``n_chunks`` runs of similar work,
    each cut moved (within :data:`SEARCH` of a chunk's work) to where the extra cost of
    starting over (:func:`restart_cost`) is smallest."""
    m = len(ordered)
    n_chunks = max(1, min(int(n_chunks), m))
    if n_chunks == 1:
        return [slice(0, m)]
    steps = prefix_steps(ordered)
    extra = restart_cost(ordered)
    done = np.concatenate([[0], np.cumsum(steps)])  # work before coalition k
    per = done[-1] / n_chunks
    cuts, last = [0], 0
    for j in range(1, n_chunks):
        target = j * per
        lo = int(np.searchsorted(done, target - SEARCH * per, side="left"))
        hi = int(np.searchsorted(done, target + SEARCH * per, side="right"))
        lo, hi = max(lo, last + 1), min(hi, m - 1)
        if lo > hi:
            continue
        window = np.arange(lo, hi + 1)
        # cheapest restart first, then the closest to the balanced point
        best = window[np.lexsort((np.abs(done[window] - target), extra[window]))[0]]
        cuts.append(int(best))
        last = int(best)
    cuts.append(m)
    return [slice(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def plan(
    masks: np.ndarray,
    need: np.ndarray,
    batch_tokens: list[int],
    n_workers: int,
    units_per_worker: int | None = None,
) -> list[Unit]:
    """The units that cover every needed (coalition, batch) pair once, largest first.

    masks: bool [m, n_players] keep-masks of the sweep's coalitions.
    need: bool [m, n_batches] which pairs to compute (pairs already stored are False).
    batch_tokens: real tokens per batch, len n_batches.
    n_workers: workers that will share the units.
    units_per_worker: units to aim for per worker; None tries 1, 2, 4, 8 and 16 and keeps the
        plan whose simulated finish (:func:`balance`: the busiest worker's token-sublayer
        runs) is earliest: more units balance better, more cuts repeat more prefixes.
    """
    masks = np.asarray(masks, dtype=bool)
    work = []  # (batch, rows in trie order, steps per row)
    for b in range(need.shape[1]):
        rows = np.flatnonzero(need[:, b])
        if len(rows):
            rows = rows[trie_order(masks[rows])]
            work.append((b, rows, prefix_steps(masks[rows])))
    if not work:
        return []
    if n_workers <= 1:  # one worker: never cut
        return _units(masks, work, batch_tokens, 1)
    if units_per_worker is not None:
        return _units(masks, work, batch_tokens, n_workers * units_per_worker)
    plans = [_units(masks, work, batch_tokens, n_workers * k) for k in (1, 2, 4, 8, 16)]
    return min(plans, key=lambda units: balance(units, n_workers)["finish"])


def _units(masks: np.ndarray, work: list, batch_tokens: list[int], target: int) -> list[Unit]:
    """About ``target`` units: whole batches when there are that many, else each batch cut in
    proportion to its work."""
    total = sum(int(s.sum()) * batch_tokens[b] for b, _, s in work)
    units = []
    for b, rows, steps in work:
        share = int(steps.sum()) * batch_tokens[b] / max(total, 1)
        n_chunks = 1 if len(work) >= target else max(1, round(share * target))
        for part in cut(masks[rows], n_chunks):
            sub = rows[part]
            n_steps = int(prefix_steps(masks[sub]).sum())
            units.append(Unit(b, sub, n_steps, n_steps * int(batch_tokens[b])))
    units.sort(key=lambda u: (-u.cost, u.batch, int(u.rows[0])))
    return units


def balance(units: list[Unit], n_workers: int, in_flight: int = IN_FLIGHT) -> dict[str, float]:
    """Simulate the pool on ``units`` in order with ``n_workers`` identical workers: each is
    first handed ``in_flight`` units in turn, then the next unit whenever it finishes one (as
    :class:`~layerfast.evaluation.ray.pool.RayPool` does). Returns the total steps, the load
    imbalance ``max / mean`` of the workers' costs and ``finish``, the busiest worker's cost
    (token-sublayer runs)."""
    k = max(1, n_workers)
    waiting = deque(units)
    queues: list[deque] = [deque() for _ in range(k)]
    for _ in range(in_flight):
        for a in range(k):
            if waiting:
                queues[a].append(waiting.popleft())
    loads = np.zeros(k)
    events = [(float(queues[a][0].cost), a) for a in range(k) if queues[a]]
    heapq.heapify(events)
    while events:
        t, a = heapq.heappop(events)
        queues[a].popleft()
        loads[a] = t
        if waiting:
            queues[a].append(waiting.popleft())
        if queues[a]:
            heapq.heappush(events, (t + queues[a][0].cost, a))
    mean = loads.mean()
    return {
        "steps": float(sum(u.steps for u in units)),
        "imbalance": float(loads.max() / mean) if mean > 0 else 1.0,
        "finish": float(loads.max()),
    }
