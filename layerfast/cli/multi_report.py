"""``layerfast report --models A,B --tasks T1,T2``: every (model, task) pair as its own report in
``OUT/<model>/<task>/`` (its own cache there, so a re-run or an added task costs only what is
new), then one combined ``report.md`` / ``report.html`` in OUT (:mod:`layerfast.report.multi`)."""

from __future__ import annotations

import argparse
import copy
import re
import time
from collections.abc import Callable
from pathlib import Path

from .. import __version__
from ..errors import UsageError
from ..report import files as outputs
from ..report.document import render_markdown, write_markdown
from ..report.grid import save_grid
from ..report.html import write_html
from ..report.multi import multi_document
from ..report.tables import provenance
from .common import done
from .model_specs import check_model_spec
from .values import given, task_options


def pairs_of(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The models and tasks of a multi report: ``--models`` / ``--tasks`` (lists, without
    repeats: :func:`layerfast.cli.values.names`), else ``--model`` / ``--task``."""
    models = list(args.models) if args.models else [str(args.model)]
    task_names = list(args.tasks) if args.tasks else [str(args.task)]
    return models, task_names


def check_report(args: argparse.Namespace) -> None:
    """``report``'s own checks, before any model loads: ``--model`` with ``--models`` (or
    ``--task`` with ``--tasks``) is refused rather than one of them ignored; with either list,
    one ``--cache`` cannot serve every pair, every task must load and every model must be
    found (:func:`layerfast.cli.model_specs.check_model_spec`), so that a bad name stops the
    command before the first pair is computed."""
    for one, several in (("model", "models"), ("task", "tasks")):
        if given(args, one) and getattr(args, several):
            raise UsageError(
                f"give --{one} or --{several}, not both (--{several} "
                f"{','.join(getattr(args, several))} would leave --{one} {getattr(args, one)} "
                "unused)"
            )
    if not (args.models or args.tasks):
        return
    if args.cache is not None:
        raise UsageError("--cache names one file; with --models/--tasks each pair keeps its own")
    models, task_names = pairs_of(args)
    from .. import tasks

    for name in task_names:  # every task readable before the first model loads
        try:
            tasks.load(name, **task_options(args, name))
        except FileNotFoundError as e:
            raise UsageError(f"--tasks: {e}") from e
    flag = "--models" if args.models else "--model"
    for name in models:  # and every model found, none loaded
        check_model_spec(
            name,
            args.revision,
            args.trust_remote_code,
            own_tokenizer=args.tokenizer is None,
            flag=flag,
        )


def shown(names: list[str]) -> list[str]:
    """Labels for the report: a path's last part (``/x/tiny-a`` -> ``tiny-a``), or the names as
    given when two would share one."""
    short = [Path(n.rstrip("/")).name or n for n in names]
    return short if len(set(short)) == len(short) else list(names)


def slug(name: str) -> str:
    """A folder name for a model or task name (a path's last part, safe characters only)."""
    base = Path(name.rstrip("/")).name or name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "x"


def cmd_multi_report(args: argparse.Namespace, run_pair: Callable) -> int:
    """Run ``run_pair(pair_args) -> (abl, res, meta)`` for every pair, then write the combined
    report (the names were checked by :func:`check_report`)."""
    model_names, task_names = pairs_of(args)
    models, tasks = shown(model_names), shown(task_names)  # as the report labels them
    t0 = time.time()
    ablations, shapley, folders, metas = {}, {}, {}, {}
    for model_name, model in zip(model_names, models):
        for task_name, task in zip(task_names, tasks):
            folder = f"{slug(model)}/{slug(task)}"
            pair = copy.copy(args)
            pair.model, pair.task, pair.out = model_name, task_name, args.out / folder
            print(f"\n== {model} on {task} -> {pair.out}", flush=True)
            abl, res, meta = run_pair(pair)
            ablations[(model, task)], shapley[(model, task)] = abl, res
            folders[(model, task)], metas[(model, task)] = folder, meta
    first = next(iter(metas.values()))
    written = save_grid(
        args.out,
        models,
        tasks,
        {k: (list(r.players), r.values) for k, r in shapley.items()},
    )
    utility = first.get("utility") or "acc_norm"
    doc = multi_document(
        models, tasks, ablations, shapley, folders, provenance(first, __version__), utility
    )
    written += [
        write_markdown(args.out / "report.md", doc),
        write_html(args.out / "report.html", doc),
    ]
    outputs.write_json(
        args.out / "report.json",
        {
            "models": models,
            "tasks": tasks,
            "pairs": [
                {"model": m, "task": t, "folder": folders[(m, t)], "full": ablations[(m, t)].full}
                for m in models
                for t in tasks
            ],
            "command": first.get("command"),
        },
    )
    print(render_markdown(doc))
    done(written, time.time() - t0)
    return 0
