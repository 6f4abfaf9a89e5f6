"""What every verb shares: task, model and Game from the common flags, and the closing line."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from .. import tasks
from ..errors import UsageError
from ..report import files as outputs


def setup(args):
    """Task, model, ``lf.Game`` (cached in OUT) and the metadata every output file records."""
    from .. import Game, load

    t0 = time.time()
    try:  # before the model: fail fast
        task = tasks.load(args.task, limit=args.limit, seed=args.seed)
    except FileNotFoundError as e:  # a --task path that is not there
        raise UsageError(f"--task: {e}") from e
    model = load(args.model, dtype=args.dtype, device=args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.cache or args.out / "utilities.sqlite"
    game = Game(
        model,
        task,
        utility=args.utility,
        cache=cache,
        batch_tokens=args.batch_tokens,
        progress=not args.no_progress,
    )
    meta = {
        "model": model.name,
        "task": task.name,
        "n_items": len(task),
        "limit": args.limit,
        "seed": args.seed,
        "utility": args.utility,
        "dtype": str(model.dtype).replace("torch.", ""),
        "command": shlex.join(["layerfast", *args.argv]),
        "environment": outputs.environment(),
    }
    print(
        f"model {model} | task {task} | utility {args.utility} | "
        f"loaded in {time.time() - t0:.1f} s",
        flush=True,
    )
    return game, meta


def save_model(hf_model, tokenizer, path: Path) -> Path:
    hf_model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def done(written: list, wall: float) -> None:
    print(f"\nwrote {', '.join(str(f) for f in written)} ({wall:.0f} s)")
