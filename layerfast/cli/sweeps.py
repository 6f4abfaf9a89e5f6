"""Sweep verbs: ``ablate`` (single-sublayer sweep), ``shapley`` (any estimator, optional
convergence runs) and ``report`` (both, with figures and ``report.md``)."""

from __future__ import annotations

import time

from .. import __version__
from ..estimators import get_estimator, shapley
from ..estimators.ablation import ablate
from ..estimators.convergence import convergence
from ..report import files as outputs
from ..report import tables
from ..report.document import write_markdown
from ..report.html import write_html
from .common import done, setup
from .values import numbers, parse_options

REPORT_WINDOW = 3  # the proximity window of ``report`` unless --window says otherwise


def cmd_ablate(args) -> int:
    game, meta = setup(args)
    t0 = time.time()
    abl = ablate(game, margin=args.margin)
    meta["wall_s"] = time.time() - t0
    written = outputs.save_ablation(args.out, abl, meta)
    print(tables.ablation_table(abl))
    print(
        f"full model {abl.full:.4f}, chance {tables.chance_text(abl.chance)}, "
        f"{tables.cornerstone_summary(abl)}"
    )
    done(written, meta["wall_s"])
    return 0


def cmd_shapley(args) -> int:
    options = parse_options(args.option)
    if args.window is not None:
        options["window"] = args.window
    budgets = numbers("--budgets", args.budgets, int) if args.budgets else None
    get_estimator(args.method, **options)  # unknown or bad options fail before the model loads
    game, meta = setup(args)
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
        item_bootstrap=args.item_bootstrap,
        budget_compute=args.budget_compute,
        **options,
    )
    meta["wall_s"] = time.time() - t0
    written += outputs.save_shapley(args.out, res, meta)
    print(res.table() if hasattr(res, "table") else res)
    done(written, meta["wall_s"])
    return 0


def cmd_report(args) -> int:
    if args.models or args.tasks:
        from .multi_report import cmd_multi_report, pairs_of

        pairs_of(args)  # the names and flags, before any model loads
        return cmd_multi_report(args, report_pair)
    report_pair(args)
    return 0


def report_pair(args):
    """One model on one task: ablation, proximity Shapley, figures, report.md and report.html
    in ``args.out``; returns (ablation, Shapley result, metadata)."""
    game, meta = setup(args)
    t0 = time.time()
    abl = ablate(game)
    window = REPORT_WINDOW if args.window is None else args.window
    res = shapley(
        game,
        method="proximity",
        window=window,
        progress=not args.no_progress,
        item_bootstrap=args.item_bootstrap,
    )
    meta["wall_s"] = wall = time.time() - t0
    written = outputs.save_ablation(args.out, abl, meta)
    written += outputs.save_shapley(args.out, res, meta)
    doc = tables.pair_document(meta, abl, res, wall, tables.provenance(meta, __version__))
    written += [
        write_markdown(args.out / "report.md", doc),
        write_html(args.out / "report.html", doc),
    ]
    print(tables.ablation_table(abl, res))
    print(
        f"\nfull model {abl.utility} = {abl.full:.4f} (chance {tables.chance_text(abl.chance)}); "
        f"{tables.cornerstone_summary(abl)}"
    )
    print(tables.top_players(res))
    done(written, wall)
    return abl, res, meta
