"""Pairwise layer interactions (``lf.interactions``): the estimators against the exact SII, and
the removal interaction on the packaged models against one-shot and search pruning.

``ground-truth`` (no forward pass): the 12-block game of ``docs/shapley.md`` (SmolLM2-135M,
capitals x10, players block18..block29) from the 4,096 memoised utilities of
``benchmarks/ground_truth/ground_truth.json`` (``acc_norm``) and
``benchmarks/ground_truth_logprob/ground_truth.json`` (``logprob``): field ``table``, indexed by
coalition integer, bit i = player i. Per utility: the exact pairwise SII
(``method="exact"``: values, the most redundant and synergistic pairs); our ``sampled`` and
shapiq 1.4.1's KernelSHAPIQ, SHAPIQ and SVARMIQ (``layerfast.bridges.shapiq``, index ``k-SII``,
whose order-2 values are the SII; checked against ``index="SII"`` once per approximator) at
each budget over the seeds: the median over seeds of the RMSE of the 66 pair values against
the exact SII, with p20/p80, and the coverage of ours (the share of (seed, pair) cells with
|estimate - exact| <= 1.96 stderr, pooled over seeds and pairs); and the removal interaction's
RMSE and Spearman's rho against the exact SII. Output ``benchmarks/interactions/``
(ground_truth.json, summary.csv) and Markdown tables on stdout.

``models``: for SmolLM2-135M (``smollm2-135m``, 30 blocks) and Gemma-3-270M (``gemma3-270m``,
18 blocks), block players and the label-free KL utility on the calibration text of the pruning
comparison (``experiments/pruning_comparison.py``: ``calib``, ``objective`` and
``calib_tokens`` of ``benchmarks/pruning_{smollm2,gemma}.json``; the token count is checked),
the removal interaction of every pair (1 + n + n(n-1)/2 coalitions, through a cache file under
/tmp so a killed run resumes). Then, for every block set that a pruning method of that JSON
removed (the methods whose sets are whole blocks: greedy block search, AVSS, BI, angular
distance; the sublayer methods remove single sublayers, which block interactions cannot
predict, and are listed as skipped) and for the block-ablation ranking of this run (the k
blocks of smallest single drop), one coalition v(N \\ S) each: the actual drop
v(N) - v(N \\ S) against the additive prediction sum_i a_i (a_i = v(N) - v(N \\ i)) and the
pairwise-corrected one sum_i a_i - sum_{i<j in S} D_ij (D_ij the removal interaction,
< 0 redundant), and the share of the additive error the pairwise term closes,
1 - |pairwise - actual| / |additive - actual|. The stored ``objective`` of each set is checked
against v(N \\ S). Output ``benchmarks/interactions/{smollm2,gemma3}.json`` and the figure
``docs/figures/interactions_models.png`` / ``.svg`` (the two removal-interaction heatmaps).

    python benchmarks/bench_interactions.py ground-truth     # the tables of docs/interactions.md
    python benchmarks/bench_interactions.py models           # both models, then the figure
    python benchmarks/bench_interactions.py models --models gemma3-270m
    python benchmarks/bench_interactions.py render           # tables + figure from the JSONs
    python benchmarks/bench_interactions.py ground-truth --seeds 2 --budgets 64,256 --out /tmp/x
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_ground_truth import TableGame as RecordingTable  # noqa: E402 (next to this file)
from bench_ground_truth import csv_write as write_csv  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

OUT = ROOT / "benchmarks" / "interactions"
FIGURE = ROOT / "docs" / "figures" / "interactions_models"
TABLES = {
    "acc_norm": ROOT / "benchmarks" / "ground_truth" / "ground_truth.json",
    "logprob": ROOT / "benchmarks" / "ground_truth_logprob" / "ground_truth.json",
}
SHAPIQ = ("KernelSHAPIQ", "SHAPIQ", "SVARMIQ")
BUDGETS = (64, 256, 1024, 2048)
MODELS = {  # packaged name -> (pruning comparison JSON, output stem)
    "smollm2-135m": (ROOT / "benchmarks" / "pruning_smollm2.json", "smollm2"),
    "gemma3-270m": (ROOT / "benchmarks" / "pruning_gemma.json", "gemma3"),
}
SEARCH = ("greedy", "beam")  # pruning methods whose name holds one of these are searches
BLOCK_ABLATION = "block ablation drop (this run)"


# --- shared -----------------------------------------------------------------------------------
class TableGame(RecordingTable):
    """bench_ground_truth's lookup of the memoised utilities; ``take`` counts the distinct
    coalitions asked for since the last take."""

    def __init__(self, table, players: list[str]):
        super().__init__(table, players, None)

    def take(self) -> int:
        return len(super().take())


def write_json(path: Path, record: dict) -> None:
    """Strict JSON (NaN as null) through layerfast's writer, the folder made first."""
    from layerfast.report.files import write_json as strict_json

    path.parent.mkdir(parents=True, exist_ok=True)
    strict_json(path, record)


