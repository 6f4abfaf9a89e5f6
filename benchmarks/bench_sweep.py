"""Sweep throughput: the seed paper's way vs our naive executor vs our fast executor.

All three paths score the same coalitions on the same model and task items, in one run:

(a) ``seed``   the way the seed paper's scripts and lm-evaluation-harness do it
               (layerfast.bench.seed_way): the plain HF forward with a forward hook that
               multiplies each removed sublayer's output by zero (so the sublayer is still
               computed), logits over the whole vocabulary at every position, a full
               log-softmax, then the continuation's log-probs summed;
(b) ``naive``  our executor: removed sublayers are skipped, log-probs only at continuation
               positions, chunked over the vocabulary;
(c) ``prefix`` (b) plus prefix sharing across coalitions (bit-identical to (b));
(d) ``fast``   (c) plus shared-context packing of each item's choices and small batches stacked
               into one sublayer call (``--stack-tokens``; the defaults of lf.Game).

Each path runs in its own subprocess so that its peak resident memory is its own. Printed: wall
time per path, ratios, sublayer evaluations per utility (machine independent), peak RSS, and a
check that the three paths give the same utilities. Wall time, peak RSS and sublayer evaluations
per utility of each path are also appended as rows to benchmarks/results.csv (benchmarks/rows.py).

    python benchmarks/bench_sweep.py --task capitals --limit 20 --sweep ablation
    python benchmarks/bench_sweep.py --task capitals --limit 20 --sweep proximity
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import rows
import torch

PATHS = ("seed", "naive", "prefix", "fast")


def sweep_masks(n: int, sweep: str) -> np.ndarray:
    from layerfast.bench.sweep import sweep_masks as masks

    return masks(sweep, n)


def run_path(args) -> dict:
    """One path in this process: returns utilities, wall time, sublayer counts, peak RSS."""
    import layerfast as lf
    from layerfast.evaluation.naive_executor import NaiveExecutor
    from layerfast.evaluation.prefix_executor import PrefixExecutor
    from layerfast.tasks.scoring import Scorer

    torch.manual_seed(0)
    model = load_model(args)
    task = lf.tasks.load(args.task, limit=args.limit, seed=args.seed)
    requests = task.requests(model.tokenizer)
    masks = sweep_masks(model.n_players, args.sweep)
    if args.path == "seed":
        from layerfast.bench.seed_way import SeedWayScorer

        executor = SeedWayScorer(model, requests, args.batch_tokens)
    else:
        options = {"batch_tokens": args.batch_tokens, "pack": args.path == "fast"}
        if args.path == "fast":
            options["stack_tokens"] = args.stack_tokens
        cls = NaiveExecutor if args.path == "naive" else PrefixExecutor
        executor = cls(model, requests, **options)
    warm = executor.loglik_many(masks[:1])  # warm-up (first pass is slower on this CPU)
    executor.sublayer_evaluations = executor.token_sublayer_evaluations = 0
    t0 = time.perf_counter()
    ll = executor.loglik_many(masks)
    wall = time.perf_counter() - t0
    scorer = Scorer(task)
    assert np.allclose(warm[0], ll[0], atol=1e-4)
    return {
        "path": args.path,
        "wall_s": wall,
        "n_coalitions": len(masks),
        "n_requests": len(requests),
        "n_tokens": sum(len(r.input_ids) for r in requests),
        "sublayer_evaluations": executor.sublayer_evaluations,
        "token_sublayer_evaluations": executor.token_sublayer_evaluations,
        "acc_norm": [scorer(u, "acc_norm") for u in ll],
        "dtype": str(model.dtype).removeprefix("torch."),
        "device": str(model.device),
        "loglik": ll.tolist(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def load_model(args):
    import layerfast as lf

    if args.model != "llama-random":
        return lf.load(args.model, dtype=args.dtype)
    from layerfast.bench.workload import load_model as load_random

    base = lf.load("smollm2-135m")  # for its tokenizer
    model = load_random("random:llama-3.2-1b", None, args.dtype or "fp32")
    if args.layers < model.n_blocks:
        del model.hf_model.model.layers[args.layers :]
        model.hf_model.config.num_hidden_layers = args.layers
        model = lf.load(model.hf_model, tokenizer=base.tokenizer)
    else:
        model.tokenizer = base.tokenizer
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model",
        default="smollm2-135m",
        help="packaged name, local folder, or 'llama-random' (Llama-3.2-1B-shaped, random "
        "weights, the first --layers blocks)",
    )
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--dtype", default=None)
    p.add_argument("--task", default="capitals")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sweep", choices=["ablation", "proximity"], default="ablation")
    p.add_argument("--batch-tokens", type=int, default=2048)
    p.add_argument(
        "--stack-tokens",
        default="auto",
        type=lambda text: text if text == "auto" else int(text),
        help="the fast path's stacking of small batches (lf.Game's default: auto); 0 = off",
    )
    p.add_argument("--paths", default=",".join(PATHS))
    p.add_argument("--path", choices=PATHS, help=argparse.SUPPRESS)  # internal: run one path
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args()
    if args.path:
        print(json.dumps(run_path(args)))
        return

    results = {}
    for path in args.paths.split(","):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--path", path]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"path {path} failed:\n{proc.stderr[-3000:]}")
        results[path] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[path]
        print(
            f"{path:>7}: {r['wall_s']:8.1f} s  {r['sublayer_evaluations']:7d} sublayer x batch "
            f"runs ({r['sublayer_evaluations'] / r['n_coalitions']:.1f} per utility), "
            f"{r['token_sublayer_evaluations'] / r['n_coalitions']:.0f} sublayer x tokens per "
            f"utility  peak RSS {r['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    first = next(iter(results.values()))
    print(
        f"\n{args.model} | {args.task} x {args.limit} items ({first['n_requests']} requests, "
        f"{first['n_tokens']} tokens) | {args.sweep} sweep, {first['n_coalitions']} coalitions"
    )
    pairs = [
        ("seed", "naive"),
        ("seed", "prefix"),
        ("seed", "fast"),
        ("naive", "prefix"),
        ("naive", "fast"),
    ]
    for a, b in pairs:
        if a in results and b in results:
            ra, rb = results[a], results[b]
            tokens = rb["token_sublayer_evaluations"] / ra["token_sublayer_evaluations"]
            print(
                f"  {a} / {b}: wall {ra['wall_s'] / rb['wall_s']:.2f}x; {b} runs "
                f"{rb['sublayer_evaluations'] / ra['sublayer_evaluations']:.3f}x the sublayer x "
                f"batch runs and {tokens:.3f}x the sublayer x token runs of {a}"
            )
    if "naive" in results and "prefix" in results:
        same = np.array_equal(results["naive"]["loglik"], results["prefix"]["loglik"])
        print(f"  prefix == naive bit for bit: {same}")
    for other in ("seed", "fast"):
        if other in results and "naive" in results:
            diff = np.max(
                np.abs(np.array(results[other]["loglik"]) - np.array(results["naive"]["loglik"]))
            )
            agree = np.mean(
                np.array(results[other]["acc_norm"]) == np.array(results["naive"]["acc_norm"])
            )
            print(
                f"  {other} vs naive: max |loglik diff| {diff:.2e}, same acc_norm in {agree:.0%} "
                "of coalitions"
            )
    rows.append(result_rows(args, results))
    if args.json:
        for r in results.values():
            r.pop("loglik")
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv[1:], "results": results}, f, indent=1)


def result_rows(args, results: dict) -> list[dict]:
    """Rows for benchmarks/results.csv: one run per path, so p50 = p20 = p80."""
    model = args.model + (f" ({args.layers} layers)" if args.model == "llama-random" else "")
    size = f"{model} {args.task} x{args.limit} {args.sweep}"
    out = []
    for path, r in results.items():
        common = ("sweep", path, size, r["dtype"], r["device"])
        out += [
            rows.row(*common, "wall_s", r["wall_s"]),
            rows.row(*common, "peak_RSS_MB", r["peak_rss_mb"]),
            rows.row(
                *common, "sublayer_runs_per_utility", r["sublayer_evaluations"] / r["n_coalitions"]
            ),
            rows.row(
                *common,
                "sublayer_tokens_per_utility",
                r["token_sublayer_evaluations"] / r["n_coalitions"],
            ),
        ]
    return out


if __name__ == "__main__":
    main()
