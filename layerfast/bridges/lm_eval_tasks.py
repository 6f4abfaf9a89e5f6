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

This module holds ``multiple_choice`` tasks; ``generate_until`` tasks are generative tasks of
:mod:`.lm_eval_gen_tasks`; other output types (``loglikelihood``, ``loglikelihood_rolling``)
raise a :class:`~layerfast.errors.UsageError` naming the task and its type. ``limit`` takes the
*first* N documents of each task, as the harness's ``--limit`` does (not a random subset as for
layerfast's own tasks), so numbers line up.

lm_eval is imported only when a harness task is loaded.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError
from ..tasks.kinds import HARNESS_PREFIX as PREFIX
from ..tasks.requests import EmptyContinuation, Request, check_tokenizer, encode_request

DEFAULT_FEWSHOT_SEED = 1234  # lm_eval.defaults.DEFAULT_OTHER_SEED: simple_evaluate's default
ACCURACY_METRICS = ("acc", "acc_norm", "acc_bytes", "acc_mutual_info")  # 0/1 per document
GREEDY_METRICS = ("exact_match",)  # read is_greedy, which layerfast does not compute
LIST_TASKS_HINT = (
    "list the names with `lm-eval ls tasks` (older versions: `lm_eval --tasks list`) or "
    "`python -c 'from lm_eval.tasks import TaskManager; print(TaskManager().all_tasks)'`; "
    "a task of your own is a YAML file in a folder given as --include-path DIR (include_path=)"
)


@dataclass
class Leaf:
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
        leaves: list[Leaf],
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

    def check_utility(self, name: str | None) -> str:
        name = self.default_utility if name is None else name
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

    def requests(self, tokenizer: Any, max_length: int) -> list[Request]:
        """One Request per harness instance, in (task, document, instance idx) order; requests
        of one document with the same context string share a packing ``group``; ``unit`` is the
        instance's index within its document."""
        check_tokenizer(tokenizer)
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
                    except EmptyContinuation as e:
                        raise UsageError(
                            f"task {leaf.name} document {doc_id} request {inst.idx}: {e}"
                        ) from None
        return out

    def scorer(self, requests: list[Request]) -> HarnessScorer:
        """The :class:`HarnessScorer` of ``requests`` (one per harness instance)."""
        return HarnessScorer(self, requests)

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

    def __init__(self, task: HarnessTask, requests: list[Request] | None = None):
        n_requests = sum(leaf.n_requests for leaf in task.leaves)
        if requests is not None and len(requests) != n_requests:
            raise ValueError(f"{len(requests)} requests for the {n_requests} of task {task.name}")
        self.task = task
        self.utilities = task.utilities
        self.accuracy_utilities = task.accuracy_utilities
        self.default_utility = task.default_utility
        self._memo: OrderedDict[bytes, tuple[dict, dict]] = OrderedDict()

    def check(self, utility: str | None) -> str:
        return self.task.check_utility(utility)

    def describe(self, utility: str) -> None:
        """None: the harness's metric names say what they are."""
        return None

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


def _process(leaf: Leaf, ll: np.ndarray, metrics: tuple[str, ...]) -> dict[str, list]:
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


def _utilities(spec: str, leaves: list[Leaf], group: Any) -> tuple[str, ...]:
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
