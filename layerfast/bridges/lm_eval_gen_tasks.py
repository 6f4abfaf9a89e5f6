"""lm-evaluation-harness ``generate_until`` tasks as layerfast generative tasks
(``lf.tasks.load("lm_eval:<task>")`` of such a task gives a :class:`HarnessGenTask`, a
:class:`~layerfast.tasks.prompts.GenerativeTask`).

The harness builds the task as ``simple_evaluate`` does (:mod:`.lm_eval_load`: few-shot examples,
description, ``limit``); each instance ``(context, gen_kwargs)`` becomes one
:class:`~layerfast.tasks.prompts.Prompt` read as HFLM reads it (:mod:`.lm_eval_generate`: the
task's ``until`` plus the EOS text, its ``max_gen_toks`` or HFLM's 256, the context
left-truncated to ``max_length - max_gen_toks`` tokens; sampling options refused). A coalition's
texts are scored by the harness itself: they become the instances' responses
(``resps``, one per repeat), the task's filter ensembles run (``apply_filters``, e.g. gsm8k's
regex + take_first) and ``process_results`` gives each document's metrics, as ``evaluate``
does; a utility is the per-document value of one metric under one filter, and v their mean.

Utilities: each metric of the task's ``metric_list`` that gives a number per document and is
aggregated by the mean, under the task's first filter by its plain name (``exact_match``), and
under each further filter as ``<metric>,<filter>`` (gsm8k: ``exact_match,flexible-extract``),
the harness's own result key; ``<metric>,<first filter>`` is accepted for the plain name.
One task at a time: a group or tag of generative tasks is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import UsageError
from ..tasks.kinds import HARNESS_PREFIX as PREFIX
from ..tasks.prompts import Prompt
from ..tasks.requests import check_tokenizer
from .lm_eval_generate import DEFAULT_MAX_GEN_TOKS, eos_text, greedy_options, harness_prompt


class HarnessGenTask:
    """One ``generate_until`` harness task: ``len(task)`` documents, one prompt per instance.

    name: ``lm_eval:<spec>``. source: the include path(s), else ``lm_eval``. utilities: see the
    module docstring; default_utility: the first. notes: the loading options and the task's
    documents, few-shot count and filters.
    """

    generative = True

    def __init__(
        self,
        spec: str,
        name: str,
        task: Any,
        docs: list[tuple[int, Any]],
        instances: list[list[Any]],
        num_fewshot: int,
        options: dict,
    ):
        self.spec = spec
        self.name = PREFIX + spec
        self.task_name = name  # the harness's name of the task
        self.task = task  # lm_eval.api.task.Task, instances built
        self.docs = docs  # (doc_id, doc) in evaluate()'s order
        self.instances = instances  # per document, its Instances by idx
        self.num_fewshot = num_fewshot
        self.options = options
        self.source = ", ".join(options.get("include_path") or ["lm_eval"])
        self.filters = tuple(f.name for f in getattr(task, "_filters", None) or [])
        if not self.filters:
            raise UsageError(f"task {name} (of {self.name}) has no filter pipeline")
        for where, gen_kwargs in self._gen_kwargs():  # sampling refused at load, not at run
            greedy_options(gen_kwargs, DEFAULT_MAX_GEN_TOKS, where)
        self.metrics = _metrics(self)
        self.keys = {m: (m, self.filters[0]) for m in self.metrics}  # utility -> (metric, filter)
        for f in self.filters[1:]:
            self.keys.update({f"{m},{f}": (m, f) for m in self.metrics})
        self.utilities = tuple(self.keys)
        self.accuracy_utilities: tuple[str, ...] = ()  # no chance level for free text
        self.default_utility = self.utilities[0]
        self.notes = {
            "harness": spec,
            **options,
            "tasks": {
                name: {
                    "n_docs": len(docs),
                    "num_fewshot": num_fewshot,
                    "filters": list(self.filters),
                    "output_type": "generate_until",
                }
            },
            "group": None,
        }

    def __len__(self) -> int:
        return len(self.docs)

    def check_utility(self, name: str | None) -> str:
        name = self.default_utility if name is None else name
        alias = {f"{m},{self.filters[0]}": m for m in self.metrics}
        if name in alias:
            return alias[name]
        if name not in self.keys:
            raise UsageError(
                f"utility {name!r} is not a metric of task {self.name}; choose one of "
                f"{', '.join(self.utilities)} (the task's metrics whose per-document values the "
                "harness averages, as <metric>,<filter> under a filter other than the first)"
            )
        return name

    @property
    def arguments(self) -> list[tuple[str, dict]]:
        """Every (context, gen_kwargs) pair, in prompt order."""
        return [tuple(inst.args[:2]) for insts in self.instances for inst in insts]

    def fingerprint(self) -> str:
        """A hash of the harness configuration and every rendered request."""
        payload = json.dumps(
            {
                "spec": self.spec,
                "kind": "generate_until",
                "task": [self.task_name, self.num_fewshot, len(self.docs)],
                "filters": list(self.filters),
                "fewshot_seed": self.options.get("fewshot_seed"),
                "limit": self.options.get("limit"),
                "arguments": self.arguments,
            },
            default=str,
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def prompts(self, tokenizer: Any, max_length: int) -> list[Prompt]:
        """One :class:`Prompt` per harness instance, in (document, instance idx) order; ``unit``
        is the document's index."""
        check_tokenizer(tokenizer)
        eos = eos_text(tokenizer)
        where = f"task {self.task_name}"
        return [
            harness_prompt(tokenizer, inst.args[0], inst.args[1], unit, max_length, where, eos=eos)
            for unit, insts in enumerate(self.instances)
            for inst in insts
        ]

    def scorer(self, prompts: list[Prompt] | None = None) -> HarnessGenScorer:
        """The :class:`HarnessGenScorer` of ``prompts`` (one per harness instance)."""
        return HarnessGenScorer(self, prompts)

    def _gen_kwargs(self):
        for insts in self.instances:
            for inst in insts:
                yield f"task {self.task_name}", inst.args[1]

    def __repr__(self) -> str:
        return f"HarnessGenTask({self.name!r}, {len(self)} docs, utilities={self.utilities})"


