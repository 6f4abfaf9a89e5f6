"""Greedy sublayer search (FinerCut) three ways, side by side in one run: the FinerCut way (every
candidate a full Hugging Face forward with zeroing hooks, the "removed" sublayers still computed,
a full-vocabulary log-softmax per request), our naive executor, and our fast path (prefix
executor: a step's candidates share their residual states up to the sublayer each removes).

Prints and records (``--out``, default benchmarks/prune_search.json) per path: coalitions
evaluated, token-sublayer compute, wall time, and whether the removal order equals the fast
path's. Nothing else should run on the machine meanwhile. ``--finercut-steps K`` runs the FinerCut
way for the first K steps only (picks compared over those) and projects its wall time and compute
to the whole search's evaluations: it computes every sublayer of every coalition, so each
evaluation costs it the same.

    python benchmarks/bench_prune_search.py --task capitals --limit 12 --fraction 0.25
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

import layerfast as lf
from layerfast.bench.seed_way import SeedWayScorer
from layerfast.coalitions import coalition_keys


class FinerCutGame:
    """The seed scripts' evaluation as a game: masks bool [m, n] -> the task's utility [m], each
    coalition a full forward with zeroing hooks (a memo, as FinerCut keeps each step's best)."""

    def __init__(self, model, task, utility: str, batch_tokens: int, max_length: int):
        requests = task.requests(model.tokenizer, max_length)
        self.scorer = task.scorer(requests)
        self.utility = self.scorer.check(utility)
        self.chance = self.scorer.chance(self.utility)
        self.way = SeedWayScorer(model, requests, batch_tokens)
        self.players = list(model.players)
        self.n_players = model.n_players
        self.memo: dict[str, float] = {}

    def __call__(self, masks) -> np.ndarray:
        masks = np.asarray(masks, dtype=bool)
        keys = coalition_keys(masks)
        todo = [i for i, k in enumerate(keys) if k not in self.memo]
        if todo:
            rows = self.way.loglik_many(masks[todo])
            for i, row in zip(todo, rows):
                self.memo[keys[i]] = self.scorer(row, self.utility)
        return np.array([self.memo[k] for k in keys])

    @property
    def compute_run(self) -> int:
        return int(self.way.token_sublayer_evaluations)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="capitals")
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--utility", default="logprob")
    ap.add_argument("--fraction", type=float, default=0.25)
    ap.add_argument("--batch-tokens", type=int, default=2048)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--paths", default="fast,naive,finercut")
    ap.add_argument(
        "--finercut-steps",
        type=int,
        default=0,
        help="run the FinerCut way for this many steps only and project its time to the whole "
        "search (it runs every sublayer of every coalition: the same cost per evaluation); 0: all",
    )
    ap.add_argument("--out", type=Path, default=Path("benchmarks/prune_search.json"))
    args = ap.parse_args()
    torch.manual_seed(0)
    model = lf.load(args.model)
    task = lf.tasks.load(args.task, limit=args.limit)
    results = {}
    for path in args.paths.split(","):
        if path == "finercut":
            game = FinerCutGame(model, task, args.utility, args.batch_tokens, args.max_length)
        else:
            game = lf.Game(
                model, task, utility=args.utility, executor="prefix" if path == "fast" else "naive",
                batch_tokens=args.batch_tokens, max_length=args.max_length, progress=False,
            )  # fmt: skip
        short = path == "finercut" and args.finercut_steps
        t0 = time.perf_counter()
        res = lf.prune_search(
            game, target=args.finercut_steps if short else args.fraction, n_boot=0
        )
        wall = time.perf_counter() - t0
        if path == "finercut":
            game.way.close()
        results[path] = {
            "order": res.order,
            "utilities": res.utilities.tolist(),
            "evaluations": res.evaluations,
            "compute": int(game.compute_run),
            "wall_s": wall,
        }
        if short:  # every coalition costs the seed way one full forward: the same per evaluation
            whole = results["fast"]["evaluations"]
            results[path].update(
                measured_steps=args.finercut_steps,
                measured_evaluations=res.evaluations,
                measured_wall_s=wall,
                measured_compute=int(game.compute_run),
                wall_s=wall / res.evaluations * whole,
                compute=int(game.compute_run) // res.evaluations * whole,
                evaluations=whole,
                projected=True,
            )
        print(f"{path}: {wall:.1f} s, {res.evaluations} evaluations, {game.compute_run:,} "
              f"token-sublayer evaluations; order {', '.join(res.order)}", flush=True)  # fmt: skip
    fast = results.get("fast")
    for path, r in results.items():
        if fast is not None:
            k = len(r["order"])  # the FinerCut way may have run the first steps only
            r["same_order_as_fast"] = r["order"] == fast["order"][:k]
            r["max_utility_diff"] = float(
                np.max(np.abs(np.subtract(r["utilities"], fast["utilities"][: k + 1])))
            )
            r["compute_vs_fast"] = r["compute"] / fast["compute"]
            r["wall_vs_fast"] = r["wall_s"] / fast["wall_s"]
        print(f"{path}: compute x{r.get('compute_vs_fast', 1):.2f}, wall x"
              f"{r.get('wall_vs_fast', 1):.2f} of the fast path; same order: "
              f"{r.get('same_order_as_fast')}")  # fmt: skip
    record = {
        "date": date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        "threads, CPU",
        "torch": torch.__version__,
        "command": "python benchmarks/bench_prune_search.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "model": model.name,
        "task": f"{args.task} ({len(task)} items)",
        "utility": args.utility,
        "fraction": args.fraction,
        "paths": results,
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
