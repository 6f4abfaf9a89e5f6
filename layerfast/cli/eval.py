"""``layerfast eval``: lm-evaluation-harness's own ``run`` command with the model ``"layerfast"``.

    layerfast eval --model smollm2-135m --tasks arc_easy,boolq --remove attn3,mlp5 \\
        [--num-fewshot K] [--limit N] [--include-path DIR] [-- HARNESS OPTIONS]

The verb builds the harness's command line (``--model layerfast --model_args {...} --tasks ...
--output_path OUT``, plus whatever follows ``--``, e.g. ``-- --log_samples --seed 1``) and runs the
harness's console entry point (``lm_eval.__main__.cli_evaluate``) in this process, after
registering the model (:func:`layerfast.bridges.lm_eval_registration.register`). So
the options, the printed results table (``make_table``) and the results JSON
(``OUT/<model>/results_<date>.json``) are the harness's own. Checked before anything loads: the form
of the ``--remove`` names, the options after ``--`` (none that this verb sets itself), and
``--include-path`` (:func:`layerfast.cli.checks.harness_flags`), the model's name
(:func:`layerfast.cli.model_specs.check_model_spec`); the harness checks the task names
before it builds the model (an unknown one is a one-line error here), and the model checks the
players right after it loads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..players import parse_removed
from . import values
from .common import done
from .flags import HARNESS, MODEL, RUN, add, verb
from .model_specs import check_model_spec

# harness options that `layerfast eval` sets from its own flags -> the flag to use instead
OWN_OPTIONS = {
    "--model": "--model",
    "-M": "--model",
    "--model_args": "--model and the other model flags",
    "-a": "--model and the other model flags",
    "--tasks": "--tasks",
    "-t": "--tasks",
    "--num_fewshot": "--num-fewshot",
    "-f": "--num-fewshot",
    "--limit": "--limit",
    "-L": "--limit",
    "--include_path": "--include-path",
    "--output_path": "--out",
    "-o": "--out",
    "--device": "--device",
    "--trust_remote_code": "--trust-remote-code",
}
TASKS_NOT_FOUND = "Tasks not found"  # the start of the harness's ValueError (process_tasks)


def register(sub) -> None:
    """The sub-parser of ``eval``."""
    p = verb(
        sub,
        "eval",
        cmd_eval,
        check_eval,
        help="run lm-evaluation-harness tasks on the model with sublayers removed",
        description="Run lm-evaluation-harness (its own run command, table and results JSON in "
        "--out) with the model 'layerfast': --model with the --remove sublayers skipped. "
        "Harness options that have no flag here go after --, e.g. -- --log_samples --seed 1.",
    )
    add(p, *MODEL, "--revision")
    add(
        p,
        "--tasks",
        required=True,
        metavar="NAMES",
        help="comma-separated harness tasks or groups, e.g. arc_easy,boolq (or task YAML files)",
    )
    add(p, "--remove", *HARNESS, "--limit", "--batch-tokens")
    add(
        p,
        "--max-length",
        help="longest request in tokens; longer ones are left-truncated as lm-evaluation-harness "
        "does (default: the model's limit, as the harness resolves it)",
    )
    add(p, *RUN, "harness_args")


def check_eval(args: argparse.Namespace) -> None:
    """The command line handed to the harness, and the model's name, before anything loads."""
    harness_argv(args)
    check_model_spec(args.model, args.revision, args.trust_remote_code, args.tokenizer is None)


def cmd_eval(args: argparse.Namespace) -> int:
    t0 = time.time()
    argv = harness_argv(args)
    before = set(_results_files(args.out))
    _run_harness(argv)
    written = sorted(set(_results_files(args.out)) - before)
    done(written, time.time() - t0)
    return 0


def harness_argv(args: argparse.Namespace) -> list[str]:
    """The harness's ``run`` command line for the parsed ``layerfast eval`` flags."""
    parse_removed(args.remove, what="--remove")  # the names' form; the model checks the rest
    passthrough = list(args.harness_args or [])
    if passthrough and not passthrough[0].startswith("-"):
        raise UsageError(
            f"unexpected argument {passthrough[0]!r}: harness options go after --, e.g. "
            "layerfast eval --tasks arc_easy -- --log_samples"
        )
    for option in passthrough:
        name = option.split("=", 1)[0]
        if name in OWN_OPTIONS:
            raise UsageError(
                f"{name} after --: layerfast eval sets it; use {OWN_OPTIONS[name]} instead"
            )
    argv = [
        "run",
        "--model",
        "layerfast",
        "--model_args",
        json.dumps(model_args(args)),
        "--tasks",
        ",".join(args.tasks),
        "--output_path",
        str(args.out),
    ]
    for option, value in (
        ("--num_fewshot", args.num_fewshot),
        ("--limit", args.limit),
        ("--include_path", args.include_path),
        ("--device", args.device or "cpu"),  # the harness's own default is cuda:0
    ):
        if value is not None:
            argv += [option, str(value)]
    return argv + passthrough


def model_args(args: argparse.Namespace) -> dict[str, Any]:
    """``LayerfastLM``'s arguments from the model flags (JSON-ready)."""
    batch_tokens, threads = values.batch_tokens(args), values.threads(args)
    out: dict[str, Any] = {
        "pretrained": args.model,
        "remove": args.remove,
        "batch_tokens": values.AUTO if batch_tokens is None else batch_tokens,
        "threads": values.AUTO if threads is None else threads,
        "progress": not args.no_progress,
    }
    if args.dtype is not None:
        out["dtype"] = args.dtype
    if args.max_length is not None:
        out["max_length"] = args.max_length
    if args.tokenizer is not None:
        out["tokenizer"] = str(args.tokenizer)
    if args.trust_remote_code:
        out["trust_remote_code"] = True
    if args.revision is not None:
        out["revision"] = args.revision
    return out


def _run_harness(argv: list[str]) -> None:
    """``lm-eval <argv>`` in this process (its console entry point reads ``sys.argv``), with
    the model ``"layerfast"`` registered first."""
    from lm_eval.__main__ import cli_evaluate

    from ..bridges.lm_eval_registration import register

    register()

    saved = sys.argv
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    except ValueError as e:
        if not isinstance(e, UsageError) and str(e).startswith(TASKS_NOT_FOUND):
            raise UsageError(f"--tasks: {e}; {_list_tasks_hint()}") from None
        raise
    finally:
        sys.argv = saved


def _list_tasks_hint() -> str:
    return (
        "list the names with `lm-eval ls tasks` (add --include_path DIR for your own YAMLs); "
        "a task of your own is a YAML file in a folder given as --include-path DIR"
    )


def _results_files(out: Path) -> list[Path]:
    """Every file under ``out`` (the harness writes results and samples in a folder per model)."""
    return [f for f in out.glob("**/*") if f.is_file()] if out.is_dir() else []
