"""Shared-context packing on real tasks: per-item decisions and log-likelihoods vs the unpacked
(harness) layout, on the default model, for the full model and a few ablated coalitions.

    python experiments/check_packing.py --tasks capitals,analogies --limit 200
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import layerfast as lf
from layerfast.tasks.scoring import Scorer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tasks", default="capitals,analogies")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--dtype", default=None)
    args = p.parse_args()
    model = lf.load(args.model, dtype=args.dtype)
    n = model.n_players
    masks = np.ones((4, n), dtype=bool)
    masks[1, 0] = False  # attn0 off
    masks[2, n // 2 + 1] = False  # a middle mlp off
    masks[3, n - 6 : n - 3] = False  # a window near the top off
    for name in args.tasks.split(","):
        task = lf.tasks.load(name, limit=args.limit)
        scorer = Scorer(task)
        out = {}
        for pack in (False, True):
            game = lf.Game(model, task, pack=pack, progress=False)
            t0 = time.perf_counter()
            out[pack] = (game.loglik(masks), time.perf_counter() - t0)
        (plain, t_plain), (packed, t_packed) = out[False], out[True]
        diff = np.abs(plain - packed)
        print(
            f"{name} ({len(task)} items, {model.dtype}): max |loglik diff| {diff.max():.2e} "
            f"(median {np.median(diff):.1e}); unpacked {t_plain:.1f} s, packed {t_packed:.1f} s "
            f"({t_plain / t_packed:.2f}x)"
        )
        for u in ("acc", "acc_norm"):
            flips = [
                int(np.sum(scorer.predictions(a, u) != scorer.predictions(b, u)))
                for a, b in zip(plain, packed)
            ]
            values = [scorer(a, u) for a in plain]
            print(
                f"  {u}: per-item decisions that differ per coalition {flips} "
                f"(utilities {[round(v, 3) for v in values]})"
            )


if __name__ == "__main__":
    main()
