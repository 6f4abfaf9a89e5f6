"""Ground truth for the Shapley estimators: exact values of a 12-player block game on the real
model, and every estimator's error against them at equal budget and at equal compute.

1. The game: SmolLM2-135M on capitals (``--limit`` items, acc_norm), 12 block players (the other
   blocks always kept). ``lf.shapley(game, method="exact")`` evaluates all 4,096 coalitions; the
   cost actually run (wall time, sublayer and token-sublayer evaluations of the prefix executor)
   is recorded against the naive cost (every coalition from scratch).
2. Every estimator at every budget and seed, on the game's memoised values (a table of the
   4,096 utilities, so this part costs no forward pass): ours through ``lf.shapley``
   (``permutation``, ``truncated``, ``kernel``; ``proximity`` at windows 1-3, a fixed cost), and
   shapiq's first-order approximators through ``layerfast.bridges.shapiq`` (raw values; the
   empty-set baseline ``iv[()]`` is left out, the first-order values ``iv[(i,)]`` are compared).
   Per run: RMSE and Spearman's rho against the exact values, the coverage of the reported
   stderr (|est - exact| <= 1.96 stderr; ours only), the distinct coalitions used, and what they
   would cost from scratch: token-sublayer evaluations run in trie order with prefix sharing.
3. Output: ``benchmarks/ground_truth/`` (runs.csv, summary.csv, ground_truth.json), rows in
   ``benchmarks/results.csv``, ``docs/figures/ground_truth.png`` and ``.svg``, a printed table.

    python benchmarks/bench_ground_truth.py            # the defaults reproduce docs/shapley.md
    python benchmarks/bench_ground_truth.py --limit 2 --seeds 2 --budgets 64,256 --out /tmp/gt
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import rows  # noqa: E402 (benchmarks/rows.py, next to this file)

ROOT = Path(__file__).resolve().parents[1]
OURS = ("permutation", "truncated", "kernel", "kernel_ht")
WINDOWS = (1, 2, 3)
SHAPIQ = (
    "KernelSHAP",
    "UnbiasedKernelSHAP",
    "kADDSHAP",
    "SVARM",
    "PermutationSamplingSV",
    "StratifiedSamplingSV",
    "OwenSamplingSV",
)
BUDGETS = (64, 128, 256, 512, 1024, 2048)
PLAYERS = ",".join(f"block{b}" for b in range(18, 30))


class TableGame:
    """The game's utilities as a lookup (bool [m, n] -> float64 [m]) that records every
    coalition asked for; the values are the lf.Game's memoised ones, so estimates are those
    of the real game."""

    def __init__(self, table: np.ndarray, players: list[str], chance: float | None):
        self.table = np.asarray(table, dtype=np.float64)
        self.players = list(players)
        self.n_players = len(players)
        self.chance = chance
        self.bits = 1 << np.arange(self.n_players, dtype=np.int64)
        self.asked: set[int] = set()

    def __call__(self, masks) -> np.ndarray:
        ints = np.asarray(masks, dtype=bool).astype(np.int64) @ self.bits
        self.asked.update(ints.tolist())
        return self.table[ints]

    def take(self) -> np.ndarray:
        """The distinct coalitions asked for since the last take, bool [k, n]."""
        ints = np.fromiter(sorted(self.asked), dtype=np.int64)
        self.asked = set()
        return ((ints[:, None] & self.bits[None, :]) > 0).astype(bool)


class Compute:
    """What coalitions would cost from scratch on the game's model and batches: kept
    sublayers run in trie order with prefix sharing (one trie per batch), times real tokens."""

    def __init__(self, game):
        self.expand = game.player_set.expand
        self.n_batches = len(game.executor.batches)
        self.tokens = int(sum(b.n_tokens for b in game.executor.batches))

    def steps(self, masks: np.ndarray) -> tuple[int, int]:
        """(prefix-shared, naive) kept sublayer runs per batch for player masks bool [m, n]."""
        from layerfast.evaluation.prefix_executor import prefix_steps, trie_order

        model_masks = self.expand(masks)
        ordered = model_masks[trie_order(model_masks)]
        return int(prefix_steps(ordered).sum()), int(model_masks.sum())

    def token_sublayers(self, masks: np.ndarray) -> int:
        return self.steps(masks)[0] * self.tokens


def exact_pass(args, lf):
    """Build the game, run method="exact" on it and measure the cost; returns the game, the
    exact result, the table of the 4,096 utilities (indexed by coalition integer, bit i =
    player i) and the cost record."""
    import torch

    from layerfast.estimators.exact import int_to_masks

    if args.table:
        return stored_exact_pass(args, lf)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = lf.load(args.model)
    task = lf.tasks.load(args.task, limit=args.limit, seed=0)
    game = lf.Game(
        model,
        task,
        unit="block",
        players=args.players,
        utility=args.utility,
        cache=args.cache,
        chunk=args.chunk,
        progress=args.progress,
    )
    ex = game.executor
    ex.sublayer_evaluations = ex.token_sublayer_evaluations = 0
    t0 = time.perf_counter()
    exact = lf.shapley(game, method="exact", progress=False)
    wall = time.perf_counter() - t0
    n = game.n_players
    masks = int_to_masks(np.arange(1 << n), n)
    table = game(masks)  # memoised: no forward pass
    compute = Compute(game)
    shared, naive = compute.steps(masks)
    cost = {
        "wall_s": wall,
        "torch_threads": torch.get_num_threads(),
        "n_coalitions": 1 << n,
        "coalitions_run": game.n_forward,
        "sublayer_evaluations": ex.sublayer_evaluations,
        "token_sublayer_evaluations": ex.token_sublayer_evaluations,
        "trie_sublayer_evaluations": shared * compute.n_batches,
        "trie_token_sublayer_evaluations": shared * compute.tokens,
        "naive_sublayer_evaluations": naive * compute.n_batches,
        "naive_token_sublayer_evaluations": naive * compute.tokens,
        "n_batches": compute.n_batches,
        "n_requests": len(game.requests),
        "real_tokens": compute.tokens,
        "chunk": args.chunk,
    }
    if game.n_forward < cost["n_coalitions"]:
        cost["note"] = f"{cost['n_coalitions'] - game.n_forward} coalitions came from the cache"
    return game, exact, table, cost, compute


def stored_exact_pass(args, lf):
    """The exact pass of an earlier run (``--table ground_truth.json``): its 4,096 utilities and
    cost, and the game rebuilt (no forward pass) for the compute of each estimator's coalitions."""
    from layerfast.estimators.exact import shapley_from_table

    old = json.loads(Path(args.table).read_text())
    for key in ("model", "task", "items", "utility"):
        want = {"model": None, "task": args.task, "items": args.limit, "utility": args.utility}[key]
        if want is not None and old[key] != want:
            raise SystemExit(f"--table {args.table}: {key} is {old[key]!r}, not {want!r}")
    model = lf.load(args.model)
    task = lf.tasks.load(args.task, limit=args.limit, seed=0)
    game = lf.Game(model, task, unit="block", players=args.players, utility=args.utility)
    if game.players != old["players"]:
        raise SystemExit(f"--table {args.table}: players {old['players']} != {game.players}")
    table = np.asarray(old["table"], dtype=np.float64)
    n = game.n_players
    exact = lf.ShapleyResult(
        values=shapley_from_table(table, n),
        stderr=np.zeros(n),
        n_evaluations=1 << n,
        method="exact",
        players=game.players,
        full=table[-1],
        empty=table[0],
    )
    cost = dict(old["exact"]["cost"])
    cost["note"] = f"exact pass reused from {args.table} ({old['machine'].get('date')})"
    return game, exact, table, cost, Compute(game)


