"""Checks of the flags that cost nothing, run before any model loads or pass starts; each error
is a :class:`~layerfast.errors.UsageError` that names the flag (or the file) and the value.

* :func:`check_flags`: every number in range (one table, :data:`RANGES`), names that the library
  would reject later (dtypes, the calibration text, the utility ``eavss`` needs).
* :func:`check_paths`: ``--out`` is a folder that can be made and written; the cache file is not a
  folder and, when it exists, is a sound SQLite database.
* :func:`check_model`: what needs the model's block count (``--k``, ``--fraction``), checked right
  after it loads and before the expensive pass.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..paths import check_writable_folder
from ..tasks.kinds import LM_EVAL, TEXT, kind
from .values import byte_size, numbers


def _int_at_least(lo: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= lo), f"an integer >= {lo}"


def _finite(test: Callable[[float], bool], text: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: math.isfinite(v) and test(v)), text


# flag dest -> (test of a value, what the value must be); a flag a verb lacks is skipped
RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "limit": _int_at_least(1),
    "seed": _int_at_least(0),
    "max_length": _int_at_least(1),
    "window": _int_at_least(1),
    "budget": _int_at_least(1),
    "margin": _finite(lambda v: v >= 0, "a number >= 0"),
    "n_texts": _int_at_least(1),
    "eps": _finite(lambda v: v > 0, "a number > 0"),
    "fraction": _finite(lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "k": _int_at_least(1),
    "n_boot": _int_at_least(1),
    "steps": _int_at_least(1),
    "batch_size": _int_at_least(1),
    "lr": _finite(lambda v: v > 0, "a number > 0"),
    "weight": _finite(lambda v: v >= 0, "a number >= 0"),
    "temperature": _finite(lambda v: v > 0, "a number > 0"),
    "n_random": _int_at_least(0),
    "num_fewshot": _int_at_least(0),
    "workers": _int_at_least(1),
    "budget_compute": _finite(lambda v: v > 0, "a number > 0"),
    "item_bootstrap": (lambda v: v == 0 or v >= 2, "0 (off) or a whole number >= 2"),
    "gpus_per_worker": _finite(lambda v: v > 0, "a number > 0"),
}


def flag(dest: str) -> str:
    """The option string of an argparse ``dest``: ``batch_tokens`` -> ``--batch-tokens``."""
    return "--" + dest.replace("_", "-")


def check_flags(args: Any) -> None:
    """Every numeric flag in range and every name the library checks late, before any work."""
    for dest, (test, text) in RANGES.items():
        value = getattr(args, dest, None)
        if value is not None and not test(value):
            raise UsageError(f"{flag(dest)} must be {text}, got {value!r}")
    threads(args)
    batch_tokens(args)
    memory_budget(args)
    harness_flags(args)
    text_task_flags(args)
    utility(args)
    scale_flags(args)
    if getattr(args, "budgets", None):
        bad = [b for b in numbers("--budgets", args.budgets, int) if b < 1]
        if bad:
            raise UsageError(f"--budgets must be integers >= 1, got {args.budgets!r}")
    if getattr(args, "split", None) is not None:
        f = numbers("--split", args.split, float)
        if len(f) != 3 or not all(math.isfinite(x) and x > 0 for x in f) or abs(sum(f) - 1) > 1e-9:
            raise UsageError(
                f"--split must be three positive fractions summing to 1 (train,val,test), "
                f"got {args.split!r}"
            )
    _check_names(args)


def scale_flags(args: Any) -> None:
    """``--ray-address`` and ``--gpus-per-worker`` need ``--workers`` >= 2; the placement flags
    parse and agree with ``--device``."""
    from .common import n_workers, placement

    workers = n_workers(args)
    for dest in ("ray_address", "gpus_per_worker"):
        if getattr(args, dest, None) is not None and workers < 2:
            raise UsageError(f"{flag(dest)} needs --workers >= 2 (got --workers {workers})")
    if not hasattr(args, "device_map"):
        return
    from ..models.placement import check_placement

    where = placement(args)
    check_placement(
        getattr(args, "device", None),
        where.get("device_map"),
        where.get("max_memory"),
        where.get("offload_folder"),
    )


def is_harness_task(args: Any) -> bool:
    """``--task lm_eval:<name>``: an lm-evaluation-harness task or group."""
    return kind(str(getattr(args, "task", "") or "")) == LM_EVAL


def harness_flags(args: Any) -> None:
    """``--include-path`` and ``--num-fewshot`` belong to an lm_eval: task, and eavss (which
    needs each item's context and choices) does not take one."""
    include, shots = getattr(args, "include_path", None), getattr(args, "num_fewshot", None)
    given = [f for f, v in (("--include-path", include), ("--num-fewshot", shots)) if v is not None]
    if given and not is_harness_task(args) and args.verb != "eval":  # eval: harness tasks only
        raise UsageError(
            f"{' and '.join(given)} apply to --task lm_eval:<name> only, not --task {args.task}"
        )
    if include is not None and not include.is_dir():
        what = "is a file, not a folder" if include.exists() else "does not exist"
        raise UsageError(f"--include-path {include} {what} (a folder of task YAMLs)")
    if is_harness_task(args) and args.verb == "eavss":
        raise UsageError(
            f"--task {args.task}: eavss needs each item's context and choices, which "
            "lm_eval: tasks do not expose yet; use a JSONL or built-in task"
        )


def is_text_task(args: Any) -> bool:
    """``--task text:<lee|pydoc|file>``: plain text scored token by token (nll, ppl)."""
    return kind(str(getattr(args, "task", "") or "")) == TEXT


def text_task_flags(args: Any) -> None:
    """A text task: only the utilities nll and ppl (the default nll is set once it loads, in
    :func:`layerfast.cli.common.setup`), and not for the verbs that need multiple-choice items."""
    if not is_text_task(args):
        return
    if args.verb in ("eavss", "bench"):
        raise UsageError(
            f"--task {args.task}: {args.verb} needs multiple-choice items, which a text task "
            "has not; use a JSONL or built-in task"
        )
    if getattr(args, "utility", None) is not None:
        from ..tasks.text_task import check_text_utility

        try:
            check_text_utility(args.utility, args.task)
        except UsageError as e:
            raise UsageError(f"--utility: {e}") from None


def utility(args: Any) -> None:
    """``--utility``: for a layerfast task one of its utilities (default acc_norm); for an
    lm_eval: task a metric name, checked against the task once it loads, before the model
    (:func:`layerfast.cli.common.setup`); for a text: task nll or ppl (:func:`text_task_flags`)."""
    if not hasattr(args, "utility") or is_harness_task(args) or is_text_task(args):
        return
    from ..tasks.scoring import UTILITIES

    if args.utility is None:
        args.utility = "acc_norm"
    elif args.utility not in UTILITIES:
        raise UsageError(
            f"--utility {args.utility}: choose one of {', '.join(UTILITIES)} (a harness metric "
            "such as acc_mutual_info needs --task lm_eval:<name>)"
        )


def threads(args: Any) -> int | None:
    """``--threads``: None for ``auto`` (or a verb without the flag), else the count >= 1."""
    return _auto_count(args, "threads")


def batch_tokens(args: Any) -> int | None:
    """``--batch-tokens``: None for ``auto`` (or a verb without the flag), else the count >= 1."""
    return _auto_count(args, "batch_tokens")


def _auto_count(args: Any, dest: str) -> int | None:
    """Flag ``dest``: None for ``auto`` (or a verb without the flag), else an integer >= 1."""
    value = getattr(args, dest, None)
    if value is None or str(value).strip().lower() == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise UsageError(f"{flag(dest)} must be 'auto' or an integer >= 1, got {value!r}")
    return n


def memory_budget(args: Any) -> int | None:
    """``--memory-budget``: None for ``auto`` (or a verb without the flag), else bytes >= 0."""
    value = getattr(args, "memory_budget", None)
    if value is None or str(value).strip().lower() == "auto":
        return None
    return byte_size("--memory-budget", value)


def _check_names(args: Any) -> None:
    if getattr(args, "dtype", None) is not None:
        from ..models.loading import parse_dtype

        try:
            parse_dtype(args.dtype)
        except UsageError as e:
            raise UsageError(f"--dtype: {e}") from None
    stats_dtype = getattr(args, "stats_dtype", None)
    if stats_dtype is not None and stats_dtype.lower() != "model":
        from ..models.loading import parse_dtype

        try:
            parse_dtype(stats_dtype)
        except UsageError as e:
            raise UsageError(f"--stats-dtype: {e} or 'model'") from None
    texts = getattr(args, "texts", None)
    if texts is not None and texts not in ("lee", "pydoc"):
        path = Path(texts).expanduser()
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise UsageError(
                f"--texts {texts}: the file {what} (give 'lee', 'pydoc' or a .txt file)"
            )
        from ..tasks.texts import calibration_texts

        try:  # a file is read once here: a byte that is not UTF-8 fails before the model loads
            calibration_texts(texts, args.n_texts)
        except UsageError as e:
            raise UsageError(f"--texts: {e}") from None
    if args.verb == "eavss":
        from ..tasks.scoring import ACCURACY_UTILITIES

        if args.utility not in ACCURACY_UTILITIES:
            raise UsageError(
                f"--utility {args.utility}: eavss splits items into right and wrong answers, "
                f"so it needs one of {', '.join(ACCURACY_UTILITIES)}"
            )


def check_paths(args: Any) -> None:
    """``--out`` and the cache file (``--cache``, default ``OUT/utilities.sqlite``)."""
    out = getattr(args, "out", None)
    if out is None:
        return
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder")
    check_writable_folder(out, "--out")
    if getattr(args, "save", None) is not None:
        from ..models.saving import check_save_path

        check_save_path(args.save)
    if hasattr(args, "cache"):
        if args.cache is None:
            check_cache(out / "utilities.sqlite", f"the cache {out / 'utilities.sqlite'}")
        else:
            check_cache(args.cache, f"--cache {args.cache}")


def check_cache(path: Path, what: str) -> None:
    """The cache file is not a folder and, when it exists and is not empty, is an SQLite
    database that passes ``PRAGMA quick_check``; ``what`` names it in the message."""
    if path.is_dir():
        raise UsageError(f"{what} is a folder; name a file, e.g. {path / 'utilities.sqlite'}")
    if not path.exists():
        check_writable_folder(path.parent, what)
        return
    if not path.is_file():
        raise UsageError(f"{what} is not a regular file")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return  # an empty file: SQLite makes a new database in it
    if head != b"SQLite format 3\x00":
        raise UsageError(
            f"{what} is not an SQLite database (the cache of evaluated coalitions); "
            "move it away or name another file with --cache"
        )
    try:
        db = sqlite3.connect(path, timeout=60)
        try:
            result = db.execute("PRAGMA quick_check").fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        result = (str(e),)
    if result is None or result[0] != "ok":
        detail = result[0] if result else "no answer"
        raise UsageError(
            f"{what} is a corrupted SQLite database ({detail}); delete it (its coalitions "
            "will be evaluated again) or name another file with --cache"
        )


def check_model(args: Any, n_blocks: int) -> None:
    """Checks that need the block count of the loaded model, before the expensive pass."""
    if args.verb == "eavss" and args.k > n_blocks:
        raise UsageError(f"--k {args.k}: the model has only {n_blocks} blocks")
    if args.verb == "prune" and args.rule == "lowest":
        removed = int(round(args.fraction * n_blocks))
        if removed >= n_blocks:
            raise UsageError(
                f"--fraction {args.fraction} removes {removed} of the model's {n_blocks} "
                "blocks; at least one must stay"
            )
