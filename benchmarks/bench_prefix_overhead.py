"""Cost per evaluation of the naive, prefix and stacked executors, alternated in one process.

For each task size (``--limits``: items of the task, trie-packed), the same coalitions (the 60
single-sublayer ablations, every third window of 3, the full coalition and random ones: 93 in
all on a 60-sublayer model) are scored by

    naive     every coalition from the embeddings (the reference),
    prefix    shared prefixes, unstacked (bit-identical to naive),
    stacked   shared prefixes, small batches stacked up to --stack-tokens padded tokens,

in turn, ``--repeat`` times, so that drifts of the machine hit every path alike. Each run is
split by wrapping the model's sublayer step and the executor's score: ``steps`` (sublayer calls),
``head`` (the LM head and log-probs, one per coalition and batch) and ``other`` (everything
else: masks, trie order, state stack, Python). Printed per path: medians of wall time, of each
part, the cost per token-sublayer evaluation (wall and steps alone, microseconds) and the head's
cost per coalition; ratios to naive; whether the values equal naive's (bit for bit for prefix,
within the packing tolerance for stacked). Rows go to benchmarks/results.csv, everything to
--json.

    python benchmarks/bench_prefix_overhead.py --limits 4,12 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
import rows
import torch

PATHS = ("naive", "prefix", "stacked")


def coalitions(n: int, seed: int) -> np.ndarray:
    """bool [93, n] for n = 60: ablations, every third window of 3, the full one, 13 random."""
    from layerfast.estimators.ablation import ablation_masks

    windows = []
    for start in range(0, n - 2, 3):
        row = np.ones(n, dtype=bool)
        row[start : start + 3] = False
        windows.append(row)
    rng = np.random.default_rng(seed)
    random = rng.random((13, n)) < 0.7
    return np.concatenate([ablation_masks(n), np.array(windows), random])[:93]


class Timed:
    """Adds the seconds spent in ``owner.name(...)`` to ``self.seconds`` while installed."""

    def __init__(self, owner, name: str):
        self.owner, self.name, self.seconds = owner, name, 0.0
        self.inner = getattr(owner, name)

    def __enter__(self):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return self.inner(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        setattr(self.owner, self.name, timed)
        return self

    def __exit__(self, *exc):
        delattr(self.owner, self.name)


def run_once(executor, masks: np.ndarray) -> dict:
    executor.sublayer_evaluations = executor.token_sublayer_evaluations = 0
    with Timed(executor.model, "step") as steps, Timed(executor, "score") as head:
        t0 = time.perf_counter()
        values = executor.loglik_many(masks)
        wall = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "steps_s": steps.seconds,
        "head_s": head.seconds,
        "other_s": wall - steps.seconds - head.seconds,
        "token_sublayer_evaluations": executor.token_sublayer_evaluations,
        "values": values,
    }


def measure(model, task_name: str, limit: int, masks, repeat: int, stack_tokens: int) -> dict:
    import layerfast as lf
    from layerfast.evaluation.naive_executor import NaiveExecutor
    from layerfast.evaluation.prefix_executor import PrefixExecutor
    from layerfast.evaluation.stacking import group_size

    task = lf.tasks.load(task_name, limit=limit, seed=0)
    requests = task.requests(model.tokenizer)
    executors = {
        "naive": NaiveExecutor(model, requests, pack=True),
        "prefix": PrefixExecutor(model, requests, pack=True),
        "stacked": PrefixExecutor(model, requests, pack=True, stack_tokens=stack_tokens),
    }
    batches = executors["naive"].batches
    for executor in executors.values():  # warm-up
        executor.loglik_many(masks[:2])
    runs: dict[str, list[dict]] = {name: [] for name in executors}
    for _ in range(repeat):
        for name, executor in executors.items():
            runs[name].append(run_once(executor, masks))
    reference = runs["naive"][0]["values"]
    out = {
        "limit": limit,
        "batches": [int(b.input_ids.numel()) for b in batches],
        "real_tokens": [int(b.n_tokens) for b in batches],
        "group": [group_size(model, b, executors["stacked"].stack_tokens) for b in batches],
        "paths": {},
    }
    for name, found in runs.items():
        tse = found[0]["token_sublayer_evaluations"]
        med = {k: statistics.median(r[k] for r in found) for k in found[0] if k.endswith("_s")}
        diff = max(float(np.max(np.abs(r["values"] - reference))) for r in found)
        out["paths"][name] = {
            **med,
            "walls_s": [r["wall_s"] for r in found],
            "token_sublayer_evaluations": tse,
            "us_per_evaluation": 1e6 * med["wall_s"] / tse,
            "us_per_evaluation_steps": 1e6 * med["steps_s"] / tse,
            "head_ms_per_coalition": 1e3 * med["head_s"] / (len(masks) * len(batches)),
            "max_abs_diff_vs_naive": diff,
        }
    return out


def report(result: dict, n_masks: int) -> list[str]:
    naive = result["paths"]["naive"]
    lines = [
        f"{result['limit']} items: batches of {result['batches']} padded tokens "
        f"({result['real_tokens']} real), stacked groups {result['group']}, {n_masks} coalitions",
        f"  {'path':<8} {'wall s':>7} {'steps':>7} {'head':>6} {'other':>6} "
        f"{'us/eval':>8} {'steps us/eval':>13} {'head ms/coal':>12} {'compute':>8} "
        f"{'wall':>6} {'max |diff|':>10}",
    ]
    for name, p in result["paths"].items():
        compute = naive["token_sublayer_evaluations"] / p["token_sublayer_evaluations"]
        lines.append(
            f"  {name:<8} {p['wall_s']:7.2f} {p['steps_s']:7.2f} {p['head_s']:6.2f} "
            f"{p['other_s']:6.2f} {p['us_per_evaluation']:8.1f} "
            f"{p['us_per_evaluation_steps']:13.1f} {p['head_ms_per_coalition']:12.1f} "
            f"{compute:7.2f}x {naive['wall_s'] / p['wall_s']:5.2f}x "
            f"{p['max_abs_diff_vs_naive']:10.2e}"
        )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="capitals")
    parser.add_argument("--limits", default="4,12", help="task sizes (items), comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stack-tokens", type=int, default=1024)
    parser.add_argument("--json", default="benchmarks/prefix_overhead.json")
    args = parser.parse_args(argv)

    import layerfast as lf

    torch.manual_seed(0)
    model = lf.load(args.model)
    masks = coalitions(model.n_players, seed=0)
    print(
        f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), {time.strftime('%Y-%m-%d')}; "
        f"{args.model} {str(model.dtype).removeprefix('torch.')}, {args.task}"
    )
    results, out_rows = [], []
    for limit in (int(x) for x in args.limits.split(",")):
        result = measure(model, args.task, limit, masks, args.repeat, args.stack_tokens)
        print("\n".join(report(result, len(masks))), flush=True)
        results.append(result)
        size = f"{args.model} {args.task} x{limit} ({result['batches']} tokens), 93 coalitions"
        for name, p in result["paths"].items():
            common = ("prefix_overhead", name, size, str(model.dtype).removeprefix("torch."), "cpu")
            out_rows += [
                rows.row(*common, "s", p["walls_s"]),
                rows.row(*common, "us_per_token_sublayer", p["us_per_evaluation"]),
                rows.row(*common, "us_per_token_sublayer_steps", p["us_per_evaluation_steps"]),
                rows.row(*common, "head_ms_per_coalition", p["head_ms_per_coalition"]),
            ]
    rows.append(out_rows)
    with open(args.json, "w") as f:
        json.dump({"argv": sys.argv[1:], "date": time.strftime("%Y-%m-%d"), "results": results}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