def estimator_runs(args, lf, game, exact, table, compute) -> list[dict]:
    """One record per (estimator, budget, seed)."""
    from layerfast.bridges.shapiq import to_shapiq_game
    from layerfast.estimators.ranks import spearman

    tg = TableGame(table, game.players, game.chance)
    truth = exact.values
    out = []

    def record(name, family, budget, seed, values, stderr, n_eval, info=None):
        used = tg.take()
        err = values - truth
        finite = np.isfinite(stderr)
        cover = (
            float(np.mean(np.abs(err[finite]) <= 1.96 * stderr[finite]))
            if finite.any()
            else float("nan")
        )
        out.append(
            {
                "estimator": name,
                "family": family,
                "budget": budget,
                "seed": seed,
                "rmse": float(np.sqrt(np.mean(err**2))),
                "max_abs_error": float(np.max(np.abs(err))),
                "spearman": spearman(values, truth)[0] if np.ptp(values) > 0 else float("nan"),
                "coverage": cover,
                "n_evaluations": int(n_eval),
                "n_distinct_asked": len(used),
                "token_sublayers": compute.token_sublayers(used) if len(used) else 0,
                "efficiency_gap": float(values.sum() - (table[-1] - table[0])),
                "values": values.tolist(),
                "stderr": [None if not np.isfinite(s) else float(s) for s in stderr],
                **(info or {}),
            }
        )

    for w in WINDOWS:
        res = lf.shapley(tg, method="proximity", window=w, eval_empty=False)
        record(
            f"proximity (L={w})",
            "layerfast",
            res.n_evaluations,
            0,
            res.values,
            res.stderr,
            res.n_evaluations,
        )
    ours = [m for m in OURS if m != "truncated" or game.chance is not None]
    if len(ours) < len(OURS):
        print(f"  truncated left out: utility {game.utility!r} has no chance level", flush=True)
    for budget in args.budgets:
        for seed in range(args.seeds):
            for method in ours:
                try:
                    res = lf.shapley(tg, method=method, budget=budget, seed=seed)
                except Exception as e:  # noqa: BLE001 (recorded, the sweep goes on)
                    tg.take()
                    print(f"  {method} budget={budget} seed={seed}: {e}", file=sys.stderr)
                    continue
                record(method, "layerfast", budget, seed, res.values, res.stderr, res.n_evaluations)
            for name in args.shapiq:
                import shapiq.approximator as approximators

                approx = getattr(approximators, name)(game.n_players, random_state=seed)
                try:
                    iv = approx.approximate(budget, to_shapiq_game(tg))
                except Exception as e:  # noqa: BLE001
                    tg.take()
                    print(f"  shapiq {name} budget={budget} seed={seed}: {e}", file=sys.stderr)
                    continue
                values = np.array([iv[(i,)] for i in range(game.n_players)], dtype=np.float64)
                n_eval = len(tg.asked)
                record(
                    f"shapiq {name}",
                    "shapiq",
                    budget,
                    seed,
                    values,
                    np.full(game.n_players, np.nan),
                    n_eval,
                    {"shapiq_baseline": float(iv[()])},
                )
    return out


