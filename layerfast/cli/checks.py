"""The checks that need several flags together, a file, or the task's kind, run after parsing and
before any model loads (a value out of range already failed at parse time: the ``type=``
functions of :mod:`layerfast.cli.values`). Each error is a :class:`~layerfast.errors.UsageError`
that names the flag (or the file) and the value.

* :func:`check_flags`: the task's kind against the flags that depend on it (harness, text and
  generative tasks, ``--utility``, ``--target-delimiter``), the scale-out and placement flags, the
  calibration text file;
* :func:`check_paths`: ``--out`` is a folder that can be made and written; the cache file is not a
  folder and, when it exists, is a sound SQLite database;
* :func:`check_blocks`: what needs the model's block count (``--k``, ``--fraction``), checked
  right after it loads and before the expensive pass.

A verb's own checks (``report --models``, ``bench --random``) are its ``check`` handler,
which :func:`layerfast.cli.main` runs between the two.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from ..errors import UsageError
from ..paths import check_writable_folder
from ..tasks.kinds import LM_EVAL, TEXT, is_generative_spec, kind
from . import values


def check_flags(args: argparse.Namespace) -> None:
    """The cheap checks of flags that depend on each other or on the task's kind."""
    harness_flags(args)
    text_task_flags(args)
    generative_flags(args)
    utility(args)
    delimiter_flag(args)
    scale_flags(args)
    _check_names(args)


def task_names(args: argparse.Namespace) -> list[str]:
    """The task specs a command runs: ``--tasks`` (report), else ``--task``."""
    if getattr(args, "tasks", None) and args.verb == "report":
        return list(args.tasks)
    task = getattr(args, "task", None)
    return [] if task is None else [str(task)]


def _kinds(args: argparse.Namespace) -> set[str]:
    return {kind(t) for t in task_names(args)}


def flag(dest: str) -> str:
    """The option string of an argparse ``dest``: ``batch_tokens`` -> ``--batch-tokens``."""
    return "--" + dest.replace("_", "-")


def harness_flags(args: argparse.Namespace) -> None:
    """``--include-path`` and ``--num-fewshot`` belong to an lm_eval: task, and eavss (which
    needs each item's context and choices) does not take one."""
    include, shots = getattr(args, "include_path", None), getattr(args, "num_fewshot", None)
    given = [f for f, v in (("--include-path", include), ("--num-fewshot", shots)) if v is not None]
    harness = LM_EVAL in _kinds(args)
    if given and not harness and args.verb != "eval":  # eval: harness tasks only
        raise UsageError(
            f"{' and '.join(given)} apply to --task lm_eval:<name> only, not --task "
            f"{', '.join(task_names(args))}"
        )
    if include is not None and not include.is_dir():
        what = "is a file, not a folder" if include.exists() else "does not exist"
        raise UsageError(f"--include-path {include} {what} (a folder of task YAMLs)")
    if harness and args.verb == "eavss":
        raise UsageError(
            f"--task {args.task}: eavss needs each item's context and choices, which "
            "lm_eval: tasks do not expose yet; use a JSONL or built-in task"
        )


def text_task_flags(args: argparse.Namespace) -> None:
    """A text task: only the utilities nll and ppl (the default nll is set once it loads, in
    :func:`layerfast.cli.common.setup`), and not for the verbs that need multiple-choice items."""
    for task in task_names(args):
        if kind(task) != TEXT:
            continue
        if args.verb in ("eavss", "bench"):
            raise UsageError(
                f"--task {task}: {args.verb} needs multiple-choice items, which a text task "
                "has not; use a JSONL or built-in task"
            )
        if getattr(args, "utility", None) not in (None, "kl"):
            from ..tasks.text_task import check_text_utility

            try:
                check_text_utility(args.utility, task)
            except UsageError as e:
                raise UsageError(f"--utility: {e}") from None


def generative_flags(args: argparse.Namespace) -> None:
    """A generative task (``*-gen``) on a verb or with flags that cannot take one."""
    generative = [t for t in task_names(args) if is_generative_spec(t)]
    if not generative:
        return
    if args.verb == "bench":
        raise UsageError(
            f"--task {generative[0]} is generative; bench times likelihood sweeps (give a "
            "multiple-choice task, or time a generative sweep with benchmarks/bench_generation.py)"
        )
    if values.n_workers(args) >= 2:
        raise UsageError(
            f"--workers {values.n_workers(args)}: generative tasks ({generative[0]}) run in this "
            "process for now; drop --workers"
        )