def csv_write(path: Path, records: list[dict]) -> None:
    write_csv(path, records, drop=())


def command() -> str:
    return " ".join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]])


def pair_list(res, players: list[str], k: int, kind: str) -> list[dict]:
    return [
        {"i": players[i], "j": players[j], "value": v, "stderr_total": se}
        for i, j, v, se in res.top(k, kind)
    ]


# --- part A: ground truth ---------------------------------------------------------------------
def ground_truth(args) -> None:
    import torch

    import layerfast as lf
    from layerfast.bench import machine
    from layerfast.bridges.shapiq import shapiq_interactions
    from layerfast.estimators.ranks import spearman

    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "command": command(),
        "machine": {**machine.describe(torch.device("cpu")), "platform": platform.platform()},
        "seeds": args.seeds,
        "budgets": args.budgets,
        "shapiq_index": args.index,
        "shapiq_approximators": args.shapiq,
        "coverage": "share of (seed, pair) cells with |estimate - exact| <= 1.96 stderr, "
        "pooled over seeds and the 66 pairs (ours only: shapiq gives no error bar)",
        "utilities": {},
    }
    summary_all = []
    for utility, path in TABLES.items():
        src = json.loads(Path(path).read_text())
        players = src["players"]
        n = len(players)
        iu = np.triu_indices(n, 1)
        tg = TableGame(src["table"], players)
        t0 = time.perf_counter()
        exact = lf.interactions(tg, method="exact")
        truth = exact.values[iu]
        tg.take()
        removal = lf.interactions(tg, method="removal")
        tg.take()
        rem = removal.values[iu]
        rec: dict = {
            "source": str(Path(path).relative_to(ROOT)),
            "model": src["model"],
            "task": src["task"],
            "items": src["items"],
            "players": players,
            "exact": {
                "values": exact.values,
                "min": float(truth.min()),
                "max": float(truth.max()),
                "rms": float(np.sqrt(np.mean(truth**2))),
                "n_coalitions": exact.n_evaluations,
                "top_redundant": pair_list(exact, players, 5, "redundant"),
                "top_synergistic": pair_list(exact, players, 5, "synergistic"),
            },
            "removal": {
                "values": removal.values,
                "n_coalitions": removal.n_evaluations,
                "rmse_vs_exact": float(np.sqrt(np.mean((rem - truth) ** 2))),
                "spearman_vs_exact": spearman(rem, truth)[0],
                "rms": float(np.sqrt(np.mean(rem**2))),
            },
        }
        checks = {}
        for name in args.shapiq:  # k-SII and SII agree at order 2 (one run each)
            a = shapiq_interactions(tg, name, budget=256, seed=0, index="k-SII")[iu]
            b = shapiq_interactions(tg, name, budget=256, seed=0, index="SII")[iu]
            checks[name] = float(np.max(np.abs(a - b)))
        tg.take()
        rec["k_sii_vs_sii_max_abs_diff_budget256_seed0"] = checks
        runs = []
        for budget in args.budgets:
            for seed in range(args.seeds):
                res = lf.interactions(tg, method="sampled", budget=budget, seed=seed)
                err = res.values[iu] - truth
                se = res.stderr[iu]
                runs.append(
                    {
                        "estimator": "sampled",
                        "budget": budget,
                        "seed": seed,
                        "rmse": float(np.sqrt(np.mean(err**2))),
                        "spearman": spearman(res.values[iu], truth)[0],
                        "covered": int(np.sum(np.abs(err) <= 1.96 * se)),
                        "cells": len(err),
                        "n_distinct": tg.take(),
                        "n_evaluations": res.n_evaluations,
                    }
                )
                for name in args.shapiq:
                    try:
                        est = shapiq_interactions(tg, name, budget, seed, index=args.index)[iu]
                    except Exception as e:  # noqa: BLE001 (recorded, the sweep goes on)
                        tg.take()
                        print(f"  shapiq {name} budget={budget} seed={seed}: {e}", file=sys.stderr)
                        continue
                    err = est - truth
                    runs.append(
                        {
                            "estimator": f"shapiq {name}",
                            "budget": budget,
                            "seed": seed,
                            "rmse": float(np.sqrt(np.mean(err**2))),
                            "spearman": spearman(est, truth)[0],
                            "covered": None,
                            "cells": len(err),
                            "n_distinct": tg.take(),
                            "n_evaluations": None,
                        }
                    )
            print(f"  {utility}: budget {budget} done ({time.perf_counter() - t0:.0f} s)")
        summary = summarise(runs, utility)
        rec["runs"] = runs
        rec["summary"] = summary
        rec["wall_s"] = time.perf_counter() - t0
        record["utilities"][utility] = rec
        summary_all += summary
    record["total_wall_s"] = time.perf_counter() - t_start
    write_json(out / "ground_truth.json", record)
    csv_write(out / "summary.csv", summary_all)
    print_ground_truth(record)
    print(f"results: {out}/ground_truth.json, summary.csv; total {record['total_wall_s']:.0f} s")


