"""Proximity vs permutation layer Shapley on the default real model, at equal budget.

Both estimators run on the same Game (same model, items and cache), so the permutation run
reuses any coalition the proximity run (or an earlier report) already evaluated. Prints, per
utility, the rank agreement (Spearman, Kendall) of the two estimates, their median standard
errors, and the players both rank highest.

    python experiments/compare_estimators.py --task capitals --limit 20 --out results/compare
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import layerfast as lf
from layerfast.estimators.proximity import proximity_cost
from layerfast.estimators.ranks import kendall, spearman
from layerfast.report.files import environment


def _median(x) -> float:
    x = np.asarray(x, dtype=float)
    return float(np.median(x[np.isfinite(x)])) if np.isfinite(x).any() else float("nan")


def _top(res, k: int = 5) -> list[str]:
    return [res.players[i] for i in np.argsort(-res.values)[:k]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default="capitals")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--window", type=int, default=3)
    p.add_argument("--utilities", default="acc_norm,margin")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--perm-multiples",
        default="1,4",
        help="permutation budgets as multiples of the proximity cost (1 = equal budget)",
    )
    p.add_argument("--out", type=Path, default=Path("results/compare"))
    args = p.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    model = lf.load(args.model)
    task = lf.tasks.load(args.task, limit=args.limit, seed=args.seed)
    game = lf.Game(model, task, cache=args.out / "utilities.sqlite")
    budget = proximity_cost(game.n_players, args.window)
    print(f"{model} | {task} | budget {budget} coalitions each")
    t0 = time.time()
    rows = []
    for utility in args.utilities.split(","):
        g = game.with_utility(utility)
        prox = lf.shapley(g, method="proximity", window=args.window, progress=True)
        for multiple in (int(k) for k in args.perm_multiples.split(",")):
            perm = lf.shapley(
                g, method="permutation", budget=multiple * budget, seed=args.seed, progress=True
            )
            rho, rho_p = spearman(prox.values, perm.values)
            tau, _ = kendall(prox.values, perm.values)
            row = {
                "utility": utility,
                "permutation_budget": multiple * budget,
                "proximity_budget": budget,
                "spearman": rho,
                "spearman_p": rho_p,
                "kendall": tau,
                "proximity_median_stderr": _median(prox.stderr),
                "permutation_median_stderr": _median(perm.stderr),
                "permutation_pairs": perm.info.get("n_pairs"),
                "proximity_top5": _top(prox),
                "permutation_top5": _top(perm),
                "proximity": prox.to_dict(),
                "permutation": perm.to_dict(),
            }
            rows.append(row)
            print(
                f"\n{utility}, permutation budget {multiple}x "
                f"({row['permutation_pairs']} antithetic "
                f"pairs): Spearman {rho:.3f} (p={rho_p:.2g}), Kendall {tau:.3f}; median s.e. "
                f"proximity {row['proximity_median_stderr']:.4f}, permutation "
                f"{row['permutation_median_stderr']:.4f}"
            )
            print(f"  top-5 proximity:   {row['proximity_top5']}")
            print(f"  top-5 permutation: {row['permutation_top5']}")
    wall = time.time() - t0
    print(f"\n{wall:.0f} s")
    (args.out / "compare.json").write_text(
        json.dumps(
            {
                "model": model.name,
                "task": task.name,
                "n_items": len(task),
                "wall_s": wall,
                "environment": environment(),
                "results": rows,
            },
            indent=2,
            default=float,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
