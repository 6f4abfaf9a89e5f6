"""Likelihood vs generation: do the two views rank the sublayers alike?

For each packaged model and each task that exists in both forms (``analogies``/``analogies-gen``,
``capitals``/``capitals-gen``): the single-sublayer ablation sweep scored by generated answers
(``exact_match``) and by the likelihood of the given answer (``acc_norm``), on the same items;
Spearman's rho of the per-sublayer drops with an item-bootstrap interval, and the sublayers whose
ranks differ most.

    python experiments/generation_agreement.py --out benchmarks/generation_agreement.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import layerfast as lf
from layerfast.report.agreement import likelihood_agreement

CASES = "analogies-gen:60,capitals-gen:40"  # task:items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m")
    parser.add_argument("--cases", default=CASES, help="task:items, comma-separated")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/generation_agreement.json"))
    parser.add_argument(
        "--cache", type=Path, default=Path("benchmarks/generation_agreement.sqlite")
    )
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        model = lf.load(name)
        for case in args.cases.split(","):
            spec, limit = case.split(":")[0], int(case.split(":")[1])
            t0 = time.time()
            game = lf.Game(model, lf.tasks.load(spec, limit=limit), cache=args.cache)
            abl = lf.ablate(game, item_bootstrap=0)
            agr, _, record = likelihood_agreement(game, limit, cache=args.cache, progress=False)
            row = {
                "model": name,
                "task": spec,
                "items": limit,
                "generation_full": abl.full,
                "likelihood_full": record["likelihood"]["full"],
                "spearman": agr.spearman,
                "interval": [agr.low, agr.high],
                "most_different": agr.most_different,
                "near_ties": game.near_ties,
                "decoded_tokens": game.decoded_tokens,
                "wall_s": round(time.time() - t0, 1),
            }
            row["agreement"] = record  # every player's drops and ranks in both views
            print(json.dumps({k: v for k, v in row.items() if k != "agreement"}, default=str))
            rows.append(row)
    args.out.write_text(json.dumps(rows, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