def summarise(runs: list[dict], utility: str) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["estimator"], r["budget"]), []).append(r)
    out = []
    for (name, budget), rs in groups.items():
        rmse = np.array([r["rmse"] for r in rs])
        rho = np.array([r["spearman"] for r in rs], dtype=np.float64)
        row = {
            "utility": utility,
            "estimator": name,
            "budget": budget,
            "n_seeds": len(rs),
            "rmse_median": float(np.median(rmse)),
            "rmse_p20": float(np.percentile(rmse, 20)),
            "rmse_p80": float(np.percentile(rmse, 80)),
            "spearman_median": float(np.nanmedian(rho)),
            "coverage": None,
            "n_distinct_median": float(np.median([r["n_distinct"] for r in rs])),
        }
        if rs[0]["covered"] is not None:
            row["coverage"] = sum(r["covered"] for r in rs) / sum(r["cells"] for r in rs)
        out.append(row)
    return out


def _fmt(x: float) -> str:
    """Two or three significant figures, as the tables of docs/interactions.md."""
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.2g}" if x < 0.01 else f"{x:.3f}"


def print_ground_truth(record: dict) -> None:
    for utility, rec in record["utilities"].items():
        ex, rm = rec["exact"], rec["removal"]
        print(
            f"\n**`{utility}`** (exact SII from {ex['min']:.3g} to {ex['max']:.3g}, "
            f"RMS {ex['rms']:.3g}); removal vs exact: RMSE {rm['rmse_vs_exact']:.3g}, "
            f"Spearman {rm['spearman_vs_exact']:.2f} (removal RMS {rm['rms']:.3g})"
        )
        names = ["sampled"] + [f"shapiq {a}" for a in record["shapiq_approximators"]]
        by = {(s["estimator"], s["budget"]): s for s in rec["summary"]}
        print("\n| budget | `sampled` | " + " | ".join(n.split()[-1] for n in names[1:]) + " |")
        print("|---" * (len(names) + 1) + "|")
        for b in record["budgets"]:
            rows = [by.get((n, b)) for n in names]
            best = min(r["rmse_median"] for r in rows if r)
            cells = []
            for r in rows:
                if r is None:
                    cells.append("n/a")
                    continue
                c = _fmt(r["rmse_median"])
                c = f"**{c}**" if r["rmse_median"] == best else c
                if r["coverage"] is not None:
                    c += f" ({r['coverage']:.2f})"
                cells.append(c)
            print(f"| {b:,} | " + " | ".join(cells) + " |")
        for kind in ("top_redundant", "top_synergistic"):
            pairs = ", ".join(f"{p['i']} x {p['j']} ({p['value']:+.3g})" for p in ex[kind][:3])
            print(f"{kind}: {pairs}")
        check = rec["k_sii_vs_sii_max_abs_diff_budget256_seed0"]
        print(f"max |k-SII - SII| (budget 256, seed 0): {check}")


