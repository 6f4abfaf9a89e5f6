"""A sweep sample run three ways, and the projected time of the full sweeps.

Paths, on the same model, requests and coalitions:

* ``seed``: :class:`~.seed_way.SeedWayScorer` (zeroing hooks, full-vocabulary log-softmax);
* ``naive``: :class:`~layerfast.evaluation.naive_executor.NaiveExecutor` (removed sublayers
  skipped, log-probs at the continuation positions only, vocabulary in chunks);
* ``fast``: :class:`~layerfast.evaluation.prefix_executor.PrefixExecutor` with shared-context
  packing and small batches stacked, what :class:`layerfast.Game` runs.

The sample is ``k`` consecutive coalitions, in the prefix executor's trie order, from the middle of
the sweep (consecutive, so prefix sharing within it is typical of the full sweep). ``k`` is chosen
from the seed way's warm-up so that the slowest path fits its time budget.

Projection: each path's sample time scaled by the sublayer runs of the full sweep over those of
the sample (counted exactly from the masks, per batch: every sublayer for the seed way, the kept
ones for the naive executor, the kept ones after each coalition's branch point in trie order for
the fast path) and by the full task's items over the sample's. The per-coalition LM-head cost is
assumed to scale alike.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..estimators.ablation import ablation_masks
from ..estimators.proximity import proximity_masks
from ..evaluation.naive_executor import NaiveExecutor
from ..evaluation.prefix_executor import PrefixExecutor, branch_depths, trie_order
from . import rows
from .machine import PeakMemory, synchronize
from .seed_way import SeedWayScorer

PATHS = ("seed", "naive", "fast")
SWEEPS = ("ablation", "proximity")
PROXIMITY_WINDOW = 3


def sweep_masks(sweep: str, n_players: int) -> np.ndarray:
    """Keep-masks bool [m, n_players] of a full ``ablation`` or window-3 ``proximity`` sweep."""
    if sweep == "ablation":
        return ablation_masks(n_players)
    return proximity_masks(n_players, PROXIMITY_WINDOW)[0]


def sublayer_runs(masks: np.ndarray, path: str) -> int:
    """Sublayer runs per batch for ``path`` to score ``masks`` (the executors' own count)."""
    masks = np.asarray(masks, dtype=bool)
    if path == "seed":
        return int(masks.size)
    if path == "naive":
        return int(masks.sum())
    ordered = masks[trie_order(masks)]
    branch, _ = branch_depths(ordered)
    return int(sum(row[b:].sum() for row, b in zip(ordered, branch)))


def sample_masks(masks: np.ndarray, k: int) -> np.ndarray:
    """``k`` consecutive masks in trie order from the middle of ``masks``."""
    ordered = masks[trie_order(masks)]
    k = min(k, len(ordered))
    start = (len(ordered) - k) // 2
    return ordered[start : start + k]


@dataclass
class PathResult:
    path: str
    wall_s: float
    n_coalitions: int
    sublayer_evaluations: int
    token_sublayer_evaluations: int
    real_tokens: int  # real tokens of one pass over the requests
    peak_mb: float | None
    batch_tokens: int
    loglik: np.ndarray  # [k, n_requests]

    @property
    def coalitions_per_s(self) -> float:
        return self.n_coalitions / self.wall_s

    @property
    def tokens_per_s(self) -> float:
        return self.real_tokens * self.n_coalitions / self.wall_s


def make_scorer(path: str, model, requests, batch_tokens: int, memory_budget: int):
    if path == "seed":
        return SeedWayScorer(model, requests, batch_tokens)
    if path == "naive":
        return NaiveExecutor(model, requests, batch_tokens=batch_tokens)
    return PrefixExecutor(
        model,
        requests,
        batch_tokens=batch_tokens,
        pack=True,
        memory_budget=memory_budget,
        stack_tokens="auto",  # what lf.Game runs
    )


def seed_batch_tokens(model, batch_tokens: int) -> int:
    """The seed way's batch: ``batch_tokens``, capped on CUDA so that its [B, T, V] logits, their
    fp32 copy and the log-softmax (model dtype + 8 bytes per vocabulary entry) take at most a
    third of the free memory."""
    if model.device.type != "cuda":
        return batch_tokens
    free, _ = torch.cuda.mem_get_info(model.device)
    per_token = int(model.config.vocab_size) * (model.dtype.itemsize + 8)
    cap = max(1, free // 3 // per_token)
    return max(64, min(batch_tokens, 2 ** int(math.log2(cap))))


def batch_fill(model, requests, batch_tokens: int) -> tuple[int, float]:
    """(batches, mean padded tokens per batch / batch_tokens) of the fast path's packed rows."""
    from ..evaluation.batching import batch_rows, make_batches

    batches = make_batches(batch_rows(requests, True, batch_tokens), batch_tokens, 0)
    padded = sum(b.input_ids.numel() for b in batches)
    return len(batches), padded / len(batches) / batch_tokens


def warm_up(scorer, mask: np.ndarray, device: torch.device) -> float:
    """Seconds of one coalition (the first pass also compiles and allocates)."""
    t0 = time.perf_counter()
    scorer.loglik_many(mask[None])
    synchronize(device)
    scorer.sublayer_evaluations = scorer.token_sublayer_evaluations = 0
    return time.perf_counter() - t0


def run_path(
    path: str, scorer, masks: np.ndarray, device: torch.device, batch_tokens: int
) -> PathResult:
    """Time ``scorer`` on ``masks`` (after a warm-up elsewhere) with its peak memory."""
    with PeakMemory(device) as peak:
        t0 = time.perf_counter()
        loglik = scorer.loglik_many(masks)
        synchronize(device)
        wall = time.perf_counter() - t0
    real = sum(len(r.input_ids) for r in scorer.requests)
    return PathResult(
        path,
        wall,
        len(masks),
        scorer.sublayer_evaluations,
        scorer.token_sublayer_evaluations,
        real,
        peak.mb,
        batch_tokens,
        loglik,
    )


def projected_s(result: PathResult, full: np.ndarray, sample: np.ndarray, item_ratio: float):
    """Seconds the full sweep ``full`` would take on ``path``, from the sample's time."""
    return (
        result.wall_s
        * sublayer_runs(full, result.path)
        / max(sublayer_runs(sample, result.path), 1)
        * item_ratio
    )


def measure(
    model,
    workload,
    batch_tokens: int,
    memory_budget: int,
    k_max: int,
    budget_s: float,
    bar=None,
) -> tuple[dict, list[dict], list[str]]:
    """(summary, rows, printed lines) of the sweep step: for each sweep, a sample of at most
    ``k_max`` coalitions run on every path, the ratios, and each path's projected full sweep."""
    device = model.device
    requests = workload.requests
    item_ratio = workload.n_items_full / workload.n_items
    seed_tokens = seed_batch_tokens(model, batch_tokens)
    per_run = budget_s / (len(SWEEPS) * len(PATHS))
    dtype_name = str(model.dtype).removeprefix("torch.")
    n_tokens = sum(len(r.input_ids) for r in requests)
    lines = [
        f"sweep sample: {model.name}, {workload.task} x {workload.n_items} items "
        f"({len(requests)} requests, {n_tokens} tokens), {dtype_name}, {device}; batches of "
        f"{batch_tokens} padded tokens ({seed_tokens} for the seed way); projection to "
        f"{workload.n_items_full} items",
        f"  {'sweep':<10} {'path':<6} {'k':>3} {'s':>8} {'coal/s':>8} {'tokens/s':>10} "
        f"{'runs/util':>9} {'peak MB':>8} {'full sweep':>11} {'projected':>10}",
    ]
    summary: dict = {"batch_tokens": batch_tokens, "seed_batch_tokens": seed_tokens}
    fill = batch_fill(model, requests, batch_tokens)
    summary["fast_batches"], summary["fast_batch_fill"] = fill
    out_rows: list[dict] = []
    for sweep in SWEEPS:
        full = sweep_masks(sweep, model.n_players)
        results: dict[str, PathResult] = {}
        k = k_max
        for path in PATHS:
            bt = seed_tokens if path == "seed" else batch_tokens
            scorer = make_scorer(path, model, requests, bt, memory_budget)
            try:
                one = warm_up(scorer, full[0], device)
                if path == "seed":  # the slowest path sets the sample size for all three
                    k = max(2, min(k_max, len(full), int(per_run / max(one, 1e-9))))
                    sample = sample_masks(full, k)
                results[path] = run_path(path, scorer, sample, device, bt)
            finally:
                if path == "seed":
                    scorer.close()
                del scorer
            if bar is not None:
                bar.update(1)
        fast, naive, seed = results["fast"], results["naive"], results["seed"]
        entry: dict = {"n_coalitions_full": len(full), "k": len(sample)}
        for path, r in results.items():
            proj = projected_s(r, full, sample, item_ratio)
            lines.append(
                f"  {sweep:<10} {path:<6} {r.n_coalitions:3d} {r.wall_s:8.2f} "
                f"{r.coalitions_per_s:8.2f} {r.tokens_per_s:10.0f} "
                f"{r.sublayer_evaluations / r.n_coalitions:9.1f} "
                f"{'n/a' if r.peak_mb is None else f'{r.peak_mb:.0f}':>8} "
                f"{len(full):5d} utils {_duration(proj):>10}"
            )
            entry[path] = {
                "wall_s": r.wall_s,
                "coalitions_per_s": r.coalitions_per_s,
                "tokens_per_s": r.tokens_per_s,
                "sublayer_evaluations": r.sublayer_evaluations,
                "token_sublayer_evaluations": r.token_sublayer_evaluations,
                "peak_mb": r.peak_mb,
                "batch_tokens": r.batch_tokens,
                "projected_full_s": proj,
            }
            size = f"{model.name} {workload.task} x{workload.n_items} {sweep} k={r.n_coalitions}"
            common = ("sweep", path, size, dtype_name, str(device))
            out_rows += [
                rows.row(*common, "s", r.wall_s),
                rows.row(*common, "coalitions_per_s", r.coalitions_per_s),
                rows.row(*common, "tokens_per_s", r.tokens_per_s),
                rows.row(
                    *common, "sublayer_runs_per_utility", r.sublayer_evaluations / r.n_coalitions
                ),
                rows.row(*common, f"projected_s_{len(full)}u_{workload.n_items_full}items", proj),
            ]
            if r.peak_mb is not None:
                out_rows.append(rows.row(*common, "peak_MB", r.peak_mb))
        entry["seed_over_fast"] = seed.wall_s / fast.wall_s
        entry["naive_over_fast"] = naive.wall_s / fast.wall_s
        entry["seed_over_naive"] = seed.wall_s / naive.wall_s
        entry["fast_vs_naive_max_abs_loglik"] = float(np.max(np.abs(fast.loglik - naive.loglik)))
        entry["seed_vs_naive_max_abs_loglik"] = float(np.max(np.abs(seed.loglik - naive.loglik)))
        lines.append(
            f"  {sweep}: seed / fast {entry['seed_over_fast']:.2f}x, naive / fast "
            f"{entry['naive_over_fast']:.2f}x, seed / naive {entry['seed_over_naive']:.2f}x; "
            f"max |log-lik diff| fast vs naive {entry['fast_vs_naive_max_abs_loglik']:.2e}, "
            f"seed vs naive {entry['seed_vs_naive_max_abs_loglik']:.2e}"
        )
        for ratio in ("seed_over_fast", "naive_over_fast"):
            out_rows.append(
                rows.row(
                    "sweep",
                    ratio.replace("_over_", "/"),
                    f"{model.name} {workload.task} x{workload.n_items} {sweep} k={len(sample)}",
                    dtype_name,
                    str(device),
                    "ratio",
                    entry[ratio],
                )
            )
        summary[sweep] = entry
    lines.append(
        f"  projections keep the sample's time per sublayer run; the fast path's sample ran "
        f"{fill[0]} batch(es) filled to {fill[1]:.0%} of {batch_tokens} tokens, so they run high "
        "where the full sweep's fuller batches use the device better"
    )
    return summary, out_rows, lines


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
