"""lm-evaluation-harness tasks as layerfast tasks: ``lf.tasks.load("lm_eval:<task or group>")``.

The harness itself builds everything, as ``lm_eval.simple_evaluate`` does: its ``TaskManager``
finds the task or group (built in, or a YAML under ``include_path``), ``num_fewshot`` and the
few-shot seed are set on every task the way ``simple_evaluate`` sets them, and each task renders
its own instances (``build_all_requests``: few-shot examples and description, the few-shot
sampler, ``target_delimiter``, ``doc_to_choice``, several contexts with one continuation as in
winogrande, the unconditional requests of ``acc_mutual_info``). Every ``loglikelihood`` instance
becomes one :class:`~layerfast.tasks.requests.Request`, tokenised as the harness's HFLM
does. A coalition is scored by the task's own ``process_results`` on its per-document results
``[(loglik, is_greedy), ...]`` and the task's own ``aggregation()``; a group by the harness's own
group aggregation (``Group.aggregate``), so every number is the harness's.

``is_greedy`` is fed as False: the multiple-choice metrics (acc, acc_norm, acc_bytes,
acc_mutual_info) do not read it. ``exact_match`` does, so it is not offered as a utility.

Only ``multiple_choice`` tasks are supported; other output types (``loglikelihood``,
``loglikelihood_rolling``, ``generate_until``) raise a :class:`~layerfast.errors.UsageError`
naming the task and its type. ``limit`` takes the *first* N documents of each task, as the
harness's ``--limit`` does (not a random subset as for layerfast's own tasks), so numbers line up.

lm_eval is imported only when a harness task is loaded.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError

PREFIX = "lm_eval:"
DEFAULT_FEWSHOT_SEED = 1234  # lm_eval.defaults.DEFAULT_OTHER_SEED: simple_evaluate's default
ACCURACY_METRICS = ("acc", "acc_norm", "acc_bytes", "acc_mutual_info")  # 0/1 per document
GREEDY_METRICS = ("exact_match",)  # read is_greedy, which layerfast does not compute
LIST_TASKS_HINT = (
    "list the names with `lm-eval ls tasks` (older versions: `lm_eval --tasks list`) or "
    "`python -c 'from lm_eval.tasks import TaskManager; print(TaskManager().all_tasks)'`; "
    "a task of your own is a YAML file in a folder given as --include-path DIR (include_path=)"
)


@dataclass
class _Leaf:
    """One harness task of a (possibly one-task) layerfast task."""

    name: str
    task: Any  # lm_eval.api.task.Task
    docs: list[tuple[int, Any]]  # (doc_id, doc) in the order evaluate() iterates them
    instances: list[list[Any]]  # per document, its Instances sorted by idx
    start: int  # index of its first request in the task's request list
    n_requests: int
    n_choices: np.ndarray  # int [n_docs]
    num_fewshot: int
    filter_key: str


class HarnessTask:
    """A multiple-choice lm-evaluation-harness task or group, with the facts a sweep needs.

    len(task): documents (over all subtasks of a group). chance: the mean over documents of
    1 / number of choices. utilities: the task's metrics a Game can use (per-document numbers
    the harness averages); default_utility: acc_norm when the task has it, else acc.
    """

    def __init__(
        self,
        spec: str,
        leaves: list[_Leaf],
        group: Any,
        options: dict,
    ):
        self.spec = spec
        self.name = PREFIX + spec
        self.leaves = leaves
        self.group = group  # lm_eval Group whose aggregation gives v, or None
        self.options = options
        self.source = ", ".join(options.get("include_path") or ["lm_eval"])
        self.utilities = _utilities(spec, leaves, group)
        self.accuracy_utilities = tuple(u for u in self.utilities if u in ACCURACY_METRICS)
        self.default_utility = next(
            (u for u in ("acc_norm", "acc") if u in self.utilities), self.utilities[0]
        )
        self.notes = {
            "harness": spec,
            **options,
            "tasks": {
                leaf.name: {"n_docs": len(leaf.docs), "num_fewshot": leaf.num_fewshot}
                for leaf in leaves
            },
            "group": getattr(group, "name", None),
        }

    def __len__(self) -> int:
        return sum(len(leaf.docs) for leaf in self.leaves)

    @property
    def chance(self) -> float:
        return float(np.mean(np.concatenate([1.0 / leaf.n_choices for leaf in self.leaves])))

    @property
    def arguments(self) -> list[tuple[str, str]]:
        """Every (context, continuation) request string pair, in request order."""
        return [
            tuple(inst.args[:2])
            for leaf in self.leaves
            for insts in leaf.instances
            for inst in insts
        ]

    def check_utility(self, name: str) -> str:
        if name not in self.utilities:
            raise UsageError(
                f"utility {name!r} is not a metric of task {self.name}; choose one of "
                f"{', '.join(self.utilities)} (the task's metrics whose per-document values the "
                "harness averages; exact_match needs greedy decoding, which is not computed)"
            )
        return name

    def fingerprint(self) -> str:
        """A hash of the harness configuration and every rendered request string."""
        payload = json.dumps(
            {
                "spec": self.spec,
                "tasks": [[leaf.name, leaf.num_fewshot, len(leaf.docs)] for leaf in self.leaves],
                "fewshot_seed": self.options.get("fewshot_seed"),
                "limit": self.options.get("limit"),
                "arguments": self.arguments,
            }
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def requests(self, tokenizer: Any, max_length: int) -> list:
        """One Request per harness instance, in (task, document, instance idx) order; requests
        of one document with the same context string share a packing group (``Request.item``)."""
        from ..tasks.requests import encode_request

        if tokenizer is None:
            raise ValueError("this model has no tokenizer: pass one to lf.load(..., tokenizer=...)")
        out, group, previous = [], -1, None
        for leaf in self.leaves:
            for (doc_id, _), insts in zip(leaf.docs, leaf.instances):
                for inst in insts:
                    context, continuation = inst.args[:2]
                    if (leaf.name, doc_id, context) != previous:
                        group, previous = group + 1, (leaf.name, doc_id, context)
                    try:
                        out.append(
                            encode_request(
                                tokenizer, context, continuation, max_length, group, inst.idx
                            )
                        )
                    except ValueError as e:
                        raise UsageError(
                            f"task {leaf.name} document {doc_id} request {inst.idx}: {e}"
                        ) from None
        return out

    def scorer(self) -> HarnessScorer:
        return HarnessScorer(self)

    def __repr__(self) -> str:
        return f"HarnessTask({self.name!r}, {len(self)} docs, chance={self.chance:.3f})"


class HarnessScorer:
    """Scores per-request log-likelihoods (float64 [n_requests], request order) with the
    harness's own ``process_results``, ``aggregation()`` and group aggregation.

    ``__call__`` gives the harness's number; ``per_item`` gives per-document terms whose mean
    is that number: the per-document metric values, scaled by N / (k n_t) for a group that
    averages its k subtasks without weighting by size (n_t documents of N in subtask t).
    """

    MEMO = 64  # coalitions whose per-document metrics are kept

    def __init__(self, task: HarnessTask):
        self.task = task
        self.utilities = task.utilities
        self.accuracy_utilities = task.accuracy_utilities
        self.default_utility = task.default_utility
        self._memo: OrderedDict[bytes, tuple[dict, dict]] = OrderedDict()

    def check(self, utility: str | None) -> str:
        return self.task.check_utility(self.default_utility if utility is None else utility)

    def chance(self, utility: str) -> float | None:
        """Utility of a uniform random guess (accuracy metrics only)."""
        if utility not in self.accuracy_utilities:
            return None
        return float(np.mean(self._weights(utility) / self._n_choices()))

    def per_item(self, loglik: np.ndarray, utility: str) -> np.ndarray:
        """Per-document terms, float64 [n_docs] (subtasks in order); their mean is v."""
        self.check(utility)
        values, _ = self._scores(loglik)
        return values[utility] * self._weights(utility)

    def __call__(self, loglik: np.ndarray, utility: str) -> float:
        self.check(utility)
        return self._scores(loglik)[1][utility]

    # --- internals -----------------------------------------------------------------------------
    def _n_choices(self) -> np.ndarray:
        return np.concatenate([leaf.n_choices for leaf in self.task.leaves]).astype(np.float64)

    def _weights(self, utility: str) -> np.ndarray:
        sizes = [len(leaf.docs) for leaf in self.task.leaves]
        if _weight_by_size(self.task.group, utility):
            return np.ones(sum(sizes))
        total, k = sum(sizes), len(sizes)
        return np.concatenate([np.full(n, total / (k * n)) for n in sizes])

    def _scores(self, loglik: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """(per-document values per metric, the harness's aggregate per metric)."""
        ll = np.ascontiguousarray(loglik, dtype=np.float64)
        n_requests = sum(leaf.n_requests for leaf in self.task.leaves)
        if ll.shape != (n_requests,):
            raise ValueError(f"expected {n_requests} log-likelihoods, got shape {ll.shape}")
        key = hashlib.sha1(ll.tobytes()).digest()
        if key in self._memo:
            self._memo.move_to_end(key)
            return self._memo[key]
        from lm_eval.api.metrics import aggregate_subtask_metrics

        per_doc: dict[str, list] = defaultdict(list)
        task_metrics = {}
        for leaf in self.task.leaves:
            raw = _process(leaf, ll[leaf.start : leaf.start + leaf.n_requests], self.utilities)
            aggregation = leaf.task.aggregation()
            task_metrics[leaf.name] = {"sample_len": len(leaf.docs)}
            for m in self.utilities:
                per_doc[m] += raw[m]
                task_metrics[leaf.name][f"{m},{leaf.filter_key}"] = aggregation[m](raw[m])
        group = self.task.group
        values = {}
        for m in self.utilities:
            keys = [f"{m},{leaf.filter_key}" for leaf in self.task.leaves]
            if group is not None and group.has_aggregation:
                values[m] = float(group.aggregate(task_metrics)[keys[0]])
            elif len(self.task.leaves) == 1:
                values[m] = float(task_metrics[self.task.leaves[0].name][keys[0]])
            else:  # a tag, or a group without aggregate_metric_list: size-weighted mean
                values[m] = float(
                    aggregate_subtask_metrics(
                        [task_metrics[leaf.name][k] for leaf, k in zip(self.task.leaves, keys)],
                        [len(leaf.docs) for leaf in self.task.leaves],
                        True,
                    )
                )
        result = ({m: np.asarray(v, dtype=np.float64) for m, v in per_doc.items()}, values)
        self._memo[key] = result
        if len(self._memo) > self.MEMO:
            self._memo.popitem(last=False)
        return result


def _process(leaf: _Leaf, ll: np.ndarray, metrics: tuple[str, ...]) -> dict[str, list]:
    """The task's per-document metric values for one coalition's log-likelihoods of its
    requests, through its filters and ``process_results`` as ``evaluate`` runs them."""
    flat = [inst for insts in leaf.instances for inst in insts]
    for inst, value in zip(flat, ll.tolist()):
        inst.resps = [(value, False)]  # is_greedy: not read by multiple-choice metrics
        inst.filtered_resps = {}
    leaf.task.apply_filters()
    raw: dict[str, list] = {m: [] for m in metrics}
    for (_, doc), insts in zip(leaf.docs, leaf.instances):
        result = leaf.task.process_results(doc, [i.filtered_resps[leaf.filter_key] for i in insts])
        for m in metrics:
            raw[m].append(result[m])
    return raw


def _weight_by_size(group: Any, metric: str) -> bool:
    if group is None or not group.has_aggregation:
        return True
    for agg in group.aggregate_metric_list:
        if agg.metric == metric:
            return bool(agg.weight_by_size)
    return True


def _utilities(spec: str, leaves: list[_Leaf], group: Any) -> tuple[str, ...]:
    """The metrics every subtask gives as a number per document and averages (and that the
    group aggregates, if it has an aggregation), in the first subtask's order."""
    from lm_eval.api.metrics import mean

    found: list[tuple[str, ...]] = []
    every: set[str] = set()
    for leaf in leaves:
        doc = leaf.docs[0][1]
        probe = leaf.task.process_results(doc, [(0.0, False)] * len(leaf.instances[0]))
        every |= set(probe)
        aggregation = leaf.task.aggregation()
        found.append(
            tuple(
                m
                for m, v in probe.items()
                if isinstance(v, (int, float, np.integer, np.floating))
                and aggregation.get(m, mean) is mean
                and m not in GREEDY_METRICS
            )
        )
    usable = [m for m in found[0] if all(m in f for f in found[1:])]
    if group is not None and group.has_aggregation:
        aggregated = {agg.metric for agg in group.aggregate_metric_list}
        usable = [m for m in usable if m in aggregated]
    if not usable:
        raise UsageError(
            f"task lm_eval:{spec} has no metric layerfast can use as a utility (its metrics: "
            f"{', '.join(sorted(every)) or 'none'}); a utility must be a per-document number "
            "that the harness averages"
            + (" and that the group aggregates" if group is not None else "")
        )
    return tuple(usable)


# --- loading ---------------------------------------------------------------------------------
def load_harness(
    spec: str,
    include_path: str | Path | list[str | Path] | None = None,
    num_fewshot: int | None = None,
    limit: int | None = None,
    fewshot_seed: int | None = DEFAULT_FEWSHOT_SEED,
) -> HarnessTask:
    """The harness task or group ``spec`` (a name, or a YAML path) as a :class:`HarnessTask`.

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
    for name, task in tasks.items():
        output_type = getattr(task, "OUTPUT_TYPE", None) or task.get_config("output_type")
        if output_type != "multiple_choice":
            raise UsageError(
                f"task {name} (of lm_eval:{spec}) has output_type {output_type!r}; layerfast "
                "scores multiple_choice tasks only (loglikelihood, loglikelihood_rolling and "
                "generate_until are not supported yet)"
            )
        if getattr(task, "MULTIMODAL", False):
            raise UsageError(f"task {name} (of lm_eval:{spec}) is multimodal; not supported")
    leaves, start = [], 0
    for name, task in tasks.items():
        leaf = _build_leaf(name, task, num_fewshot, limit, fewshot_seed, start)
        leaves.append(leaf)
        start += leaf.n_requests
    options = {
        "include_path": [str(p) for p in paths] or None,
        "num_fewshot": num_fewshot,
        "limit": limit,
        "fewshot_seed": fewshot_seed,
        "lm_eval": lm_eval.__version__,
    }
    return HarnessTask(spec, leaves, _root_group(loaded.get("groups") or {}), options)


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


def _build_leaf(name, task, num_fewshot, limit, fewshot_seed, start) -> _Leaf:
    """Configure ``task`` as simple_evaluate does, build its instances as evaluate does."""
    if num_fewshot is not None:
        if task.get_config("num_fewshot") != 0:  # the harness never overrides a set 0
            task.set_config(key="num_fewshot", value=num_fewshot)
    elif task.get_config("num_fewshot") is None:
        task.set_config(key="num_fewshot", value=0)
    task.set_fewshot_seed(seed=fewshot_seed)
    filters = getattr(task, "_filters", None)
    if not filters or len(filters) != 1:
        raise UsageError(
            f"task {name} has {len(filters or [])} filter pipelines; layerfast scores tasks "
            "with exactly one (the default 'none')"
        )
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    by_doc = defaultdict(list)
    for inst in task.instances:
        if inst.request_type != "loglikelihood":
            raise UsageError(
                f"task {name} asks for {inst.request_type!r} requests; only loglikelihood ones "
                "are supported"
            )
        by_doc[inst.doc_id].append(inst)
    docs = list(task.doc_iterator(rank=0, limit=limit, world_size=1))
    instances = [sorted(by_doc[doc_id], key=lambda i: i.idx) for doc_id, _ in docs]
    n_choices = np.array([len(task.doc_to_choice(doc)) for _, doc in docs], dtype=np.int64)
    return _Leaf(
        name=name,
        task=task,
        docs=docs,
        instances=instances,
        start=start,
        n_requests=sum(len(insts) for insts in instances),
        n_choices=n_choices,
        num_fewshot=int(task.get_config("num_fewshot") or 0),
        filter_key=filters[0].name,
    )


def _root_group(groups: dict) -> Any:
    """The group no other group contains (None for a task or a tag)."""
    children = {g.name for group in groups.values() for g in group.get_all_groups(recursive=False)}
    roots = [g for name, g in groups.items() if name not in children]
    return roots[0] if len(roots) == 1 else None