# --- part B: the packaged models --------------------------------------------------------------
def calibration(pruning: dict, calib_limit: int, lf):
    """The pruning comparison's calibration task: ``text:lee[:700]`` = the first
    ``calib_limit`` documents cut to 700 characters (experiments/pruning_comparison.py)."""
    from layerfast.tasks.text_task import TextTask

    m = re.fullmatch(r"(.*)\[:(\d+)\]", pruning["calib"])
    if m is None:
        raise SystemExit(f"cannot read the calibration spec {pruning['calib']!r}")
    spec, chars = m.group(1), int(m.group(2))
    whole = lf.tasks.load(spec, limit=calib_limit)
    return TextTask(f"{whole.spec}[:{chars}]", [d[:chars] for d in whole.documents])


def block_of(name: str) -> int:
    return int(re.sub(r"^(attn|mlp|block)", "", name))


def pruning_sets(pruning: dict, players: list[str], drops: np.ndarray, n_blocks: int):
    """(sets, skipped): every block set a method of ``pruning`` removed, as
    {method, kind, fraction, blocks}; methods with a set that is not whole blocks (or has a
    block outside ``players``) are skipped with the reason. Plus the block-ablation ranking of
    this run (the k smallest single drops, k = round(fraction x blocks) as the block search)."""
    index = {block_of(p): k for k, p in enumerate(players)}
    sets, skipped = [], {}
    for method, by_fraction in pruning["methods"].items():
        rows, whole = [], []
        for f, row in by_fraction.items():
            removed = set(row["removed"])
            blocks = sorted({block_of(p) for p in removed})
            n_whole = sum({f"attn{b}", f"mlp{b}"} <= removed for b in blocks)
            whole.append(f"{float(f):.0%}: {len(removed)} sublayers, {n_whole} whole blocks")
            if n_whole < len(blocks):
                skipped[method] = "removes single sublayers"
                continue
            if any(b not in index for b in blocks):
                skipped[method] = "removes blocks outside the players"
                break
            kind = "search" if any(s in method for s in SEARCH) else "one-shot"
            rows.append(
                {
                    "method": method,
                    "kind": kind,
                    "fraction": float(f),
                    "blocks": [index[b] for b in blocks],
                    "stored_objective": row.get("objective"),
                }
            )
        if method in skipped:
            if skipped[method] == "removes single sublayers":
                skipped[method] += " (" + "; ".join(whole) + ")"
        else:
            sets += rows
    order = np.argsort(drops, kind="stable")
    for f in pruning["fractions"]:
        k = round(f * n_blocks)
        sets.append(
            {
                "method": BLOCK_ABLATION,
                "kind": "one-shot",
                "fraction": float(f),
                "blocks": sorted(int(i) for i in order[:k]),
                "stored_objective": None,
            }
        )
    return sets, skipped