class HarnessGenScorer:
    """Scores one generated text per prompt (prompt order) with the harness's filters and
    ``process_results``; ``per_item`` gives the per-document values (float64 [n_docs]) whose
    mean is v, ``__call__`` the harness's aggregate of them."""

    MEMO = 64  # coalitions' texts whose per-document metrics are kept

    def __init__(self, task: HarnessGenTask, prompts: list[Prompt] | None = None):
        n = sum(len(insts) for insts in task.instances)
        if prompts is not None and len(prompts) != n:
            raise ValueError(f"{len(prompts)} prompts for the {n} of task {task.name}")
        self.task = task
        self.utilities = task.utilities
        self.accuracy_utilities = task.accuracy_utilities
        self.default_utility = task.default_utility
        self._memo: OrderedDict[bytes, dict] = OrderedDict()

    def check(self, utility: str | None) -> str:
        return self.task.check_utility(utility)

    def chance(self, utility: str) -> float | None:
        return None

    def describe(self, utility: str) -> None:
        """None: the harness's metric names say what they are."""
        return None

    def per_item(self, texts: Sequence[str], utility: str) -> np.ndarray:
        """Per-document values of ``utility``, float64 [n_docs]; their mean is v."""
        key = self.task.keys[self.check(utility)]
        return np.asarray(self.scores(texts)[key], dtype=np.float64)

    def __call__(self, texts: Sequence[str], utility: str) -> float:
        key = self.task.keys[self.check(utility)]
        return float(self.task.task.aggregation()[key[0]](self.scores(texts)[key]))

    def scores(self, texts: Sequence[str]) -> dict[tuple[str, str], list]:
        """``{(metric, filter): per-document values}`` of one coalition's texts, every metric
        the task gives, as ``evaluate`` computes them."""
        texts = list(texts)
        flat = [inst for insts in self.task.instances for inst in insts]
        if len(texts) != len(flat) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"expected {len(flat)} generated strings, got {len(texts)} values")
        digest = hashlib.sha1()
        for t in texts:
            digest.update(t.encode("utf-8", "surrogatepass") + b"\x00\xff")
        memo_key = digest.digest()
        if memo_key in self._memo:
            self._memo.move_to_end(memo_key)
            return self._memo[memo_key]
        result = harness_scores(self.task, texts)
        self._memo[memo_key] = result
        if len(self._memo) > self.MEMO:
            self._memo.popitem(last=False)
        return result


def harness_scores(task: HarnessGenTask, texts: list[str]) -> dict[tuple[str, str], list]:
    """The harness's per-document metrics of ``texts`` (one per instance, in order): each text
    is the instance's response once per repeat, the filter ensembles run, then
    ``process_results`` per document under each filter."""
    flat = [inst for insts in task.instances for inst in insts]
    for inst, text in zip(flat, texts):
        inst.resps = [text] * int(inst.repeats or 1)
        inst.filtered_resps = {}
    task.task.apply_filters()
    out: dict[tuple[str, str], list] = {}
    for f in task.filters:
        for (_, doc), insts in zip(task.docs, task.instances):
            result = task.task.process_results(doc, [i.filtered_resps[f] for i in insts])
            for metric, value in result.items():
                out.setdefault((metric, f), []).append(value)
    return out


def _metrics(task: HarnessGenTask) -> tuple[str, ...]:
    """The task's metrics that give a number per document and are averaged, in metric_list
    order (probed on empty texts)."""
    from lm_eval.api.metrics import mean

    probe = harness_scores(task, [""] * sum(len(insts) for insts in task.instances))
    aggregation = task.task.aggregation()
    found = []
    for metric in aggregation:
        values = probe.get((metric, task.filters[0]), [])
        if (
            aggregation[metric] is mean
            and values
            and all(isinstance(v, (int, float, np.integer, np.floating)) for v in values)
        ):
            found.append(metric)
    if not found:
        every = sorted({m for m, _ in probe})
        raise UsageError(
            f"task {task.name} has no metric layerfast can use as a utility (its metrics: "
            f"{', '.join(every) or 'none'}); a utility must be a per-document number that the "
            "harness averages"
        )
    return tuple(found)
