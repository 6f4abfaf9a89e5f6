"""Statistics verbs: ``avss`` (per-block statistics) and ``prune`` (drop the lowest-scored blocks
and evaluate what is retained)."""

from __future__ import annotations

import argparse
import time

import numpy as np

from ..estimators.ablation import ablate
from ..report import files as outputs
from ..report import tables
from .common import done, load_model, save_model, setup, use_threads
from .flags import MODEL, PLACEMENT, PLAYERS, RUN, STATS, SWEEP, add, verb
from .pruning import check_prune, cmd_search

STATS_BATCH_SIZE = 8  # documents per batch of lf.stats (its default)
DOCUMENT_TOKENS = 256  # the tokens of a calibration document unless --max-length says otherwise


def register(sub) -> None:
    """The sub-parsers of ``avss`` and ``prune``."""
    p = verb(
        sub, "avss", cmd_avss, help="streaming activation statistics per block (AVSS, BI, angular)"
    )
    add(p, *MODEL, "--revision", *PLACEMENT, *STATS)
    add(p, "--max-length", default=DOCUMENT_TOKENS, help="tokens per calibration document")
    add(p, *RUN)
    p = verb(
        sub,
        "prune",
        cmd_prune,
        help="remove the lowest-scored blocks (or search: --by search) and evaluate what is "
        "retained",
        check=check_prune,
    )
    add(p, *SWEEP, *PLAYERS, *RUN, *STATS, "--by", "--fraction", "--rule", "--save")
    add(p, "--beam", "--keep-first", "--keep-last", "--eval-tasks")


def run_stats(args: argparse.Namespace, model) -> dict:
    """The statistics pass of ``avss`` and ``prune --by avss|bi|angular``; prints a summary."""
    from ..activations.collect import stats
    from ..tasks.texts import calibration_texts

    texts = calibration_texts(args.texts, args.n_texts)
    t0 = time.time()
    st = stats(
        model,
        texts,
        eps=args.eps,
        relative=args.relative,
        max_length=DOCUMENT_TOKENS if args.max_length is None else args.max_length,  # prune
        backend=args.backend,
        stats_dtype=args.stats_dtype,
        progress=True,  # --no-progress hides bars, keeps a heartbeat (cli.main)
    )
    st["wall_s"], st["n_texts"], st["texts"] = time.time() - t0, len(texts), args.texts
    print(tables.stats_summary(st, args.eps))
    return st


def cmd_avss(args: argparse.Namespace) -> int:
    model = load_model(args)
    n_threads = use_threads(args, model, STATS_BATCH_SIZE * args.max_length)
    args.out.mkdir(parents=True, exist_ok=True)
    st = run_stats(args, model)
    st["threads"] = n_threads
    written = outputs.save_avss(args.out, st, model.name, model.n_blocks, args.eps)
    print(tables.avss_table(outputs.avss_rows(st, model.n_blocks)))
    done(written, st["wall_s"])
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from ..models.pruning import prune, select

    if args.by == "search":
        return cmd_search(args)
    game, meta = setup(args)
    model = game.model
    if args.by == "ablation":
        drops = ablate(game).drops  # a block's drop: the sum of its sublayers' drops
        scores = np.array([drops[model.players_of(b)].sum() for b in range(model.n_blocks)])
    else:
        st = run_stats(args, model)
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
        written.append(save_model(pruned, model.tokenizer, args.save))
    done(written, 0.0)
    return 0