def utility(args: argparse.Namespace) -> None:
    """``--utility`` on a multiple-choice task: one of layerfast's utilities (None: the task's
    default, set when it loads; ``kl`` on any task but a generative one); an lm_eval: task's
    metrics are checked once it loads, before the model (:func:`layerfast.cli.common.setup`);
    a text: task's in :func:`text_task_flags`."""
    name = getattr(args, "utility", None)
    if name == "kl":  # any task with scored positions (lf.Game checks the kind once it loads)
        if args.verb in ("eavss", "bench"):
            raise UsageError(f"--utility kl: {args.verb} scores answers; kl has none")
        return
    if name is None or _kinds(args) & {LM_EVAL, TEXT}:
        return
    from ..tasks.gen_scoring import UTILITIES as GENERATIVE
    from ..tasks.scoring import UTILITIES

    specs = task_names(args)
    if any(is_generative_spec(t) for t in specs) or (
        name in GENERATIVE and any(is_generative_spec(t) is None for t in specs)
    ):
        return  # a generative task (or a JSONL file that may be one): checked once it loads

    if name not in UTILITIES:
        raise UsageError(
            f"--utility {name}: choose one of {', '.join(UTILITIES)} (a harness metric "
            "such as acc_mutual_info needs --task lm_eval:<name>)"
        )


def delimiter_flag(args: argparse.Namespace) -> None:
    """``--target-delimiter`` applies to JSONL task files only."""
    if getattr(args, "target_delimiter", None) is None:
        return
    from ..tasks import sets_own_delimiter

    for task in task_names(args):
        if sets_own_delimiter(task):
            raise UsageError(
                f"--target-delimiter applies to a JSONL --task file; --task {task} sets its "
                "own delimiter"
            )


def scale_flags(args: argparse.Namespace) -> None:
    """``--ray-address`` and ``--gpus-per-worker`` need ``--workers`` >= 2, which needs Ray, and
    a ``--ray-address`` must answer (a 5 s TCP connect); the placement flags parse and agree
    with ``--device``."""
    workers = values.n_workers(args)
    for dest in ("ray_address", "gpus_per_worker"):
        if getattr(args, dest, None) is not None and workers < 2:
            raise UsageError(f"{flag(dest)} needs --workers >= 2 (got --workers {workers})")
    if workers >= 2:
        from ..evaluation.ray.cluster import INSTALL_HINT, check_reachable

        if importlib.util.find_spec("ray") is None:
            raise UsageError(
                f"--workers {workers} runs the sweep on Ray, which is not installed: {INSTALL_HINT}"
            )
        address = getattr(args, "ray_address", None)
        if address not in (None, values.AUTO):
            check_reachable(address)
    if not hasattr(args, "device_map"):
        return
    from ..models.placement import check_placement

    where = values.placement(args)
    check_placement(
        getattr(args, "device", None),
        where.get("device_map"),
        where.get("max_memory"),
        where.get("offload_folder"),
    )


def _check_names(args: argparse.Namespace) -> None:
    """The calibration text file, read once here (a byte that is not UTF-8 fails before the
    model loads), and the accuracy utility eavss needs."""
    texts = getattr(args, "texts", None)
    if texts is not None and texts not in ("lee", "pydoc"):
        path = Path(texts).expanduser()
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise UsageError(
                f"--texts {texts}: the file {what} (give 'lee', 'pydoc' or a .txt file)"
            )
        from ..tasks.texts import calibration_texts

        try:
            calibration_texts(texts, args.n_texts)
        except UsageError as e:
            raise UsageError(f"--texts: {e}") from None
    if args.verb == "eavss" and args.utility is not None:
        from ..tasks.scoring import ACCURACY_UTILITIES

        if args.utility not in ACCURACY_UTILITIES:
            raise UsageError(
                f"--utility {args.utility}: eavss splits items into right and wrong answers, "
                f"so it needs one of {', '.join(ACCURACY_UTILITIES)}"
            )


def check_paths(args: argparse.Namespace) -> None:
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
    """The cache file (``--cache``, default ``OUT/utilities.sqlite``) can be used: read and
    written (:func:`layerfast.evaluation.cache.check_cache_file`; ``what`` names it)."""
    from ..evaluation.cache import check_cache_file

    check_cache_file(path, what)


def check_blocks(args: argparse.Namespace, n_blocks: int) -> None:
    """Checks that need the block count of the loaded model, before the expensive pass."""
    if args.verb == "eavss" and args.k > n_blocks:
        raise UsageError(f"--k {args.k}: the model has only {n_blocks} blocks")
    if args.verb == "prune" and args.rule == "lowest" and args.by != "search":
        removed = int(round(args.fraction * n_blocks))
        if removed >= n_blocks:
            raise UsageError(
                f"--fraction {args.fraction} removes {removed} of the model's {n_blocks} "
                "blocks; at least one must stay"
            )
