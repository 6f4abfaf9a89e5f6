"""What every verb shares: task, model and Game from the common flags, and the closing line."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

from .. import tasks
from ..errors import UsageError
from ..report import files as outputs
from .checks import batch_tokens as flag_batch_tokens
from .checks import check_model
from .checks import memory_budget as flag_memory_budget
from .checks import threads as flag_threads

_GAMES: list = []  # games this process's verbs made, closed when the verb returns


def close_games() -> None:
    """Stop the Ray workers of every game a verb made (``--workers``); main() calls this."""
    while _GAMES:
        _GAMES.pop().close()


def setup(args):
    """Task, model, ``lf.Game`` (cached in OUT) and the metadata every output file records."""
    from .. import Game
    from ..evaluation.sizing import resolve_sizes

    t0 = time.time()
    try:  # before the model: fail fast
        task = tasks.load(
            args.task,
            limit=args.limit,
            seed=args.seed,
            delimiter=target_delimiter(args),
            include_path=getattr(args, "include_path", None),
            num_fewshot=getattr(args, "num_fewshot", None),
        )
    except FileNotFoundError as e:  # a --task path that is not there
        raise UsageError(f"--task: {e}") from e
    try:  # every kind knows its utilities now, before the model loads
        args.utility = task.check_utility(args.utility)
    except UsageError as e:
        raise UsageError(f"--utility: {e}") from None
    model = load_model(args)
    check_model(args, model.n_blocks)  # the checks that need the block count, before any pass
    batch_tokens = flag_batch_tokens(args)  # None: auto
    # threads are set before the Game is built; "auto" resolved as the Game does it (exactly on
    # the CPU, where threads matter; on CUDA without the task's longest row)
    workers = n_workers(args)  # checked with the other flags (checks.py)
    distributed = workers > 1
    if distributed:  # --threads is then each worker's (None: the cores shared out)
        n_threads = flag_threads(args)
    else:
        n_threads = use_threads(args, model, resolve_sizes(model, batch_tokens, 0)[0])
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.cache or args.out / "utilities.sqlite"
    game = Game(
        model,
        task,
        utility=args.utility,
        cache=cache,
        batch_tokens=batch_tokens,
        memory_budget=flag_memory_budget(args),
        max_length=args.max_length,
        progress=not args.no_progress,
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


ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def target_delimiter(args) -> str | None:
    """``--target-delimiter``: None when not given, else the string with ``\\n``, ``\\t``,
    ``\\r`` and ``\\\\`` decoded; a UsageError for another escape, or for a ``--task`` that
    sets its own delimiter (a built-in task)."""
    value = getattr(args, "target_delimiter", None)
    if value is None:
        return None
    parts = re.split(r"(\\.?)", value, flags=re.S)
    bad = [p for p in parts[1::2] if p[1:] not in ESCAPES]
    if bad:
        what = f"unknown escape {bad[0]}" if len(bad[0]) == 2 else "a lone \\ at the end"
        raise UsageError(f"--target-delimiter {value!r}: {what} (known: \\n, \\t, \\r, \\\\)")
    if tasks.sets_own_delimiter(args.task):
        raise UsageError(
            f"--target-delimiter applies to a JSONL --task file; --task {args.task} sets its "
            "own delimiter"
        )
    return "".join(p if k % 2 == 0 else ESCAPES[p[1:]] for k, p in enumerate(parts))


def load_model(args):
    """``lf.load`` with the model flags; ``--tokenizer DIR`` supplies a tokenizer folder (for a
    model folder without one). A model that ends up without a tokenizer is a UsageError."""
    from .. import load

    trust = bool(getattr(args, "trust_remote_code", False))
    tokenizer = load_tokenizer(args.tokenizer, trust) if args.tokenizer is not None else None
    where = {"device": args.device, **placement(args)}
    workers = n_workers(args)
    model = load(
        args.model,
        dtype=args.dtype,
        tokenizer=tokenizer,
        trust_remote_code=trust,
        **(driver_placement(args) if workers > 1 else where),
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


def n_workers(args) -> int:
    """``--workers`` (1 for a verb without the flag)."""
    return getattr(args, "workers", None) or 1


SWEEP_ONLY = ("ablate", "shapley", "report")  # verbs whose driver never runs the model


def driver_placement(args) -> dict:
    """Where this process keeps its copy of the model when ``--workers`` run it: left on disk
    (``device_map={"": "disk"}``: no weights in memory; the tokenizer, config and fingerprint
    are all it reads) for the verbs that only sweep, else on the CPU (prune and eavss also run
    the model here)."""
    if getattr(args, "verb", None) in SWEEP_ONLY:
        return {"device_map": {"": "disk"}}
    return {"device": "cpu"}


def placement(args) -> dict:
    """``--device-map``, ``--max-memory`` and ``--offload-folder`` as ``lf.load`` keywords
    (only those given)."""
    import json

    out: dict = {}
    device_map = getattr(args, "device_map", None)
    if device_map is not None:
        path = Path(device_map)
        if path.suffix == ".json" or path.is_file():
            try:
                device_map = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise UsageError(
                    f"--device-map {device_map}: cannot read a JSON map: {e}"
                ) from None
            if not isinstance(device_map, dict):
                raise UsageError(
                    f"--device-map {path}: the JSON must be an object of name -> device"
                )
        out["device_map"] = device_map
    max_memory = getattr(args, "max_memory", None)
    if max_memory is not None:
        limits = {}
        for part in filter(None, (p.strip() for p in max_memory.split(","))):
            dev, sep, size = part.partition("=")
            if not sep or not dev.strip() or not size.strip():
                raise UsageError(
                    f"--max-memory {max_memory!r}: expected DEVICE=SIZE pairs such as "
                    "0=70GiB,cpu=200GiB"
                )
            dev = dev.strip()
            limits[int(dev) if dev.isdigit() else dev] = size.strip()
        out["max_memory"] = limits
    if getattr(args, "offload_folder", None) is not None:
        out["offload_folder"] = args.offload_folder
    return out


def load_tokenizer(folder: Path, trust_remote_code: bool = False):
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


def use_threads(args, model, batch_tokens: int) -> int:
    """Set torch's CPU threads from ``--threads`` (``auto``: :func:`layerfast.threads.choose`
    for ``batch_tokens`` tokens per batch); returns the count, recorded in the metadata."""
    from .. import threads

    n = flag_threads(args)
    return threads.apply(threads.choose(model, batch_tokens) if n is None else n)


def save_model(hf_model, tokenizer, path: Path) -> Path:
    from ..models.saving import save_pretrained_checked

    return save_pretrained_checked(hf_model, tokenizer, path)


def done(written: list, wall: float) -> None:
    print(f"\nwrote {', '.join(str(f) for f in written)} ({wall:.0f} s)")