def model_run(spec: str, args) -> dict:
    import torch

    import layerfast as lf
    from layerfast.bench import machine
    from layerfast.estimators.interaction_index import removal_masks

    pruning_path, stem = MODELS[spec]
    pruning = json.loads(pruning_path.read_text())
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    model = lf.load(spec)
    calib = calibration(pruning, args.calib_limit, lf)
    players = None
    if args.max_blocks:
        players = [f"block{b}" for b in range(min(args.max_blocks, model.n_blocks))]
    cache = Path(args.cache_dir) / f"layerfast_interactions_{stem}.sqlite"
    game = lf.Game(
        model,
        calib,
        unit="block",
        players=players,
        utility=pruning["objective"],
        max_length=args.max_length,
        cache=cache,
        chunk=args.chunk,
        progress=False,
    )
    tokens = int(sum(len(r.targets) for r in game.requests))
    if tokens != pruning["calib_tokens"]:
        raise SystemExit(
            f"{spec}: {tokens} calibration tokens, the pruning comparison had "
            f"{pruning['calib_tokens']}: not the same game"
        )
    n = game.n_players
    print(f"{game}\n{n} block players, {tokens} calibration tokens, cache {cache}", flush=True)

    # the removal coalitions, in steps (a killed run resumes from the cache)
    masks = removal_masks(n, list(combinations(range(n), 2)))
    t0 = time.perf_counter()
    done = 0
    steps = [1 + n] + [args.chunk] * math.ceil((len(masks) - 1 - n) / args.chunk)
    for k in steps:
        game(masks[done : done + k])
        done = min(len(masks), done + k)
        el = time.perf_counter() - t0
        eta = el / done * (len(masks) - done)
        print(
            f"  {done}/{len(masks)} coalitions, {el:.0f} s, ~{eta:.0f} s to go "
            f"({game.n_forward} run, the rest from the cache)",
            flush=True,
        )
    removal_wall = time.perf_counter() - t0
    n_items = game.n_items
    boot = args.item_bootstrap if n_items >= 2 else 0
    res = lf.interactions(game, method="removal", item_bootstrap=boot)
    v_full = float(game(np.ones((1, n), dtype=bool))[0])
    singles = game(~np.eye(n, dtype=bool))
    drops = v_full - singles
    delta = res.values

    # the pruning sets: one coalition each
    sets, skipped = pruning_sets(pruning, game.players, drops, model.n_blocks)
    t1 = time.perf_counter()
    set_masks = np.ones((len(sets), n), dtype=bool)
    for r, s in enumerate(sets):
        set_masks[r, s["blocks"]] = False
    values = game(set_masks)
    sets_wall = time.perf_counter() - t1
    for s, v in zip(sets, values):
        b = s["blocks"]
        actual = v_full - float(v)
        additive = float(drops[b].sum())
        pair_sum = float(sum(delta[i, j] for i, j in combinations(b, 2)))
        s.update(
            block_names=[game.players[i] for i in b],
            value=float(v),
            actual_drop=actual,
            additive=additive,
            pair_sum=pair_sum,
            pairwise=additive - pair_sum,
            objective_check=(
                None if s["stored_objective"] is None else float(v) - s["stored_objective"]
            ),
        )
    iu = np.triu_indices(n, 1)
    gap = iu[1] - iu[0]
    abs_delta = np.abs(delta[iu])
    record = {
        "command": command(),
        "model": model.name,
        "spec": spec,
        "pruning_json": str(pruning_path.relative_to(ROOT)),
        "calib": calib.name,
        "calib_limit": args.calib_limit,
        "objective": pruning["objective"],
        "utility_note": "v = -(mean per-token KL(p_full || p_S)), nats; v(N) = 0; drop = KL",
        "calib_tokens": tokens,
        "max_length": args.max_length,
        "n_items": n_items,
        "item_bootstrap": (
            res.info.get("item_bootstrap")
            if boot
            else f"not run: the KL game has per_item terms but {n_items} item (one "
            "calibration document), so no item-level spread can be estimated"
        ),
        "players": game.players,
        "n_blocks": model.n_blocks,
        "machine": {
            **machine.describe(game.model.device, game.model.dtype),
            "platform": platform.platform(),
        },
        "cost": {
            "n_coalitions": res.n_evaluations,
            "coalitions_run": game.n_forward,
            "removal_wall_s": removal_wall,
            "sets_wall_s": sets_wall,
            "chunk": args.chunk,
        },
        "v_full": v_full,
        "drops": drops,
        "removal": res.to_dict(),
        "top_redundant": pair_list(res, game.players, args.top, "redundant"),
        "top_synergistic": pair_list(res, game.players, args.top, "synergistic"),
        "abs_interaction": {
            "mean_adjacent": float(abs_delta[gap == 1].mean()),
            "mean_non_adjacent": float(abs_delta[gap > 1].mean()),
            "rms": float(np.sqrt(np.mean(delta[iu] ** 2))),
            "sum_negative": float(delta[iu][delta[iu] < 0].sum()),
            "sum_positive": float(delta[iu][delta[iu] > 0].sum()),
        },
        "pruning_sets": sets,
        "pruning_skipped": skipped,
        "pruning_summary": summarise_sets(sets),
    }
    if args.max_blocks:
        record["note"] = f"cut to the first {n} blocks (--max-blocks)"
    record["total_wall_s"] = time.perf_counter() - t_start
    out = Path(args.out) / f"{stem}.json"
    write_json(out, record)
    print_model(record)
    print(f"results: {out}; total {record['total_wall_s']:.0f} s", flush=True)
    return record


def _errors(ss: list[dict], actual: str, additive: str, pairwise: str) -> dict:
    """Sum over the sets of |additive - actual| and |pairwise - actual| (keys of the sets), and
    the share of the first the pairwise term closes."""
    add = sum(abs(s[additive] - s[actual]) for s in ss)
    pair = sum(abs(s[pairwise] - s[actual]) for s in ss)
    return {
        "n_sets": len(ss),
        "sum_abs_error_additive": add,
        "sum_abs_error_pairwise": pair,
        "share_closed_overall": 1 - pair / add if add else None,
        "n_sets_improved": sum(
            abs(s[pairwise] - s[actual]) < abs(s[additive] - s[actual]) for s in ss
        ),
    }


