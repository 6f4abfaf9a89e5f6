"""Scale-out on Ray: does cutting a sweep into units keep prefix sharing, balance the workers, and
cost little per unit?

Part 1 (machine-independent counts): the seed paper's proximity sweep (window 3) of the packaged
SmolLM2-135M (60 players, 178 coalitions) over the capitals task, cut for K = 2, 4, 8 workers by
:func:`layerfast.evaluation.ray.partition.plan`. For each batch layout it prints the total sublayer
runs relative to one process's prefix executor (goal <= 1.10 at K = 4) and the load imbalance
max/mean over workers when each takes the next unit as it becomes free (goal <= 1.2). Layouts:
the CPU's batches (2,048 padded tokens), a GPU's (32,768), and everything in one batch (the
worst case: only cuts inside the trie can spread the work).

Part 1b (``--players 160``): the same counts for the Llama-3-70B shape (160 players, 478
coalitions) over 1, 8 and 25 batches of equal size, with the attention / MLP split of one
process's sublayer runs, for the cost model in ``docs/scale.md``.

Part 2 (a real run): the same sweep on ``--run-items`` items with ``workers=2`` (one torch thread
each) next to the in-process prefix executor (one thread): equal log-likelihoods, the sublayer
runs the workers reported against the plan, and per unit the Ray overhead (scheduling and
transfer, measured from wall-clock stamps in the driver and the worker) against its compute.

    python benchmarks/bench_scale.py            # both parts
    python benchmarks/bench_scale.py --counts   # part 1 only (no Ray run)
    python benchmarks/bench_scale.py --players 160   # part 1b only
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import rows

import layerfast as lf
from layerfast.estimators.proximity import proximity_masks
from layerfast.evaluation.batching import build_rows, make_batches
from layerfast.evaluation.prefix_executor import prefix_steps, shared_prefixes, trie_order
from layerfast.evaluation.ray.partition import balance, plan

LAYOUTS = {"cpu batches (2048 tokens)": 2048, "gpu batches (32768 tokens)": 32768, "one batch": 0}


def counts(model, masks: np.ndarray, requests: list, batch_tokens: int) -> list[dict]:
    """Plan counts for K = 1, 2, 4, 8 on the batches of ``batch_tokens`` (0: one batch)."""
    pad = model.tokenizer.pad_token_id or 0
    layout = build_rows(requests, True)
    size = batch_tokens or sum(len(r.input_ids) for r in layout) * len(layout)
    batches = make_batches(layout, size, pad)
    tokens = [b.n_tokens for b in batches]
    need = np.ones((len(masks), len(batches)), dtype=bool)
    one = int(prefix_steps(masks[trie_order(masks)]).sum()) * len(batches)
    one_tok = int(prefix_steps(masks[trie_order(masks)]).sum()) * sum(tokens)
    out = []
    for k in (1, 2, 4, 8):
        units = plan(masks, need, tokens, k)
        b = balance(units, k)
        out.append(
            {
                "workers": k,
                "batches": len(batches),
                "units": len(units),
                "steps": int(b["steps"]),
                "ratio": b["steps"] / one,
                "token_ratio": sum(u.cost for u in units) / one_tok,
                "imbalance": b["imbalance"],
            }
        )
    return out


def shape_counts(n_players: int) -> None:
    """Part 1b: plan counts for ``n_players`` over 1, 8 and 25 equal batches."""
    masks = proximity_masks(n_players, 3)[0]
    ordered = masks[trie_order(masks)]
    steps = prefix_steps(ordered)
    kinds = np.arange(n_players) % 2  # attn0, mlp0, attn1, ...
    attn = mlp = 0
    for row, start in zip(ordered, shared_prefixes(ordered)):
        kept = row[start:]
        attn += int((kept & (kinds[start:] == 0)).sum())
        mlp += int((kept & (kinds[start:] == 1)).sum())
    print(
        f"{n_players} players, proximity window 3 = {len(masks)} coalitions: one process runs "
        f"{int(steps.sum())} sublayers per batch ({attn} attention, {mlp} MLP); the seed's way "
        f"{len(masks) * n_players}"
    )
    for n_batches in (1, 8, 25):
        need = np.ones((len(masks), n_batches), dtype=bool)
        tokens = [8192] * n_batches
        for k in (2, 4, 8):
            units = plan(masks, need, tokens, k)
            b = balance(units, k)
            one = int(steps.sum()) * n_batches
            print(
                f"  {n_batches:2d} batches K={k}: {len(units):3d} units, sublayer runs "
                f"{b['steps'] / one:.3f}x one process, imbalance {b['imbalance']:.3f}, busiest "
                f"worker's finish {b['finish'] * k / (one * 8192):.3f}x a perfect split"
            )


def real_run(model, task, masks: np.ndarray) -> dict:
    import torch

    torch.set_num_threads(1)
    local = lf.Game(model, task, progress=False)
    t0 = time.perf_counter()
    want = local.loglik(masks)
    local_s = time.perf_counter() - t0
    with lf.Game(model, task, progress=False, workers=2, threads_per_worker=1) as game:
        t0 = time.perf_counter()
        got = game.loglik(masks)
        ray_s = time.perf_counter() - t0
        log = game.pool.unit_log
        stats = game.pool.stats
        batches = game.executor.batches
    planned = plan(
        masks, np.ones((len(masks), len(batches)), bool), [b.n_tokens for b in batches], 2
    )
    compute = np.array([u["compute_s"] for u in log])
    overhead = np.array([u["overhead_s"] for u in log])
    store = np.array([u["store_s"] for u in log])
    return {
        "equal": bool(np.array_equal(got, want)),
        "local_s": local_s,
        "ray_s": ray_s,
        "units": len(log),
        "steps": sum(s["steps"] for s in stats),
        "planned": sum(u.steps for u in planned),
        "one_process": local.executor.sublayer_evaluations,
        "compute_ms": np.median(compute) * 1e3,
        "overhead_ms": np.median(overhead) * 1e3,
        "overhead_max_ms": overhead.max() * 1e3,
        "store_ms": np.median(store) * 1e3,
        "overhead_share": overhead.sum() / compute.sum(),
        "imbalance": max(s["steps"] for s in stats) / np.mean([s["steps"] for s in stats]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default="capitals", help="task of part 1 (default capitals)")
    p.add_argument("--items", type=int, default=None, help="items of part 1 (default all)")
    p.add_argument("--run-items", type=int, default=24, help="capitals items for part 2")
    p.add_argument("--counts", action="store_true", help="part 1 only")
    p.add_argument("--players", type=int, default=None, help="part 1b only, for this shape")
    args = p.parse_args()
    if args.players:
        shape_counts(args.players)
        return
    model = lf.load(args.model)
    masks = proximity_masks(model.n_players, 3)[0]
    task = lf.tasks.load(args.task, limit=args.items)
    requests = task.requests(model.tokenizer)
    print(
        f"{model.name}: {model.n_players} players, proximity window 3 = {len(masks)} coalitions; "
        f"{task.name} {len(task)} items, {len(requests)} requests"
    )
    out = []
    for name, batch_tokens in LAYOUTS.items():
        for r in counts(model, masks, requests, batch_tokens):
            print(
                f"  {name:<27} K={r['workers']}: {r['batches']:3d} batches, {r['units']:3d} "
                f"units, sublayer runs {r['steps']:8d} = {r['ratio']:.3f}x one process "
                f"(token-weighted {r['token_ratio']:.3f}x), imbalance max/mean "
                f"{r['imbalance']:.3f}"
            )
            size = f"{model.name} proximity-3 {task.name} x{len(task)} {name}"
            common = ("scale", f"K={r['workers']}", size, "count", "any")
            out += [
                rows.row(*common, "sublayer_runs_vs_one_process", r["ratio"]),
                rows.row(*common, "imbalance_max_over_mean", r["imbalance"]),
            ]
    if not args.counts:
        run_task = lf.tasks.load("capitals", limit=args.run_items)
        r = real_run(model, run_task, masks)
        print(
            f"real run, {args.run_items} items, 2 Ray workers x 1 thread vs 1 process x 1 thread: "
            f"log-likelihoods equal: {r['equal']}; wall {r['ray_s']:.1f} s vs {r['local_s']:.1f} s "
            f"(2 cores shared with the driver)\n"
            f"  sublayer runs: workers {r['steps']:.0f}, plan {r['planned']}, one process "
            f"{r['one_process']} ({r['steps'] / r['one_process']:.3f}x); worker imbalance "
            f"{r['imbalance']:.3f}\n"
            f"  per unit ({r['units']} units): compute {r['compute_ms']:.0f} ms median, Ray "
            f"overhead {r['overhead_ms']:.1f} ms median ({r['overhead_max_ms']:.1f} ms max), "
            f"driver cache write {r['store_ms']:.1f} ms median; overhead / compute "
            f"{100 * r['overhead_share']:.2f}%"
        )
        size = f"{model.name} proximity-3 capitals x{args.run_items}"
        common = ("scale", "ray K=2", size, "float32", "cpu")
        out += [
            rows.row(*common, "unit_compute_ms", r["compute_ms"]),
            rows.row(*common, "unit_overhead_ms", r["overhead_ms"]),
            rows.row(*common, "overhead_over_compute", r["overhead_share"]),
        ]
    rows.append(out)


if __name__ == "__main__":
    main()
