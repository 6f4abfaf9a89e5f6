"""Small batches: the prefix executor unstacked vs stacked (:mod:`layerfast.evaluation.stacking`).

The workload's first items, as many as make one trie-packed batch of about a quarter of the
device's stacking size (:func:`~layerfast.evaluation.sizing.stack_tokens_for`: 1024 padded tokens
on a CPU, 8192 on CUDA), so that about four coalitions share a sublayer call; the coalitions are
the model's single-sublayer ablations (at most ``k_max`` of them, consecutive in trie order).
Both paths score them in turn, twice, after a warm-up; printed: the wall time of each (median),
the ratio, the token-sublayer evaluations of each (stacking can add a few: a group shares only
its members' common prefix) and the largest difference of a log-likelihood between them (the
packing tolerance bounds it: 2e-5 in fp32, 0.05 in bf16).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from ..estimators.ablation import ablation_masks
from ..evaluation.prefix_executor import PrefixExecutor, trie_order
from ..evaluation.sizing import stack_tokens_for
from ..evaluation.stacking import group_size
from ..tasks.requests import Request
from . import rows
from .machine import synchronize

REPEAT = 2


def small_batch(requests: list[Request], tokens: int) -> list[Request]:
    """The requests of the first items (groups) whose tokens, each item's context counted once,
    reach ``tokens`` (at least one item)."""
    out: list[Request] = []
    total, groups = 0, set()
    for r in requests:
        if r.group not in groups:
            if total >= tokens and groups:
                break
            groups.add(r.group)
            total += len(r.input_ids) - len(r.targets) + 1
        out.append(r)
        total += len(r.targets)
    return out


def measure(
    model, requests: list[Request], batch_tokens: int, memory_budget: int, k_max: int, bar=None
) -> tuple[dict, list[dict], list[str]]:
    """(summary, rows, printed lines) of the stacking step."""
    stack = stack_tokens_for(model, "auto", batch_tokens)
    chosen = small_batch(requests, stack // 4)
    paths = {
        "prefix": PrefixExecutor(
            model, chosen, batch_tokens=batch_tokens, pack=True, memory_budget=memory_budget
        ),
        "stacked": PrefixExecutor(
            model,
            chosen,
            batch_tokens=batch_tokens,
            pack=True,
            memory_budget=memory_budget,
            stack_tokens=stack,
        ),
    }
    masks = ablation_masks(model.n_players)
    ordered = masks[trie_order(masks)]
    start = max(0, (len(ordered) - k_max) // 2)
    sample = ordered[start : start + k_max]
    batches = paths["prefix"].batches
    groups = [group_size(model, b, stack) for b in batches]
    walls: dict[str, list[float]] = {name: [] for name in paths}
    values, counts = {}, {}
    for executor in paths.values():
        executor.loglik_many(sample[:1])  # warm-up
    for _ in range(REPEAT):
        for name, executor in paths.items():
            executor.token_sublayer_evaluations = 0
            synchronize(model.device)
            t0 = time.perf_counter()
            values[name] = executor.loglik_many(sample)
            synchronize(model.device)
            walls[name].append(time.perf_counter() - t0)
            counts[name] = executor.token_sublayer_evaluations
            if bar is not None:
                bar.update(1)
    wall = {name: statistics.median(w) for name, w in walls.items()}
    diff = float(np.nanmax(np.abs(values["stacked"] - values["prefix"])))
    padded = [int(b.input_ids.numel()) for b in batches]
    summary = {
        "dtype": str(model.dtype).removeprefix("torch."),
        "stack_tokens": stack,
        "items": len({r.group for r in chosen}),
        "batches_padded_tokens": padded,
        "group": groups,
        "n_coalitions": len(sample),
        "prefix_s": wall["prefix"],
        "stacked_s": wall["stacked"],
        "prefix_over_stacked": wall["prefix"] / wall["stacked"],
        "compute_stacked_over_prefix": counts["stacked"] / max(counts["prefix"], 1),
        "max_abs_diff": diff,
    }
    lines = [
        f"stacking: {summary['items']} items in batches of {padded} padded tokens, "
        f"{len(sample)} ablation coalitions, stack_tokens {stack} (groups of {groups})",
        f"  prefix (unstacked) {wall['prefix']:.2f} s, stacked {wall['stacked']:.2f} s: "
        f"{summary['prefix_over_stacked']:.2f}x; stacked runs "
        f"{summary['compute_stacked_over_prefix']:.3f}x the token-sublayer evaluations; "
        f"max |log-likelihood diff| {diff:.2e}",
    ]
    dtype = summary["dtype"]
    size = f"{summary['items']} items, {padded} tokens, {len(sample)} coalitions"
    out_rows = [
        rows.row("stacking", name, size, dtype, str(model.device), "s", walls[name])
        for name in paths
    ]
    return summary, out_rows, lines