def summarise_sets(sets: list[dict]) -> dict:
    """Per set: the errors of the two predictions, the share closed, and the gap to the search's
    set of the same fraction (actual, and as each prediction has it); totals per kind
    (one-shot, search) and per method."""
    search = {s["fraction"]: s for s in sets if s["kind"] == "search"}
    for s in sets:
        # for 1 or 2 blocks the pairwise prediction is the actual drop (D_ij is defined so)
        s["exact_by_construction"] = len(s["blocks"]) <= 2
        s["error_additive"] = s["additive"] - s["actual_drop"]
        s["error_pairwise"] = s["pairwise"] - s["actual_drop"]
        e = abs(s["error_additive"])
        s["share_closed"] = 1 - abs(s["error_pairwise"]) / e if e else None
        ref = search.get(s["fraction"])
        for key in ("actual_drop", "additive", "pairwise"):
            s[f"gap_{key}"] = None if ref is None else s[key] - ref[key]
        s["actual_over_search"] = (
            None if ref is None or not ref["actual_drop"] else s["actual_drop"] / ref["actual_drop"]
        )
    out: dict = {
        "note": "totals over the sets of 3 or more blocks (for 2 the pairwise prediction is "
        "exact by construction)",
        "by_kind": {},
        "by_method": {},
    }
    big = [s for s in sets if not s["exact_by_construction"]]
    for kind in ("one-shot", "search"):
        ss = [s for s in big if s["kind"] == kind]
        if ss:
            out["by_kind"][kind] = _errors(ss, "actual_drop", "additive", "pairwise")
    for method in dict.fromkeys(s["method"] for s in big):
        ss = [s for s in big if s["method"] == method]
        out["by_method"][method] = _errors(ss, "actual_drop", "additive", "pairwise")
    gaps = [
        s
        for s in big
        if s["kind"] == "one-shot"
        and s["gap_actual_drop"] is not None
        and not search[s["fraction"]]["exact_by_construction"]
    ]
    if gaps:  # the one-shot sets' excess drop over the search's, as each prediction has it
        keys = ("gap_actual_drop", "gap_additive", "gap_pairwise")
        out["one_shot_gap_to_search"] = _errors(gaps, *keys)
        out["gap_by_method"] = {
            m: _errors([s for s in gaps if s["method"] == m], *keys)
            for m in dict.fromkeys(s["method"] for s in gaps)
        }
    return out


