"""Stage 2 of models -> tasks -> evaluation -> estimators -> report: tasks, what a coalition is
scored on.

Every kind of task keeps one contract (:mod:`.contract`): ``task.requests(tokenizer,
max_length)`` gives the tokenised :class:`~.requests.Request` list, ``task.scorer(requests)`` the
scorer that turns a coalition's per-request log-likelihoods into utilities. The kinds
(:mod:`.kinds`): multiple-choice items (:mod:`.task`: JSONL files, the built-in tasks of
:mod:`.builtin`; scored by :mod:`.scoring`), plain text (:mod:`.text_task`) and
lm-evaluation-harness tasks (``lm_eval:``, the bridge :mod:`layerfast.bridges.lm_eval_tasks`).
:mod:`.texts` holds the calibration text of the statistics pass.

Generative tasks (:func:`is_generative`) are scored on the text the model generates, and keep
the parallel contract of :mod:`.prompts`: ``task.prompts(tokenizer, max_length)`` gives one
:class:`~.prompts.Prompt` per item, ``task.scorer(prompts)`` the scorer of one generated text per
prompt. :class:`GenTask` (:mod:`.gen_task`: JSONL files whose items have ``targets``, and the
built-in ``capitals-gen``, ``analogies-gen``, ``bigbench-gen:<task>`` of :mod:`.gen_builtin`) is
scored by :mod:`.gen_scoring` (``exact_match``, ``f1``).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .builtin import BUILTIN, bigbench
from .contract import Scorer, TaskKind
from .gen_builtin import GEN_BUILTIN, bigbench_gen
from .gen_task import GenItem, GenTask, is_generative_file, read_gen_jsonl
from .kinds import GENERATIVE_PREFIX, HARNESS_PREFIX, LM_EVAL, TEXT, TEXT_PREFIX, kind
from .prompts import Prompt, is_generative
from .requests import Request
from .task import Item, Task, TaskFormatError, read_jsonl
from .text_task import TextTask, load_text

# The kinds whose loader lives outside this folder: "module:function", imported on first use.
LOADERS = {LM_EVAL: "layerfast.bridges.lm_eval_load:load_harness"}

__all__ = [
    "load",
    "kind",
    "Task",
    "TextTask",
    "GenTask",
    "GenItem",
    "Prompt",
    "is_generative",
    "TaskKind",
    "Scorer",
    "Request",
    "text",
    "Item",
    "TaskFormatError",
    "read_jsonl",
    "read_gen_jsonl",
    "available",
    "BUILTIN",
    "GEN_BUILTIN",
]


def available() -> list[str]:
    return (
        sorted(BUILTIN)
        + sorted(GEN_BUILTIN)
        + [
            "bigbench:<task>",
            GENERATIVE_PREFIX + "<task>",
            HARNESS_PREFIX + "<task or group>",
            TEXT_PREFIX + "<lee|pydoc|file.txt|file.jsonl>",
        ]
    )


def text(name_or_path: str | Path, n: int | None = None) -> TextTask:
    """Plain text as a task scored token by token, utilities ``nll`` (v = -mean NLL per token,
    nats; higher is better) and ``ppl`` (v = -perplexity): ``"lee"``, ``"pydoc"``, a ``.txt``
    file (one document per line) or a ``.jsonl`` file (a ``"text"`` field per line); ``n``
    keeps the first ``n`` documents. See :mod:`layerfast.tasks.text_task`."""
    return load_text(name_or_path, n)


def load(
    name_or_path: str | Path | Task | GenTask,
    limit: int | None = None,
    seed: int = 0,
    delimiter: str | None = None,
    include_path: str | Path | None = None,
    num_fewshot: int | None = None,
) -> TaskKind | GenTask:
    """A task by built-in name ('capitals', 'analogies', 'bigbench:<task>'; generative:
    'capitals-gen', 'analogies-gen', 'bigbench-gen:<task>'), JSONL path (a file whose items
    have ``targets`` is a :class:`GenTask`), or
    lm-evaluation-harness task or group ('lm_eval:<name>',
    :mod:`layerfast.bridges.lm_eval_tasks`), or
    plain text ('text:lee', 'text:pydoc', 'text:<file>', :func:`text`; limit: the first
    ``limit`` documents).

    limit: keep this many items, drawn at random with ``seed`` (file order is kept); for an
    ``lm_eval:`` task the first ``limit`` documents of each task, as the harness's --limit.
    include_path, num_fewshot: for ``lm_eval:`` tasks only, as the harness's --include_path
    (a folder of task YAMLs) and --num_fewshot.
    delimiter: for a multiple-choice JSONL file, the string between context and each choice;
    it wins over the file's own ``{"delimiter": ...}`` line, which wins over " ". Tasks by name
    set their own, and generative files have none: giving one for them is a UsageError.
    """
    if delimiter is not None and sets_own_delimiter(name_or_path):
        what = (
            f"task {name_or_path!r}"
            if _is_spec(name_or_path)
            else f"a {type(name_or_path).__name__} object"
        )
        raise UsageError(
            f"delimiter {delimiter!r} applies to JSONL task files only; {what} sets its own "
            "delimiter"
        )
    spec_kind = kind(name_or_path) if _is_spec(name_or_path) else None
    if spec_kind == LM_EVAL:
        spec = str(name_or_path)[len(HARNESS_PREFIX) :]
        return loader(LM_EVAL)(spec, include_path, num_fewshot, limit)
    if include_path is not None or num_fewshot is not None:
        raise UsageError(
            f"include_path and num_fewshot (--include-path, --num-fewshot) apply to "
            f"{HARNESS_PREFIX}<name> tasks only, not to {name_or_path!r}"
        )
    if spec_kind == TEXT:
        return load_text(name_or_path, limit)
    if isinstance(name_or_path, TextTask):
        return name_or_path.subset(limit)
    if not _is_spec(name_or_path) and not isinstance(name_or_path, (Task, GenTask)):
        if limit is not None:  # another kind's object (an lm_eval: task): chosen when loaded
            raise UsageError(
                f"limit={limit}: a loaded {type(name_or_path).__name__} keeps the documents it "
                "was loaded with; give the limit when loading it"
            )
        return name_or_path
    if isinstance(name_or_path, (Task, GenTask)):
        task = name_or_path
    else:
        spec = str(name_or_path)
        path = Path(spec).expanduser()
        if path.is_file():
            task = _read_file(path, delimiter)
        elif path.is_dir():
            raise UsageError(f"task {spec} is a folder, not a JSONL file")
        elif spec in BUILTIN:
            task = BUILTIN[spec]()
        elif spec in GEN_BUILTIN:
            task = GEN_BUILTIN[spec]()
        elif spec.startswith(GENERATIVE_PREFIX):
            task = bigbench_gen(spec[len(GENERATIVE_PREFIX) :])
        elif spec.startswith("bigbench:"):
            task = bigbench(spec.split(":", 1)[1])
        elif spec.endswith((".jsonl", ".json")) or "/" in spec:
            raise FileNotFoundError(f"task file {spec} does not exist")
        else:
            raise UsageError(
                f"unknown task {spec!r}; built-in tasks: {', '.join(available())}, "
                "or give the path of a JSONL file"
            )
    return task.subset(limit, seed)


def sets_own_delimiter(name_or_path: str | Path | Any) -> bool:
    """True for the tasks a ``delimiter`` cannot be given to: a task object, a built-in name, a
    ``family:name`` spec (``bigbench:<task>``) that is not an existing file."""
    if not _is_spec(name_or_path):
        return True
    spec = str(name_or_path)
    if Path(spec).expanduser().exists():
        return False
    return spec in BUILTIN or spec in GEN_BUILTIN or re.match(r"[A-Za-z_][\w-]*:", spec) is not None


def _read_file(path: Path, delimiter: str | None) -> Task | GenTask:
    """A JSONL task file: generative when its first item has ``targets``
    (:func:`~.gen_task.is_generative_file`), multiple choice otherwise."""
    if not is_generative_file(path):
        return read_jsonl(path, delimiter)
    if delimiter is not None:
        raise UsageError(
            f"delimiter {delimiter!r} applies to multiple-choice JSONL files; {path} holds "
            "generative items ('targets'), which have none"
        )
    return read_gen_jsonl(path)


def _is_spec(name_or_path: Any) -> bool:
    """A name or path (not an already loaded task object)."""
    return isinstance(name_or_path, (str, os.PathLike))


def loader(name: str) -> Callable[..., Any]:
    """The loading function of task kind ``name`` from :data:`LOADERS`."""
    module, _, function = LOADERS[name].partition(":")
    return getattr(importlib.import_module(module), function)
