"""Loading an lm-evaluation-harness task or group as a :class:`~.lm_eval_tasks.HarnessTask`
(``multiple_choice`` tasks), or one ``generate_until`` task as a
:class:`~.lm_eval_gen_tasks.HarnessGenTask`, as ``lm_eval.simple_evaluate`` does: the harness's
``TaskManager`` finds it (built in, or a YAML under ``include_path``), ``num_fewshot`` and the
few-shot seed are set on every task the way ``simple_evaluate`` sets them, and each task renders
its own instances (``build_all_requests``). Other output types are refused in one line, and so
is a group that holds a ``generate_until`` task.
``limit`` takes the *first* N documents of each task, as the harness's ``--limit`` does.
A ``num_fewshot`` larger than a task's few-shot pool is refused in one line naming the task and
its pool (:func:`check_fewshot_pool`), where the harness would fail deep in its sampler.

lm_eval is imported only here, and only when a harness task is loaded.
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from .lm_eval_gen_tasks import HarnessGenTask
from .lm_eval_tasks import DEFAULT_FEWSHOT_SEED, LIST_TASKS_HINT, HarnessTask, Leaf

MULTIPLE_CHOICE, GENERATE, LOGLIKELIHOOD = "multiple_choice", "generate_until", "loglikelihood"


def load_harness(
    spec: str,
    include_path: str | Path | list[str | Path] | None = None,
    num_fewshot: int | None = None,
    limit: int | None = None,
    fewshot_seed: int | None = DEFAULT_FEWSHOT_SEED,
) -> HarnessTask | HarnessGenTask:
    """The harness task or group ``spec`` (a name, or a YAML path) as a :class:`HarnessTask`
    (multiple-choice tasks), or a ``generate_until`` task as a :class:`HarnessGenTask`.

    include_path: folder(s) of task YAMLs searched besides the built-in tasks (the harness's
        ``--include_path``). num_fewshot: few-shot examples per prompt; as in the harness, a
        task whose config sets 0 keeps 0, and None keeps each task's own (0 when unset).
    limit: the first ``limit`` documents of each task (the harness's ``--limit``).
    fewshot_seed: the few-shot sampler's seed (the harness's ``--seed``'s fourth value,
        1234 by default).
    """
    spec = spec.strip()
    if not spec or "," in spec:
        raise UsageError(
            f"lm_eval task {spec!r}: give one task or group name after 'lm_eval:' "
            "(a group YAML combines several)"
        )
    limit = _check_count("limit", limit, 1)
    num_fewshot = _check_count("num_fewshot", num_fewshot, 0)
    paths = _include_paths(include_path)
    try:
        import lm_eval  # noqa: F401
        from lm_eval.api.group import Group  # noqa: F401
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise UsageError(
            f"task lm_eval:{spec} needs lm-evaluation-harness: pip install lm_eval ({e})"
        ) from None
    if not hasattr(TaskManager, "load"):
        raise UsageError(
            f"lm-evaluation-harness {lm_eval.__version__} is too old for lm_eval: tasks "
            "(TaskManager.load is missing); pip install 'lm_eval>=0.4.13'"
        )
    manager = _manager(TaskManager, spec, paths)
    try:
        loaded = manager.load([spec])
    except (OSError, ConnectionError) as e:
        raise UsageError(
            f"task lm_eval:{spec}: the harness could not load its data ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); with no network, point the task at "
            "local files (an include: YAML in --include-path, see README) or fill the HF "
            "datasets cache first"
        ) from None
    tasks = loaded["tasks"]
    types = {name: _output_type(spec, name, task) for name, task in tasks.items()}
    options = {
        "include_path": [str(p) for p in paths] or None,
        "num_fewshot": num_fewshot,
        "limit": limit,
        "fewshot_seed": fewshot_seed,
        "lm_eval": lm_eval.__version__,
    }
    generative = [name for name, t in types.items() if t == GENERATE]
    if generative:
        if len(tasks) > 1:
            others = sorted({f"{t} ({name})" for name, t in types.items() if t != GENERATE})
            raise UsageError(
                f"lm_eval:{spec} holds {len(tasks)} tasks, {len(generative)} of output_type "
                f"generate_until ({', '.join(generative[:5])}"
                + (", ..." if len(generative) > 5 else "")
                + ")"
                + (f" besides {', '.join(others[:5])}" if others else "")
                + "; layerfast scores a generate_until task one at a time: load each by its name"
            )
        name, task = next(iter(tasks.items()))
        docs, instances, shots = _build(name, task, num_fewshot, limit, fewshot_seed, GENERATE)
        return HarnessGenTask(spec, name, task, docs, instances, shots, options)
    leaves, start = [], 0
    for name, task in tasks.items():
        leaf = _build_leaf(name, task, num_fewshot, limit, fewshot_seed, start)
        leaves.append(leaf)
        start += leaf.n_requests
    return HarnessTask(spec, leaves, _root_group(loaded.get("groups") or {}), options)


def _output_type(spec: str, name: str, task: Any) -> str:
    """The task's output type if layerfast scores it; a UsageError otherwise."""
    output_type = getattr(task, "OUTPUT_TYPE", None) or task.get_config("output_type")
    if output_type not in (MULTIPLE_CHOICE, GENERATE):
        raise UsageError(
            f"task {name} (of lm_eval:{spec}) has output_type {output_type!r}; layerfast scores "
            "multiple_choice and generate_until tasks (loglikelihood and loglikelihood_rolling "
            "are not supported yet)"
        )
    if getattr(task, "MULTIMODAL", False):
        raise UsageError(f"task {name} (of lm_eval:{spec}) is multimodal; not supported")
    return output_type


