"""Sweep verbs: ``ablate`` (single-sublayer sweep), ``shapley`` (any estimator, optional
convergence runs) and ``report`` (both, with figures and ``report.md``; several models or tasks:
:mod:`layerfast.cli.multi_report`)."""

from __future__ import annotations

import argparse
import dataclasses
import time

from .. import __version__
from ..estimators import get_estimator, shapley
from ..estimators.ablation import ablate
from ..estimators.convergence import convergence
from ..estimators.interaction_index import interactions
from ..estimators.stopping import check_rule
from ..report import files as outputs
from ..report import tables
from ..report.agreement import agreement_blocks, agreement_line, likelihood_agreement
from ..report.document import write_markdown
from ..report.html import write_html
from ..report.interactions import interaction_blocks, interaction_summary, save_interactions
from . import values
from .common import done, setup
from .flags import PLAYERS, RUN, SWEEP, add, verb
from .multi_report import check_report, cmd_multi_report

REPORT_WINDOW = 3  # the proximity window of ``report`` unless --window says otherwise


def register(sub) -> None:
    """The sub-parsers of ``ablate``, ``shapley`` and ``report``."""
    p = verb(sub, "ablate", cmd_ablate, help="single-sublayer ablation sweep")
    add(p, *SWEEP, *PLAYERS, *RUN, "--margin")
    p = verb(sub, "shapley", cmd_shapley, check_shapley, help="layer Shapley values")
    add(p, *SWEEP, *PLAYERS, "--item-bootstrap", *RUN, "--method", "--window", "--budget")
    add(
        p, "--budget-compute", "--target-stderr", "--until", "--confidence", "--budgets", "--option"
    )
    p = verb(
        sub,
        "report",
        cmd_report,
        check_report,
        help="ablation sweep + proximity Shapley (window 3), with figures",
    )
    add(p, *SWEEP, *PLAYERS, "--item-bootstrap", *RUN, "--window", "--models", "--tasks")
    add(p, "--interactions")


def cmd_ablate(args: argparse.Namespace) -> int:
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


def estimator_options(args: argparse.Namespace) -> dict:
    """``--option KEY=VALUE`` (repeated) and ``--window`` as the estimator's keywords."""
    options = dict(args.option)
    if args.window is not None:
        options["window"] = args.window
    return options


def check_shapley(args: argparse.Namespace) -> None:
    """Unknown or bad estimator options and stopping flags fail before the model loads."""
    est = get_estimator(args.method, **estimator_options(args))
    if args.target_stderr is None and args.until is None:
        return
    # the player count is not known yet: K < n and the budget are checked when the game is
    check_rule(est, args.target_stderr, args.until, args.confidence, args.budget_compute)


def cmd_shapley(args: argparse.Namespace) -> int:
    options = estimator_options(args)
    budgets = args.budgets
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
        progress=True,  # --no-progress hides bars, keeps a heartbeat (cli.main)
        item_bootstrap=args.item_bootstrap,
        budget_compute=args.budget_compute,
        target_stderr=args.target_stderr,
        until=args.until,
        confidence=args.confidence,
        **options,
    )
    meta["wall_s"] = time.time() - t0
    written += outputs.save_shapley(args.out, res, meta)
    print(res.table() if hasattr(res, "table") else res)
    if "stop" in res.info:
        for step in res.info["stop"]["steps"]:
            print(
                "  step: "
                + ", ".join(
                    f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in step.items()
                )
            )
        print(res.info["stop"]["message"])
    done(written, meta["wall_s"])
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    if args.models or args.tasks:  # checked by check_report before any model loads
        return cmd_multi_report(args, report_pair)
    report_pair(args)
    return 0


def report_pair(args: argparse.Namespace) -> tuple:
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
        progress=True,  # --no-progress hides bars, keeps a heartbeat (cli.main)
        item_bootstrap=args.item_bootstrap,
    )
    # a generative built-in: how its ranks compare with its likelihood form's (same model)
    twin = likelihood_agreement(
        game,
        args.limit,
        args.seed,
        players=getattr(args, "players", None),
        unit=getattr(args, "unit", "sublayer"),
        cache=values.cache_path(args),
        batch_tokens=values.batch_tokens(args),
        memory_budget=values.memory_budget(args),
        stack_tokens=getattr(args, "stack_tokens", None),
        max_length=args.max_length,
    )
    pairs = report_interactions(game, args) if getattr(args, "interactions", False) else None
    meta["wall_s"] = wall = time.time() - t0
    written = outputs.save_ablation(args.out, abl, meta)
    written += outputs.save_shapley(args.out, res, meta)
    doc = tables.pair_document(meta, abl, res, wall, tables.provenance(meta, __version__))
    if twin is not None:
        agreement, views, record = twin
        blocks = doc.blocks + agreement_blocks(agreement, views)
        doc = dataclasses.replace(doc, blocks=blocks)
        written.append(outputs.write_json(args.out / "agreement.json", {**meta, **record}))
    if pairs is not None:
        doc = dataclasses.replace(doc, blocks=doc.blocks + interaction_blocks(*pairs))
        written += save_interactions(args.out, pairs[0], meta)
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
    if twin is not None:
        print(agreement_line(twin[0]))
    if pairs is not None:
        print(interaction_summary(*pairs))
    done(written, wall)
    return abl, res, meta


INTERACTIONS_EXACT = 12  # report --interactions: the exact SII up to this many players


def report_interactions(game, args: argparse.Namespace) -> tuple:
    """``report --interactions``: the exact pairwise SII (2^n coalitions) up to
    :data:`INTERACTIONS_EXACT` players, else the removal interaction (1 + n + n(n-1)/2
    coalitions). Returns the arguments of the report's interaction parts: (InteractionResult,
    pairs shown per kind, the note saying why it is not the exact SII, or "")."""
    n = game.n_players
    method, note = "exact", ""
    if n > INTERACTIONS_EXACT:
        method = "removal"
        note = (
            f"{n} players > {INTERACTIONS_EXACT}: the removal interaction, not the exact SII "
            f"(2^{n} coalitions); lf.interactions(game, method='sampled') estimates the SII"
        )
    res = interactions(
        game, method=method, seed=args.seed, progress=True, item_bootstrap=args.item_bootstrap
    )
    return res, 5, note