def print_model(rec: dict) -> None:
    print(
        f"\n{rec['model']}: {len(rec['players'])} blocks, v(N) = {rec['v_full']:.3g}, "
        f"{rec['cost']['n_coalitions']} coalitions in {rec['cost']['removal_wall_s']:.0f} s"
    )
    for kind in ("top_redundant", "top_synergistic"):
        pairs = ", ".join(f"{p['i']} x {p['j']} ({p['value']:+.3g})" for p in rec[kind])
        print(f"{kind}: {pairs}")
    print(f"|D|: {rec['abs_interaction']}")
    print(
        "\n| method | kind | removed | blocks | actual drop | additive | pairwise | "
        "error closed | vs search |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for s in rec["pruning_sets"]:
        closed = "n/a" if s["share_closed"] is None else f"{s['share_closed']:.0%}"
        closed += " (by construction)" if s["exact_by_construction"] else ""
        vs = "" if s["actual_over_search"] is None else f"{s['actual_over_search']:.2f}x"
        print(
            f"| {s['method']} | {s['kind']} | {s['fraction']:.0%} | "
            f"{','.join(str(b) for b in s['blocks'])} | {s['actual_drop']:.3f} | "
            f"{s['additive']:.3f} | {s['pairwise']:.3f} | {closed} | {vs} |"
        )
    summ = rec["pruning_summary"]
    for kind, g in summ["by_kind"].items():
        print(f"{kind}: {g}")
    for method, g in summ["by_method"].items():
        print(f"  {method}: {g}")
    print(f"one-shot gap to search: {summ.get('one_shot_gap_to_search')}")
    for method, g in summ.get("gap_by_method", {}).items():
        print(f"  {method}: {g}")
    checks = [
        abs(s["objective_check"]) for s in rec["pruning_sets"] if s["objective_check"] is not None
    ]
    top = max(checks, default=float("nan"))
    print(f"max |v(N \\ S) - stored objective| over {len(checks)} sets: {top:.3g}")
    for m, why in rec["pruning_skipped"].items():
        print(f"skipped {m}: {why}")


def figure(paths: list[Path], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import SymLogNorm

    recs = [json.loads(p.read_text()) for p in paths if p.exists()]
    if not recs:
        print("figure: no model JSON yet")
        return
    fig, axes = plt.subplots(1, len(recs), figsize=(6.4 * len(recs), 5.6), squeeze=False)
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.85")
    for ax, rec in zip(axes[0], recs):
        v = np.array(rec["removal"]["values"], dtype=np.float64)  # None -> nan
        n = len(v)
        scale = float(np.nanmax(np.abs(v)))
        lin = float(np.nanpercentile(np.abs(v), 50))
        norm = SymLogNorm(linthresh=max(lin, 1e-6), vmin=-scale, vmax=scale, base=10)
        im = ax.imshow(np.ma.masked_invalid(v), cmap=cmap, norm=norm, interpolation="nearest")
        step = 1 if n <= 18 else 2
        ticks = list(range(0, n, step))
        ax.set_xticks(ticks, [str(block_of(rec["players"][i])) for i in ticks], fontsize=7)
        ax.set_yticks(ticks, [str(block_of(rec["players"][i])) for i in ticks], fontsize=7)
        ax.set_xlabel("block")
        ax.set_ylabel("block")
        ax.set_title(
            f"{rec['model']}: removal interaction, KL on {rec['calib']} "
            f"({rec['calib_tokens']} tokens)",
            fontsize=9,
        )
        bar = fig.colorbar(im, ax=ax, shrink=0.85)
        bar.set_label(
            f"nats (< 0 redundant, > 0 synergistic; symlog, linear within {lin:.2g})", fontsize=8
        )
        bar.ax.tick_params(labelsize=7)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target.with_suffix(".png"), dpi=120)
    fig.savefig(target.with_suffix(".svg"))
    print(f"figure: {target.with_suffix('.png')} (+ .svg)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="part", required=True)
    a = sub.add_parser("ground-truth", help="part A: estimators vs the exact SII (no model)")
    a.add_argument("--seeds", type=int, default=10)
    a.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    a.add_argument("--shapiq", default=",".join(SHAPIQ), help="shapiq approximators")
    a.add_argument("--index", default="k-SII", choices=("k-SII", "SII"), help="shapiq's index")
    a.add_argument("--out", default=str(OUT))
    b = sub.add_parser("models", help="part B: removal interactions on the packaged models")
    b.add_argument("--models", default=",".join(MODELS))
    b.add_argument("--calib-limit", type=int, default=1, help="as pruning_comparison.py")
    b.add_argument("--max-length", type=int, default=128, help="as pruning_comparison.py")
    b.add_argument("--max-blocks", type=int, default=0, help="only the first N blocks (0: all)")
    b.add_argument("--item-bootstrap", type=int, default=200)
    b.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    b.add_argument("--chunk", type=int, default=64, help="coalitions per game call")
    b.add_argument("--top", type=int, default=5)
    b.add_argument("--cache-dir", default="/tmp")
    b.add_argument("--out", default=str(OUT))
    b.add_argument("--figure", default=str(FIGURE))
    f = sub.add_parser("render", help="the models' tables and the figure again from their JSONs")
    f.add_argument("--out", default=str(OUT))
    f.add_argument("--figure", default=str(FIGURE))
    args = p.parse_args()
    if args.part == "ground-truth":
        args.budgets = [int(x) for x in args.budgets.split(",") if x.strip()]
        args.shapiq = [s for s in args.shapiq.split(",") if s.strip()]
        ground_truth(args)
        return
    paths = [Path(args.out) / f"{stem}.json" for _, stem in MODELS.values()]
    if args.part == "models":
        for spec in [m for m in args.models.split(",") if m.strip()]:
            if spec not in MODELS:
                raise SystemExit(f"unknown model {spec!r}; choose from {list(MODELS)}")
            model_run(spec, args)
    else:  # render: the summaries recomputed from the stored sets, the tables printed again
        for path in paths:
            if path.exists():
                rec = json.loads(path.read_text())
                rec.pop("pruning_groups", None)  # an earlier version's summary
                rec["pruning_summary"] = summarise_sets(rec["pruning_sets"])
                write_json(path, rec)
                print_model(rec)
    figure(paths, Path(args.figure))


if __name__ == "__main__":
    main()
