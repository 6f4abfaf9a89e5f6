"""Tasks: JSONL multiple-choice files and real tasks built from data that pip packages ship."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from .builtin import BUILTIN, bigbench
from .task import Item, Task, TaskFormatError, read_jsonl

__all__ = ["load", "Task", "Item", "TaskFormatError", "read_jsonl", "available", "BUILTIN"]


def available() -> list[str]:
    return sorted(BUILTIN) + ["bigbench:<task>"]


def load(name_or_path: str | Path | Task, limit: int | None = None, seed: int = 0) -> Task:
    """A task by built-in name ('capitals', 'analogies', 'bigbench:<task>') or JSONL path.

    limit: keep this many items, drawn at random with ``seed`` (file order is kept).
    """
    if isinstance(name_or_path, Task):
        task = name_or_path
    else:
        spec = str(name_or_path)
        path = Path(spec).expanduser()
        if path.is_file():
            task = read_jsonl(path)
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
