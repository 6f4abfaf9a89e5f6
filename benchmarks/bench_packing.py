"""Trie packing on a 5-shot task: tokens computed per coalition and wall time, three layouts side
by side in one run, on the same model, items and coalitions:

* ``harness``: one row per request, as lm-evaluation-harness feeds them (``pack=False``);
* ``per-item``: one row per item, its context shared by its choices (the packing before issue 15:
  the trie with items never joining, ``MIN_SHARED`` set above any prompt length);
* ``trie``: items whose prompts share >= MIN_SHARED leading tokens share one row (the default).

The task is the packaged capitals task turned 5-shot the way the harness's ``first_n`` sampler
does it: the same 5 solved items (the first 5) before every other question. Each layout scores
the full model and a few ablated coalitions with the naive executor (every coalition computes
every batch in full, so tokens per coalition are the layout's own); log-likelihoods are compared
with the harness layout. Rows are appended to benchmarks/results.csv.

    python benchmarks/bench_packing.py --limit 60
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import rows

import layerfast as lf
from layerfast.evaluation import batching
from layerfast.evaluation.naive_executor import NaiveExecutor
from layerfast.tasks import Item, Task
from layerfast.tasks.scoring import Scorer


def five_shot(task: Task, limit: int) -> Task:
    shots = task.items[:5]
    prefix = "".join(f"{it.context}{task.delimiter}{it.choices[it.gold]}\n\n" for it in shots)
    items = [Item(prefix + it.context, it.choices, it.gold, it.id) for it in task.items[5:]]
    return Task(f"{task.name}-5shot", items[:limit], task.delimiter)


def run(model, requests, layout: str, masks: np.ndarray, batch_tokens: int) -> dict:
    saved = batching.MIN_SHARED
    if layout == "per-item":
        batching.MIN_SHARED = 1 << 30
    try:
        ex = NaiveExecutor(model, requests, batch_tokens=batch_tokens, pack=layout != "harness")
    finally:
        batching.MIN_SHARED = saved
    ex.loglik_many(masks[:1])  # warm-up
    t0 = time.perf_counter()
    ll = ex.loglik_many(masks)
    wall = time.perf_counter() - t0
    return {
        "loglik": ll,
        "wall_s": wall,
        "tokens": sum(b.n_tokens for b in ex.batches),
        "padded": sum(b.input_ids.numel() for b in ex.batches),
        "batches": len(ex.batches),
        "rows": sum(b.input_ids.shape[0] for b in ex.batches),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--limit", type=int, default=60)
    p.add_argument("--batch-tokens", type=int, default=2048)
    args = p.parse_args()
    model = lf.load(args.model)
    task = five_shot(lf.tasks.load("capitals"), args.limit)
    requests = task.requests(model.tokenizer)
    n = model.n_players
    masks = np.ones((3, n), dtype=bool)
    masks[1, n // 2] = False
    masks[2, n - 5 : n - 2] = False
    results = {
        lay: run(model, requests, lay, masks, args.batch_tokens)
        for lay in ("harness", "per-item", "trie")
    }
    scorer = Scorer(task)
    base = results["harness"]
    print(
        f"{model.name} | {task.name}: {len(task)} items, {len(requests)} requests, prompts of "
        f"~{np.mean([len(r.input_ids) for r in requests]):.0f} tokens | {len(masks)} coalitions, "
        f"batches of {args.batch_tokens} padded tokens, fp32, naive executor"
    )
    out = []
    for lay, r in results.items():
        diff = float(np.max(np.abs(r["loglik"] - base["loglik"])))
        same = all(
            np.array_equal(scorer.predictions(a, "acc_norm"), scorer.predictions(b, "acc_norm"))
            for a, b in zip(r["loglik"], base["loglik"])
        )
        print(
            f"  {lay:<9} {r['tokens']:7d} real tokens per coalition "
            f"({base['tokens'] / r['tokens']:5.2f}x fewer than harness, "
            f"{results['per-item']['tokens'] / r['tokens']:5.2f}x fewer than per-item), "
            f"{r['padded']:7d} padded, {r['rows']:4d} rows in {r['batches']:3d} batches, "
            f"{r['wall_s'] / len(masks):6.2f} s per coalition; max |loglik - harness| {diff:.1e}, "
            f"same acc_norm: {same}"
        )
        size = f"{model.name} capitals-5shot x{len(task)}"
        common = ("packing", lay, size, "float32", "cpu")
        out += [
            rows.row(*common, "real_tokens_per_coalition", r["tokens"]),
            rows.row(*common, "s_per_coalition", r["wall_s"] / len(masks)),
        ]
    for a, b in (("harness", "trie"), ("per-item", "trie")):
        print(f"  {a} / {b}: wall {results[a]['wall_s'] / results[b]['wall_s']:.2f}x")
    rows.append(out)


if __name__ == "__main__":
    main()
