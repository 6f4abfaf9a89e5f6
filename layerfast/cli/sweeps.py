"""Sweep verbs: ``ablate`` (single-sublayer sweep), ``shapley`` (any estimator, optional
convergence runs) and ``report`` (both, with figures and ``report.md``)."""

from __future__ import annotations

import time
from importlib import metadata

from .. import __version__
from ..estimators import get_estimator, shapley
from ..estimators.ablation import ablate
from ..estimators.convergence import convergence
from ..report import files as outputs
from ..report import html, tables
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
    head, gap, rest = tables.markdown_summary(meta, abl, res, wall).partition("\n\n")
    md = f"{head}{gap}{provenance(meta)}\n{rest}"
    (args.out / "report.md").write_text(md, encoding="utf-8")
    rows = {tables.ablation_table(abl, res): player_rows(abl, res)}
    written += [args.out / "report.md", html.write_html(args.out / "report.html", md, tables=rows)]
    print(tables.ablation_table(abl, res))
    print(
        f"\nfull model {abl.utility} = {abl.full:.4f} (chance {tables.chance_text(abl.chance)}); "
        f"{tables.cornerstone_summary(abl)}"
    )
    print(tables.top_players(res))
    done(written, wall)
    return abl, res, meta


def provenance(meta: dict) -> str:
    """The report header's lines on what made it: the command and the library versions."""
    env = meta["environment"]
    versions = ", ".join(
        f"{name} {_version(name)}" for name in ("numpy", "matplotlib", "accelerate", "triton")
    )
    return (
        f"- made by `{meta['command']}`\n"
        f"- with layerfast {__version__}, Python {env['python']}, torch {env['torch']}, "
        f"transformers {env['transformers']}, {versions}; device {env['device']}"
    )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def player_rows(abl, res) -> list[dict]:
    """The rows of ``report.html``'s sortable player table: ablation and Shapley per player."""
    cornerstones = set(abl.cornerstones)
    return [
        {
            "player": p,
            "v(N\\{l})": float(abl.values[i]),
            "drop": float(abl.drops[i]),
            "shapley": float(res.values[i]),
            "± s.e.": float(res.stderr[i]),
            "cornerstone": p in cornerstones,
        }
        for i, p in enumerate(abl.players)
    ]
