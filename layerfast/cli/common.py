"""What every verb shares: task, model and Game from the common flags, and the closing line."""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path
from typing import Any

from .. import tasks
from ..errors import UsageError
from ..report import files as outputs
from . import values
from .checks import check_blocks

_GAMES: list = []  # games this process's verbs made, closed when the verb returns


def close_games() -> None:
    """Stop the Ray workers of every game a verb made (``--workers``); main() calls this."""
    while _GAMES:
        _GAMES.pop().close()


def setup(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """(``lf.Game`` of the task and model the flags name, cached in OUT; the metadata every output
    file records). The task loads first, so a bad one fails before the model loads."""
    from .. import Game
    from ..evaluation.kl import refuse_kl
    from ..evaluation.sizing import resolve_sizes

    t0 = time.time()
    try:  # before the model: fail fast
        task = tasks.load(args.task, **values.task_options(args, args.task))
    except FileNotFoundError as e:  # a --task path that is not there
        raise UsageError(f"--task: {e}") from e
    try:  # every kind knows its utilities now, before the model loads
        if args.utility == "kl":  # a Game's utility on any kind with scored positions
            refuse_kl(task, args.utility)
        else:
            args.utility = task.check_utility(args.utility)
    except UsageError as e:
        raise UsageError(f"--utility: {e}") from None
    model = load_model(args)
    check_blocks(args, model.n_blocks)  # the checks that need the block count, before any pass
    batch_tokens = values.batch_tokens(args)  # None: auto
    # threads are set before the Game is built; "auto" resolved as the Game does it (exactly on
    # the CPU, where threads matter; on CUDA without the task's longest row)
    workers = values.n_workers(args)  # checked with the other flags (checks.py)
    distributed = workers > 1
    if distributed:  # --threads is then each worker's (None: the cores shared out)
        n_threads = values.threads(args)
    else:
        n_threads = use_threads(args, model, resolve_sizes(model, batch_tokens, 0)[0])
    args.out.mkdir(parents=True, exist_ok=True)
    cache = values.cache_path(args)
    game = Game(
        model,
        task,
        utility=args.utility,
        cache=cache,
        batch_tokens=batch_tokens,
        memory_budget=values.memory_budget(args),
        stack_tokens=getattr(args, "stack_tokens", None),
        max_length=args.max_length,
        progress=True,  # --no-progress hides bars, keeps a heartbeat (cli.main)
        workers=workers if distributed else None,
        ray_address=getattr(args, "ray_address", None),
        threads_per_worker=n_threads if distributed else None,
        gpus_per_worker=getattr(args, "gpus_per_worker", None),
        players=getattr(args, "players", None),
        unit=getattr(args, "unit", "sublayer"),
    )
    _GAMES.append(game)
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
    meta["threads"] = n_threads
    if distributed:
        meta["workers"] = workers
    if not game.player_set.is_every_sublayer:
        meta["player_choice"] = {"unit": args.unit, "names": game.players}
    meta["truncation"] = game.truncation
    meta["sizing"] = game.sizing
    if tasks.kind(args.task) == tasks.kinds.LM_EVAL:
        meta["harness"] = task.notes
    note = game.scorer.describe(args.utility)  # a text task's sign: nll is -NLL
    if note is not None:
        meta["utility_note"] = note
    note = f" ({meta['utility_note']})" if "utility_note" in meta else ""
    print(
        f"model {model} | task {task} | utility {args.utility}{note} | "
        f"loaded in {time.time() - t0:.1f} s",
        flush=True,
    )
    return game, meta


def load_model(args: argparse.Namespace) -> Any:
    """The SublayerModel of ``lf.load`` with the model flags (``--revision``, placement, on
    disk for the driver of ``--workers``); ``--tokenizer DIR`` supplies a tokenizer folder (for a
    model folder without one). A model that ends up without a tokenizer is a UsageError."""
    from .. import load

    trust = bool(getattr(args, "trust_remote_code", False))
    tokenizer = load_tokenizer(args.tokenizer, trust) if args.tokenizer is not None else None
    where = {"device": args.device, **values.placement(args)}
    workers = values.n_workers(args)
    model = load(
        args.model,
        dtype=args.dtype,
        tokenizer=tokenizer,
        trust_remote_code=trust,
        revision=getattr(args, "revision", None),
        **(values.driver_placement(args) if workers > 1 else where),
    )
    if workers > 1:  # the workers load the model where the flags say
        folder = where.get("offload_folder")
        model.load_spec.update(
            device=None if args.device is None else str(args.device),
            device_map=where.get("device_map"),
            max_memory=where.get("max_memory"),
            offload_folder=None if folder is None else str(folder),
        )
    if model.tokenizer is None:
        raise UsageError(
            f"model {args.model} has no tokenizer: name a tokenizer folder with --tokenizer DIR"
        )
    return model


def load_tokenizer(folder: Path, trust_remote_code: bool = False) -> Any:
    """The tokenizer saved in ``folder`` (``--tokenizer``); UsageError naming it otherwise."""
    from transformers import AutoTokenizer

    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise UsageError(f"--tokenizer {folder} {what}")
    try:  # trust_remote_code given explicitly: transformers refuses a folder's code, never asks
        return AutoTokenizer.from_pretrained(
            folder, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as e:
        reason = str(e).strip().split("\n")[0][:200]
        raise UsageError(f"--tokenizer {folder}: no tokenizer could be loaded ({reason})") from None


def use_threads(args: argparse.Namespace, model: Any, batch_tokens: int) -> int:
    """Set torch's CPU threads from ``--threads`` (``auto``: :func:`layerfast.threads.choose`
    for ``batch_tokens`` tokens per batch); returns the count, recorded in the metadata."""
    from .. import threads

    n = values.threads(args)
    return threads.apply(threads.choose(model, batch_tokens) if n is None else n)


def save_model(hf_model: Any, tokenizer: Any, path: Path) -> Path:
    """Save the (pruned or fine-tuned) model to ``--save``; the written folder."""
    from ..models.saving import save_pretrained_checked

    return save_pretrained_checked(hf_model, tokenizer, path)


def done(written: list, wall: float) -> None:
    """The closing line: the files written and the time taken."""
    print(f"\nwrote {', '.join(str(f) for f in written)} ({wall:.0f} s)")


def interrupted(args: argparse.Namespace | None) -> str:
    """The one line printed on Ctrl-C: what was kept and how to resume."""
    verb = "layerfast" if args is None else f"layerfast {args.verb}"
    if args is None or not hasattr(args, "cache"):  # nothing resumable
        return f"{verb}: interrupted; rerun the same command to start again"
    if getattr(args, "models", None) or getattr(args, "tasks", None):
        where = f"each pair's cache under {args.out}/<model>/<task>/"
    else:
        where = str(values.cache_path(args))
    return (
        f"{verb}: interrupted; the coalitions evaluated so far are kept in {where}: rerun the "
        "same command to resume"
    )
