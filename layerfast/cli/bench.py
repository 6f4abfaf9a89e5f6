"""``layerfast bench``: the statistics kernels, the statistics pass and a sweep sample measured
side by side on this machine (see :mod:`layerfast.bench`)."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from ..errors import UsageError
from .common import load_tokenizer
from .flags import MODEL, RUN, SIZING, TASK, add, verb
from .values import AUTO, given


def register(sub) -> None:
    """The sub-parser of ``bench``."""
    p = verb(
        sub,
        "bench",
        cmd_bench,
        check_bench,
        help="measure the kernels, the statistics pass and a sweep sample against the seed way",
        description="Measure on this machine, side by side: the statistics kernels' GB/s "
        "against the device's copy and read bandwidth; a statistics pass against a plain "
        "forward and against keeping every hidden state; a sample of an ablation and a "
        "proximity sweep run the seed paper's way, with the naive executor and with the fast "
        "path, with the projected time of the full sweeps. Writes bench.txt, bench.json and "
        "bench.csv to --out.",
    )
    add(p, *MODEL, "--random", *TASK, *SIZING, *RUN, "--quick", "--only", "--time-budget")
    add(p, "--project-items", "--kernel-bytes")


def check_bench(args: argparse.Namespace) -> None:
    """``--model`` and ``--random`` both name the model: one of them."""
    if args.random is not None and given(args, "model"):
        raise UsageError(f"give --model {args.model} or --random {args.random}, not both")


def options(args: argparse.Namespace) -> Any:
    """:class:`layerfast.bench.runner.Options` from the flags (checked when parsed)."""
    from ..bench.runner import Options
    from ..bench.workload import RANDOM_PREFIX

    # a random model scores synthetic token ids unless a task is asked for
    task = args.task if given(args, "task") or args.random is None else None
    return Options(
        model=args.model if args.random is None else RANDOM_PREFIX + args.random,
        task=task,
        limit=args.limit,
        seed=args.seed,
        quick=args.quick,
        out=args.out,
        device=args.device,
        dtype=args.dtype,
        steps=args.only,
        time_budget_s=args.time_budget,
        project_items=args.project_items,
        batch_tokens=AUTO if args.batch_tokens is None else args.batch_tokens,
        memory_budget=AUTO if args.memory_budget is None else args.memory_budget,
        kernel_bytes=args.kernel_bytes,
        progress=True,  # --no-progress hides bars, keeps a heartbeat (cli.main)
        command=shlex.join(["layerfast", *args.argv]),
        threads=args.threads,
        trust_remote_code=args.trust_remote_code,
        delimiter=args.target_delimiter,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench.runner import run

    opts = options(args)
    if args.tokenizer is not None:
        opts.tokenizer = load_tokenizer(args.tokenizer, args.trust_remote_code)
    run(opts)
    print(f"wrote {opts.out / 'bench.txt'}, bench.json and bench.csv")
    return 0