def _check_count(what: str, value: Any, lowest: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lowest:
        raise UsageError(f"{what} must be an integer >= {lowest}, got {value!r}")
    return int(value)


def _include_paths(include_path) -> list[Path]:
    if include_path is None:
        return []
    items = include_path if isinstance(include_path, (list, tuple)) else [include_path]
    paths = []
    for item in items:
        path = Path(item).expanduser()
        if not path.exists():
            raise UsageError(f"include path {item} does not exist (a folder of task YAMLs)")
        if not path.is_dir():
            raise UsageError(f"include path {item} is a file, not a folder of task YAMLs")
        paths.append(path)
    return paths


def _manager(TaskManager, spec: str, paths: list[Path]):
    """The harness's TaskManager that knows ``spec``. A task defined in the include path alone
    is loaded from an index of that path (the built-in tasks take seconds to index, and such a
    task is built from its YAML alone); anything else from the full index, as the harness does."""
    if paths:
        local = TaskManager(include_path=[str(p) for p in paths], include_defaults=False)
        entry = local.task_index.get(spec)
        from lm_eval.tasks._index import Kind

        if entry is not None and entry.kind in (Kind.TASK, Kind.PY_TASK):
            return local
    manager = TaskManager(include_path=[str(p) for p in paths] or None)
    if spec in manager.task_index:
        return manager
    from lm_eval.tasks._index import TaskIndex

    try:
        if TaskIndex.entry_from_path(Path(spec)) is not None:
            return manager
    except (OSError, ValueError) as e:
        raise UsageError(f"task lm_eval:{spec}: the YAML file cannot be read ({e})") from None
    close = difflib.get_close_matches(spec, manager.all_tasks, n=3, cutoff=0.75)
    where = f" (include path {', '.join(map(str, paths))})" if paths else ""
    raise UsageError(
        f"unknown lm-evaluation-harness task or group {spec!r}{where}"
        + (f"; close names: {', '.join(close)}" if close else "")
        + f"; {LIST_TASKS_HINT}; the harness skips a YAML it cannot parse without saying so"
    )


def _build_leaf(name, task, num_fewshot, limit, fewshot_seed, start) -> Leaf:
    """A multiple-choice task configured and built (:func:`_build`) as a :class:`Leaf`."""
    filters = getattr(task, "_filters", None)
    if not filters or len(filters) != 1:
        raise UsageError(
            f"task {name} has {len(filters or [])} filter pipelines; layerfast scores "
            "multiple_choice tasks with exactly one (the default 'none')"
        )
    docs, instances, shots = _build(name, task, num_fewshot, limit, fewshot_seed, LOGLIKELIHOOD)
    n_choices = np.array([len(task.doc_to_choice(doc)) for _, doc in docs], dtype=np.int64)
    return Leaf(
        name=name,
        task=task,
        docs=docs,
        instances=instances,
        start=start,
        n_requests=sum(len(insts) for insts in instances),
        n_choices=n_choices,
        num_fewshot=shots,
        filter_key=filters[0].name,
    )


def _build(name, task, num_fewshot, limit, fewshot_seed, request_type):
    """Configure ``task`` as simple_evaluate does and build its instances as evaluate does:
    ``(docs [(doc_id, doc)], per document its instances by idx, num_fewshot)``; every instance
    must ask for ``request_type``."""
    if num_fewshot is not None:
        if task.get_config("num_fewshot") != 0:  # the harness never overrides a set 0
            task.set_config(key="num_fewshot", value=num_fewshot)
    elif task.get_config("num_fewshot") is None:
        task.set_config(key="num_fewshot", value=0)
    task.set_fewshot_seed(seed=fewshot_seed)
    shots = int(task.get_config("num_fewshot") or 0)
    check_fewshot_pool(name, task, shots, from_flag=num_fewshot is not None)
    try:
        task.build_all_requests(limit=limit, rank=0, world_size=1)
    except (ValueError, AssertionError) as e:  # the sampler's, should the pool check miss one
        text = str(e)
        if "larger than population" not in text and "fewshot samples" not in text:
            raise
        pool, split, out = fewshot_pool(task)
        usable = None if pool is None else pool - out
        said = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        raise UsageError(
            _too_few(name, shots, usable, split, num_fewshot is not None, out)
            + f" (the harness: {said})"
        ) from None
    by_doc = defaultdict(list)
    for inst in task.instances:
        if inst.request_type != request_type:
            raise UsageError(
                f"task {name} asks for {inst.request_type!r} requests; only {request_type} ones "
                "are supported for it"
            )
        by_doc[inst.doc_id].append(inst)
    docs = list(task.doc_iterator(rank=0, limit=limit, world_size=1))
    instances = [sorted(by_doc[doc_id], key=lambda i: i.idx) for doc_id, _ in docs]
    return docs, instances, int(task.get_config("num_fewshot") or 0)


def fewshot_pool(task: Any) -> tuple[int | None, str | None, bool]:
    """(documents the task draws few-shot examples from, or None where unknown; the split they
    come from, or None; whether the document asked is left out of its own examples, as the
    harness does when the few-shot split is the test split)."""
    config = getattr(task, "config", None)
    fewshot = getattr(task, "fewshot_cfg", None)
    named = getattr(fewshot, "split", None)
    split = named
    if split is None and getattr(fewshot, "samples", None) is None:  # the harness's fallback
        for has, attr in (
            ("has_training_docs", "training_split"),
            ("has_validation_docs", "validation_split"),
            ("has_test_docs", "test_split"),
        ):
            try:
                if getattr(task, has)():
                    split = getattr(config, attr, None)
                    break
            except Exception:  # noqa: BLE001  (a task of another shape: no name, no harm)
                break
    sampler = getattr(task, "sampler", None)
    if sampler is None:  # the harness made none: the task has no few-shot documents at all
        return 0, split, False
    try:
        docs = sampler.fewshot_docs() if hasattr(sampler, "fewshot_docs") else sampler.df
        pool = len(docs)
    except (AttributeError, TypeError):  # a sampler of another shape: the harness decides
        return None, split, False
    return pool, split, named is not None and named == getattr(config, "test_split", None)


def check_fewshot_pool(name: str, task: Any, shots: int, from_flag: bool) -> None:
    """A one-line UsageError when ``shots`` few-shot examples cannot be drawn for a document of
    ``task`` (``from_flag``: ``num_fewshot`` / ``--num-fewshot`` asked for them, else the task's
    YAML); the harness's sampler would raise "Sample larger than population" instead."""
    if shots <= 0:
        return
    pool, split, leaves_one_out = fewshot_pool(task)
    if pool is None or pool - leaves_one_out >= shots:
        return
    raise UsageError(_too_few(name, shots, pool - leaves_one_out, split, from_flag, leaves_one_out))


def _too_few(
    name: str,
    shots: int,
    pool: int | None,
    split: str | None,
    from_flag: bool,
    leaves_one_out: bool = False,
) -> str:
    source = (
        "--num-fewshot / num_fewshot="
        if from_flag
        else "set by the task's YAML; --num-fewshot / num_fewshot= overrides it"
    )
    where = (
        f" (split {split!r}{', less the document asked' if leaves_one_out else ''})"
        if split
        else ""
    )
    holds = "an unknown number of" if pool is None else f"only {max(pool, 0)}"
    fits = f"; use --num-fewshot {max(pool, 0)} or fewer" if pool is not None else ""
    return (
        f"task {name}: num_fewshot={shots} ({source}) asks for {shots} few-shot examples per "
        f"document, but its few-shot pool{where} holds {holds} usable documents{fits}"
    )


def _root_group(groups: dict) -> Any:
    """The group no other group contains (None for a task or a tag)."""
    children = {g.name for group in groups.values() for g in group.get_all_groups(recursive=False)}
    roots = [g for name, g in groups.items() if name not in children]
    return roots[0] if len(roots) == 1 else None
