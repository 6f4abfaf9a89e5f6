"""``layerfast prune --by search``: greedy (or ``--beam K``) removal on the task's Game, the
chosen path scored on held-out tasks (``--eval-tasks``), and the pruned model saved (``--save``)."""

from __future__ import annotations

import argparse
import time

from .. import tasks
from ..errors import UsageError
from ..report import files as outputs
from . import values
from .common import done, save_model, setup

# flags that mean something only to a search, with their argparse dests
SEARCH_ONLY = {
    "--beam": "beam",
    "--keep-first": "keep_first",
    "--keep-last": "keep_last",
    "--eval-tasks": "eval_tasks",
    "--unit": "unit",
    "--players": "players",
}


def check_prune(args: argparse.Namespace) -> None:
    """``prune``'s flags that go together, before any model loads."""
    if args.by != "search":
        for flag, dest in SEARCH_ONLY.items():
            if values.given(args, dest):
                raise UsageError(
                    f"{flag} applies to --by search only (the --by {args.by} scores rank whole "
                    "blocks, removed lowest first)"
                )
        return
    if values.given(args, "rule"):
        raise UsageError(
            "--rule applies to the one-shot scores; --by search removes the best candidate each "
            "step until --fraction of the units are gone"
        )
    if values.n_workers(args) > 1:
        raise UsageError("--by search runs its steps one after another: leave out --workers")


def cmd_search(args: argparse.Namespace) -> int:
    from ..evaluation.game import Game
    from ..pruning.search import prune_search, pruned_model

    t0 = time.time()
    held_tasks = {}
    for spec in args.eval_tasks or []:  # before the model: a bad name fails fast
        try:
            held_tasks[spec] = tasks.load(spec, **values.task_options(args, spec))
        except FileNotFoundError as e:
            raise UsageError(f"--eval-tasks {spec}: {e}") from e
    game, meta = setup(args)
    model = game.model
    held = {
        spec: Game(
            model,
            task,
            cache=values.cache_path(args),
            batch_tokens=values.batch_tokens(args),
            memory_budget=values.memory_budget(args),
            stack_tokens=getattr(args, "stack_tokens", None),
            max_length=args.max_length,
            players=args.players,
            unit=args.unit,
        )  # fmt: skip
        for spec, task in held_tasks.items()
    }
    method = "beam" if args.beam else "greedy"

    def line(step) -> None:
        print(
            f"step {step.step}: removed {step.removed} -> {game.utility} {step.utility:.4f} "
            f"({step.evaluated} candidates)",
            flush=True,
        )

    res = prune_search(
        game, target=args.fraction, unit=args.unit, method=method, beam_width=args.beam or 2,
        keep_first=args.keep_first, keep_last=args.keep_last, eval_games=held, seed=args.seed,
        on_step=line,
    )  # fmt: skip
    print(summary(res))
    result = {**meta, "by": "search", "fraction": args.fraction, **res.to_dict()}
    written = outputs.save_search(args.out, result, model.name)
    if args.save:
        written.append(save_model(pruned_model(game, res), model.tokenizer, args.save))
    done(written, time.time() - t0)
    return 0


def summary(res) -> str:
    """The closing lines: the removal order, v before and after with intervals, held-out
    retention, evaluations and compute."""
    path = res.search

    def ends(p: dict, key: str) -> str:
        lo, hi = (p["lo"], p["hi"]) if key == "values" else (p[key + "_lo"], p[key + "_hi"])
        spread = f" [{lo[-1]:.4f}, {hi[-1]:.4f}]" if lo is not None else ""
        return f"{p[key][0]:.4f} -> {p[key][-1]:.4f}{spread}"

    out = [f"removed ({res.method}, {len(res.order)} {res.unit}s): {', '.join(res.order)}"]
    out.append(f"{path['utility']} on the search task: {ends(path, 'values')}")
    if path["retained"] is not None:
        out.append(f"  retained {ends(path, 'retained')}")
    for name, p in res.held_out.items():
        kept = f"; retained {ends(p, 'retained')}" if p["retained"] is not None else ""
        out.append(f"held-out {name} ({p['utility']}): {ends(p, 'values')}{kept}")
    compute = ""
    if res.compute is not None and res.compute_naive:
        ratio = res.compute / res.compute_naive
        compute = (
            f", {res.compute:,} token-sublayer evaluations run ({ratio:.2f} of a naive "
            f"executor's {res.compute_naive:,})"
        )
    out.append(f"{res.evaluations} coalitions evaluated{compute}")
    return "\n".join(out)
