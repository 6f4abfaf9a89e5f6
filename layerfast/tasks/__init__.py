"""Tasks: JSONL multiple-choice files and real tasks built from data that pip packages ship."""

from __future__ import annotations

import re
from pathlib import Path

from ..bridges.lm_eval_tasks import PREFIX as HARNESS_PREFIX
from ..bridges.lm_eval_tasks import HarnessTask, load_harness
from ..errors import UsageError
from .builtin import BUILTIN, bigbench
from .task import Item, Task, TaskFormatError, read_jsonl
from .text_task import PREFIX as TEXT_PREFIX
from .text_task import TextTask, load_text

__all__ = [
    "load",
    "Task",
    "HarnessTask",
    "TextTask",
    "text",
    "Item",
    "TaskFormatError",
    "read_jsonl",
    "available",
    "BUILTIN",
]


def available() -> list[str]:
    return sorted(BUILTIN) + [
        "bigbench:<task>",
        HARNESS_PREFIX + "<task or group>",
        TEXT_PREFIX + "<lee|pydoc|file.txt|file.jsonl>",
    ]


def text(name_or_path: str | Path, n: int | None = None) -> TextTask:
    """Plain text as a task scored token by token, utilities ``nll`` (v = -mean NLL per token,
    nats; higher is better) and ``ppl`` (v = -perplexity): ``"lee"``, ``"pydoc"``, a ``.txt``
    file (one document per line) or a ``.jsonl`` file (a ``"text"`` field per line); ``n``
    keeps the first ``n`` documents. See :mod:`layerfast.tasks.text_task`."""
    return load_text(name_or_path, n)


def load(
    name_or_path: str | Path | Task,
    limit: int | None = None,
    seed: int = 0,
    delimiter: str | None = None,
    include_path: str | Path | None = None,
    num_fewshot: int | None = None,
) -> Task | HarnessTask | TextTask:
    """A task by built-in name ('capitals', 'analogies', 'bigbench:<task>'), JSONL path, or
    lm-evaluation-harness task or group ('lm_eval:<name>',
    :mod:`layerfast.bridges.lm_eval_tasks`), or
    plain text ('text:lee', 'text:pydoc', 'text:<file>', :func:`text`; limit: the first
    ``limit`` documents).

    limit: keep this many items, drawn at random with ``seed`` (file order is kept); for an
    ``lm_eval:`` task the first ``limit`` documents of each task, as the harness's --limit.
    include_path, num_fewshot: for ``lm_eval:`` tasks only, as the harness's --include_path
    (a folder of task YAMLs) and --num_fewshot.
    delimiter: for a JSONL file, the string between context and each choice; it wins over the
    file's own ``{"delimiter": ...}`` line, which wins over " ". Tasks by name set their own:
    giving one for them is a UsageError.
    """
    if delimiter is not None and sets_own_delimiter(name_or_path):
        what = "a Task object" if isinstance(name_or_path, Task) else f"task {name_or_path!r}"
        raise UsageError(
            f"delimiter {delimiter!r} applies to JSONL task files only; {what} sets its own "
            "delimiter"
        )
    if isinstance(name_or_path, str) and name_or_path.startswith(HARNESS_PREFIX):
        spec = name_or_path[len(HARNESS_PREFIX) :]
        return load_harness(spec, include_path, num_fewshot, limit)
    if isinstance(name_or_path, HarnessTask) and limit is None:
        return name_or_path  # its documents were chosen when it was loaded
    if include_path is not None or num_fewshot is not None:
        raise UsageError(
            f"include_path and num_fewshot (--include-path, --num-fewshot) apply to "
            f"{HARNESS_PREFIX}<name> tasks only, not to {name_or_path!r}"
        )
    if isinstance(name_or_path, str) and name_or_path.startswith(TEXT_PREFIX):
        return load_text(name_or_path, limit)
    if isinstance(name_or_path, TextTask):
        return name_or_path.subset(limit)
    if isinstance(name_or_path, Task):
        task = name_or_path
    else:
        spec = str(name_or_path)
        path = Path(spec).expanduser()
        if path.is_file():
            task = read_jsonl(path, delimiter)
        elif path.is_dir():
            raise UsageError(f"task {spec} is a folder, not a JSONL file")
        elif spec in BUILTIN:
            task = BUILTIN[spec]()
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


def sets_own_delimiter(name_or_path: str | Path | Task) -> bool:
    """True for the tasks a ``delimiter`` cannot be given to: a :class:`Task` object, a built-in
    name, a ``family:name`` spec (``bigbench:<task>``) that is not an existing file."""
    if isinstance(name_or_path, (Task, TextTask)):
        return True
    spec = str(name_or_path)
    if Path(spec).expanduser().exists():
        return False
    return spec in BUILTIN or re.match(r"[A-Za-z_]\w*:", spec) is not None
