"""Stop when settled, checked against the truth: ``lf.shapley(..., target_stderr=, until=)`` on
the 12-block ground-truth games (their 4,096 memoised utilities, no forward pass).

For each utility (the tables of ``bench_ground_truth.py``: acc_norm and logprob) and each rule,
over many seeds: the coalitions used when it stopped, why it stopped, and whether the answer
holds against the exact values: for ``target_stderr=s``, the share of players whose error is
within 1.96 s (and the largest error); for ``until="topK"``, how often the returned top K is the
exact top K.

    python benchmarks/bench_stopping.py            # writes benchmarks/stopping.json
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
from bench_ground_truth import TableGame  # (next to this file)

ROOT = Path(__file__).resolve().parents[1]
TABLES = {
    "acc_norm": ROOT / "benchmarks" / "ground_truth" / "ground_truth.json",
    "logprob": ROOT / "benchmarks" / "ground_truth_logprob" / "ground_truth.json",
}


def rules(rms: float) -> list[dict]:
    """The rules tried: error-bar targets relative to the exact values' RMS, and top-K."""
    return [
        {"target_stderr": 0.2 * rms},
        {"target_stderr": 0.05 * rms},
        {"until": "top3"},
        {"until": "top5"},
        {"until": "top3", "target_stderr": 0.2 * rms},
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=30)
    p.add_argument("--budget", type=int, default=2048, help="the maximum budget")
    p.add_argument("--method", default="kernel_ht")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "stopping.json"))
    args = p.parse_args()

    import torch

    import layerfast as lf
    from layerfast.bench import machine
    from layerfast.estimators.exact import shapley_from_table

    out = {"command": "python benchmarks/bench_stopping.py", "method": args.method, "rows": []}
    out["machine"] = {**machine.describe(torch.device("cpu")), "platform": platform.platform()}
    for utility, path in TABLES.items():
        d = json.loads(path.read_text())
        table = np.asarray(d["table"], dtype=np.float64)
        game = TableGame(table, d["players"], None)
        truth = shapley_from_table(table, game.n_players)
        rms = float(np.sqrt(np.mean(truth**2)))
        for rule in rules(rms):
            used, reasons, within, worst, top_ok = [], {}, [], [], []
            for seed in range(args.seeds):
                res = lf.shapley(game, args.method, budget=args.budget, seed=seed, **rule)
                stop = res.info["stop"]
                used.append(stop["coalitions_evaluated"])
                reasons[stop["reason"]] = reasons.get(stop["reason"], 0) + 1
                err = np.abs(res.values - truth)
                worst.append(float(err.max()))
                if "target_stderr" in rule:
                    within.append(float(np.mean(err <= 1.96 * rule["target_stderr"])))
                if "until" in rule:
                    k = int(rule["until"].removeprefix("top"))
                    top_ok.append(set(np.argsort(-res.values)[:k]) == set(np.argsort(-truth)[:k]))
            row = {
                "utility": utility,
                "rule": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in rule.items()},
                "target_over_rms": rule.get("target_stderr", 0) / rms or None,
                "coalitions_median": float(np.median(used)),
                "coalitions_p20_p80": [float(np.percentile(used, q)) for q in (20, 80)],
                "reasons": reasons,
                "largest_error_median": float(np.median(worst)),
                "within_1.96_target": float(np.mean(within)) if within else None,
                "topk_correct": float(np.mean(top_ok)) if top_ok else None,
                "seeds": args.seeds,
            }
            out["rows"].append(row)
            print(
                f"{utility:9s} {str(row['rule']):48s} coalitions {row['coalitions_median']:6.0f} "
                f"{reasons} within {row['within_1.96_target']} top-K right {row['topk_correct']}",
                flush=True,
            )
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