def summarise(runs: list[dict]) -> list[dict]:
    """Median and 20th/80th percentiles over seeds per (estimator, budget)."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["estimator"], r["budget"]), []).append(r)
    out = []
    for (name, budget), rs in groups.items():
        row = {"estimator": name, "family": rs[0]["family"], "budget": budget, "n_seeds": len(rs)}
        cover = np.array([r["coverage"] for r in rs], dtype=np.float64)
        # pooled over seeds and players (every run has the same n players)
        row["coverage_pooled"] = float(np.mean(cover)) if np.isfinite(cover).all() else None
        for key in ("rmse", "spearman", "coverage", "n_evaluations", "token_sublayers"):
            vals = np.array([r[key] for r in rs], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            for q, tag in ((50, "median"), (20, "p20"), (80, "p80")):
                row[f"{key}_{tag}"] = float(np.percentile(vals, q)) if len(vals) else float("nan")
        out.append(row)
    return out


def print_table(summary, cost, exact_tokens) -> None:
    naive = cost["naive_token_sublayer_evaluations"]
    print(
        f"\nexact: {cost['n_coalitions']} coalitions in {cost['wall_s']:.0f} s; "
        f"{cost['token_sublayer_evaluations']:,} token-sublayer evaluations run "
        f"(naive {cost['naive_token_sublayer_evaluations']:,}: "
        f"{naive / max(1, cost['token_sublayer_evaluations']):.1f}x)"
    )
    head = (
        f"{'estimator':<32} {'budget':>6} {'RMSE':>8} {'[p20, p80]':>18} {'rho':>6} "
        f"{'cover':>6} {'compute':>8}"
    )
    print(head + "\n" + "-" * len(head))
    for s in sorted(summary, key=lambda s: (s["family"], s["estimator"], s["budget"])):
        cover = "" if s["coverage_pooled"] is None else f"{s['coverage_pooled']:.2f}"
        print(
            f"{s['estimator']:<32} {s['budget']:>6} {s['rmse_median']:8.4f} "
            f"[{s['rmse_p20']:.4f}, {s['rmse_p80']:.4f}] {s['spearman_median']:6.2f} "
            f"{cover:>6} {s['token_sublayers_median'] / exact_tokens:8.3f}"
        )
    print("compute: token-sublayer evaluations from scratch (prefix-shared), / the exact pass's")


def plot(summary, cost, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    names = sorted({s["estimator"] for s in summary if not s["estimator"].startswith("proximity")})
    cmap = plt.get_cmap("tab10")
    exact_tokens = cost["trie_token_sublayer_evaluations"]
    for k, name in enumerate(names):
        ss = sorted((s for s in summary if s["estimator"] == name), key=lambda s: s["budget"])
        b = np.array([s["budget"] for s in ss])
        c = np.array([s["token_sublayers_median"] for s in ss]) / exact_tokens
        style = {
            "color": cmap(k % 10),
            "ls": "-" if name in OURS else "--",
            "marker": "o",
            "ms": 3,
            "label": name,
        }
        for ax, x, key in ((axes[0], b, "rmse"), (axes[1], c, "rmse"), (axes[2], b, "spearman")):
            ax.plot(x, [s[f"{key}_median"] for s in ss], **style)
            ax.fill_between(
                x,
                [s[f"{key}_p20"] for s in ss],
                [s[f"{key}_p80"] for s in ss],
                color=style["color"],
                alpha=0.15,
                lw=0,
            )
    for s in summary:
        if s["estimator"].startswith("proximity"):
            c = s["token_sublayers_median"] / exact_tokens
            for ax, x, key in (
                (axes[0], s["budget"], "rmse"),
                (axes[1], c, "rmse"),
                (axes[2], s["budget"], "spearman"),
            ):
                ax.plot([x], [s[f"{key}_median"]], "k*", ms=10)
                ax.annotate(
                    s["estimator"].removeprefix("proximity "),
                    (x, s[f"{key}_median"]),
                    textcoords="offset points",
                    xytext=(5, 4),
                    fontsize=8,
                )
    axes[0].plot([], [], "k*", label="proximity (window L)")
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="budget (distinct coalitions)",
        ylabel="RMSE vs exact Shapley",
        title="error at equal budget",
    )
    axes[1].set(
        xscale="log",
        yscale="log",
        xlabel="compute from scratch (token-sublayer evaluations, / exact pass)",
        ylabel="RMSE vs exact Shapley",
        title="error at equal compute",
    )
    axes[2].set(
        xscale="log",
        xlabel="budget (distinct coalitions)",
        ylabel="Spearman rho with the exact ranking",
        title="ranking",
    )
    from matplotlib.ticker import NullFormatter

    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.xaxis.set_minor_formatter(NullFormatter())  # log-axis minor labels overlap
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"{cost['model']} on {cost['task']} x{cost['items']} ({cost['utility']}), "
        f"{cost['n_players']} block players; median over seeds, band p20-p80",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix(".png"), dpi=120)
    fig.savefig(path.with_suffix(".svg"))
    print(f"figure: {path.with_suffix('.png')} (+ .svg)")


def csv_write(path: Path, records: list[dict], drop=("values", "stderr")) -> None:
    keys = [k for k in records[0] if k not in drop]
    for r in records:
        keys += [k for k in r if k not in keys and k not in drop]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(records)


def result_rows(summary, runs, cost, size, dtype, device) -> list[dict]:
    out = [
        rows.row("ground_truth", "exact", size, dtype, device, "wall_s", cost["wall_s"]),
        rows.row(
            "ground_truth",
            "exact",
            size,
            dtype,
            device,
            "token_sublayer_runs",
            cost["token_sublayer_evaluations"],
        ),
        rows.row(
            "ground_truth",
            "exact (naive)",
            size,
            dtype,
            device,
            "token_sublayer_runs",
            cost["naive_token_sublayer_evaluations"],
        ),
    ]
    for s in summary:
        rs = [r for r in runs if r["estimator"] == s["estimator"] and r["budget"] == s["budget"]]
        sz = f"{size} budget {s['budget']}"
        for key, metric in (
            ("rmse", "rmse"),
            ("spearman", "spearman_rho"),
            ("coverage", "coverage_1.96se"),
            ("token_sublayers", "token_sublayer_runs"),
        ):
            vals = [r[key] for r in rs if np.isfinite(r[key])]
            if vals:
                out.append(
                    rows.row("ground_truth", s["estimator"], sz, dtype, device, metric, vals)
                )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default="capitals")
    p.add_argument("--limit", type=int, default=10, help="task items")
    p.add_argument("--utility", default="acc_norm")
    p.add_argument("--players", default=PLAYERS, help="12 (or fewer) block players")
    p.add_argument("--seeds", type=int, default=30)
    p.add_argument(
        "--table",
        default=None,
        help="reuse the exact pass of an earlier run's ground_truth.json (no forward pass)",
    )
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    p.add_argument("--shapiq", default=",".join(SHAPIQ), help="shapiq approximators ('' none)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--chunk", type=int, default=4096, help="lf.Game chunk (one trie per batch)")
    p.add_argument("--cache", default=None, help="SQLite cache for the game (default: none)")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "ground_truth"))
    p.add_argument("--figure", default=str(ROOT / "docs" / "figures" / "ground_truth"))
    p.add_argument("--no-rows", action="store_true", help="do not append to results.csv")
    args = p.parse_args()
    args.budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    args.shapiq = [s for s in args.shapiq.split(",") if s.strip()]

    import layerfast as lf
    from layerfast.bench import machine

    t_start = time.perf_counter()
    game, exact, table, cost, compute = exact_pass(args, lf)
    cost.update(
        model=game.model.name,
        task=args.task,
        items=args.limit,
        utility=args.utility,
        n_players=game.n_players,
    )
    print(f"{game}\nexact pass: {cost}", flush=True)
    runs = estimator_runs(args, lf, game, exact, table, compute)
    summary = summarise(runs)
    exact_tokens = cost["trie_token_sublayer_evaluations"]
    for s in summary:
        s["compute_vs_exact_median"] = s["token_sublayers_median"] / exact_tokens
    print_table(summary, cost, exact_tokens)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_write(out / "runs.csv", runs)
    csv_write(out / "summary.csv", summary)
    dtype = str(game.model.dtype).removeprefix("torch.")
    record = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "model": game.model.name,
        "task": args.task,
        "items": args.limit,
        "utility": args.utility,
        "players": game.players,
        "machine": {
            **machine.describe(game.model.device, game.model.dtype),
            "platform": platform.platform(),
        },
        "exact": {
            "values": exact.values.tolist(),
            "full": exact.full,
            "empty": exact.empty,
            "chance": game.chance,
            "cost": cost,
        },
        "table": table.tolist(),
        "summary": summary,
        "runs": runs,
        "total_wall_s": time.perf_counter() - t_start,
    }
    with (out / "ground_truth.json").open("w") as f:
        json.dump(record, f, indent=1, default=lambda o: None)
    print(f"results: {out}/runs.csv, summary.csv, ground_truth.json")
    plot(summary, cost, Path(args.figure))
    if not args.no_rows:
        size = f"{game.model.name} {args.task} x{args.limit} {args.utility} {game.n_players} blocks"
        rows.append(result_rows(summary, runs, cost, size, dtype, str(game.model.device)))
    print(f"total wall {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
