"""``layerfast bench``: the statistics kernels, the statistics pass and a sweep sample measured
side by side on this machine (see :mod:`layerfast.bench`)."""

from __future__ import annotations

import argparse
import math
import shlex

from ..errors import UsageError
from .checks import batch_tokens, memory_budget, threads
from .parser import BENCH_STEPS as STEPS
from .values import byte_size


def options(args: argparse.Namespace):
    """:class:`layerfast.bench.runner.Options` from the flags, every value checked first."""
    from ..bench.runner import Options
    from ..bench.workload import RANDOM_PREFIX
    from ..models.loading import DEFAULT_MODEL
    from .common import target_delimiter

    steps = tuple(s.strip() for s in args.only.split(",") if s.strip())
    bad = [s for s in steps if s not in STEPS]
    if bad or not steps:
        raise UsageError(f"--only {args.only!r}: choose a comma-separated subset of {STEPS}")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be an integer >= 1, got {args.limit}")
    if args.project_items is not None and args.project_items < 1:
        raise UsageError(f"--project-items must be an integer >= 1, got {args.project_items}")
    if args.time_budget is not None and not (
        math.isfinite(args.time_budget) and args.time_budget > 0
    ):
        raise UsageError(f"--time-budget must be a number of seconds > 0, got {args.time_budget}")
    kernel_bytes = byte_size("--kernel-bytes", args.kernel_bytes)
    if kernel_bytes < 1 << 20:
        raise UsageError(f"--kernel-bytes must be at least 1MiB, got {args.kernel_bytes!r}")
    tokens, budget = batch_tokens(args), memory_budget(args)
    if args.random is not None and args.model != DEFAULT_MODEL:
        raise UsageError(f"give --model {args.model} or --random {args.random}, not both")
    task = args.task if "--task" in args.argv or args.random is None else None
    return Options(
        model=args.model if args.random is None else RANDOM_PREFIX + args.random,
        task=task,
        limit=args.limit,
        seed=args.seed,
        quick=args.quick,
        out=args.out,
        device=args.device,
        dtype=args.dtype,
        steps=steps,
        time_budget_s=args.time_budget,
        project_items=args.project_items,
        batch_tokens="auto" if tokens is None else tokens,
        memory_budget="auto" if budget is None else budget,
        kernel_bytes=kernel_bytes,
        progress=not args.no_progress,
        command=shlex.join(["layerfast", *args.argv]),
        threads=threads(args),
        trust_remote_code=args.trust_remote_code,
        delimiter=target_delimiter(args),
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench.runner import run
    from .common import load_tokenizer

    opts = options(args)
    if args.tokenizer is not None:
        opts.tokenizer = load_tokenizer(args.tokenizer, args.trust_remote_code)
    run(opts)
    print(f"wrote {opts.out / 'bench.txt'}, bench.json and bench.csv")
    return 0
