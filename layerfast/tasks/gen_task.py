"""Generative tasks: the :class:`GenTask` container and its JSONL file format.

A generative item is a context and the answers that count as right; the model greedily
generates after the context (at most ``max_new_tokens`` tokens, cut before the first stop string
of ``until``) and the text is scored against the targets (:mod:`.gen_scoring`: ``exact_match``,
``f1``). The contract is :class:`~.prompts.GenerativeTask`.

JSONL, one item per line::

    {"context": "Q: What is the capital of Peru?\\nA:", "targets": ["Lima"], "id": "peru"}

``id`` is optional (default: the line number). An optional first line (the first that is not
blank) sets how the file's items are generated, as lm-evaluation-harness's
``generation_kwargs``: a JSON object without item fields whose keys are among ``"until"`` (a
list of stop strings, or one string; default ``["\\n"]``) and ``"max_gen_toks"`` (a whole number
>= 1; default 16)::

    {"until": ["\\n", "."], "max_gen_toks": 8}

Errors name file and line (:class:`~.task.TaskFormatError`): a missing context, targets that
are not a non-empty list of strings, a ``max_gen_toks`` that is not a whole number >= 1, a line
mixing ``choices`` and ``targets``. :func:`layerfast.tasks.load` reads a JSONL file as a
generative task when its first item line has ``targets`` (:func:`is_generative_file`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .gen_scoring import DEFAULT_UTILITY, UTILITIES, GenScorer, check_utility
from .prompts import Prompt, check_generation, encode_prompt
from .requests import DEFAULT_MAX_LENGTH, check_tokenizer
from .task import TaskFormatError, json_lines, subset_indices

DEFAULT_UNTIL = ("\n",)
DEFAULT_MAX_NEW_TOKENS = 16
SETTINGS = ("until", "max_gen_toks")  # the keys of a file's settings line
ITEM_FIELDS = ("context", "targets", "id")
CHOICE_FIELDS = ("choices", "gold")  # a multiple-choice item's own fields


@dataclass(frozen=True)
class GenItem:
    """One generative item: the context, the answers that count as right (>= 1), an id."""

    context: str
    targets: tuple[str, ...]
    id: str


@dataclass
class GenTask:
    """A list of generative items with how to generate their answers.

    until: stop strings (the generated text is cut before the first); max_new_tokens: at most
    this many generated tokens per item. utilities: ``exact_match``, ``f1``
    (:mod:`.gen_scoring`).
    """

    generative = True
    utilities = UTILITIES
    default_utility = DEFAULT_UTILITY

    name: str
    items: list[GenItem]
    source: str = ""
    notes: dict = field(default_factory=dict)
    until: tuple[str, ...] = DEFAULT_UNTIL
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS

    def __post_init__(self):
        if not self.items:
            raise TaskFormatError(f"task {self.name!r} has no items")
        for item in self.items:
            targets = item.targets
            if isinstance(targets, str) or not isinstance(targets, (tuple, list)):
                raise TaskFormatError(
                    f"task {self.name!r} item {item.id!r}: targets must be a tuple of strings, "
                    f"got {_short(targets)}"
                )
            if not targets:
                raise TaskFormatError(
                    f"task {self.name!r} item {item.id!r} has no targets: give at least one "
                    "answer that counts as right"
                )
            if not all(isinstance(t, str) for t in targets):
                raise TaskFormatError(
                    f"task {self.name!r} item {item.id!r}: targets must be strings, "
                    f"got {_short(list(targets))}"
                )
        self.until, self.max_new_tokens = check_generation(
            self.until, self.max_new_tokens, f"task {self.name!r}"
        )

    def __len__(self) -> int:
        return len(self.items)

    def subset(self, limit: int | None, seed: int = 0) -> GenTask:
        """``limit`` items drawn at random (reproducibly by ``seed``), kept in file order: the
        rule of :meth:`Task.subset <layerfast.tasks.task.Task.subset>`."""
        keep = subset_indices(len(self.items), limit, seed)
        if keep is None:
            return self
        return GenTask(
            self.name,
            [self.items[i] for i in keep],
            self.source,
            {**self.notes, "limit": limit, "seed": seed},
            self.until,
            self.max_new_tokens,
        )

    def check_utility(self, name: str | None) -> str:
        """``name`` (None: ``exact_match``) if it is a generative utility; UsageError listing
        them otherwise."""
        return check_utility(self.default_utility if name is None else name)

    def fingerprint(self) -> str:
        """A short hash of the items' contexts and targets, ``until`` and ``max_new_tokens``."""
        payload = json.dumps(
            [list(self.until), self.max_new_tokens]
            + [[it.context, list(it.targets)] for it in self.items]
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def prompts(self, tokenizer: Any, max_length: int = DEFAULT_MAX_LENGTH) -> list[Prompt]:
        """One :class:`~.prompts.Prompt` per item, in item order (``unit`` the item's index):
        the context encoded as the harness encodes a ``generate_until`` context and
        left-truncated to ``max_length - max_new_tokens`` tokens (:func:`~.prompts.
        encode_prompt`)."""
        check_tokenizer(tokenizer)
        return [
            encode_prompt(tokenizer, it.context, i, self.until, self.max_new_tokens, max_length)
            for i, it in enumerate(self.items)
        ]

    def scorer(self, prompts: list[Prompt] | None = None) -> GenScorer:
        """The :class:`~.gen_scoring.GenScorer` of this task's prompts."""
        return GenScorer(self, prompts)

    def to_jsonl(self, path: str | Path) -> None:
        """Write the settings line, then the items: :func:`read_gen_jsonl` reads it back."""
        with open(path, "w", encoding="utf-8") as f:
            settings = {"until": list(self.until), "max_gen_toks": self.max_new_tokens}
            f.write(json.dumps(settings) + "\n")
            for it in self.items:
                row = {"context": it.context, "targets": list(it.targets), "id": it.id}
                f.write(json.dumps(row) + "\n")

    def __repr__(self) -> str:
        return (
            f"GenTask({self.name!r}, {len(self.items)} items, until={list(self.until)!r}, "
            f"max_new_tokens={self.max_new_tokens})"
        )


def read_gen_jsonl(path: str | Path) -> GenTask:
    """Parse and validate a generative JSONL task file (see the module docstring); errors name
    the file and the line."""
    path = Path(path)
    items: list[GenItem] = []
    settings: dict[str, Any] = {}
    first = True  # the next non-blank line is the file's first
    for lineno, line, row in json_lines(path):
        where = f"{path}:{lineno}"
        if _is_settings(row):
            if not first:
                raise TaskFormatError(
                    f"{where}: the settings line {line.strip()[:80]} must be the file's first "
                    "line, before the items"
                )
            settings = _settings(row, where)
        else:
            items.append(_item_from_row(row, where, default_id=str(lineno)))
        first = False
    if not items:
        raise TaskFormatError(f"{path}: the file holds no items")
    return GenTask(
        path.stem,
        items,
        source=str(path),
        until=settings.get("until", DEFAULT_UNTIL),
        max_new_tokens=settings.get("max_gen_toks", DEFAULT_MAX_NEW_TOKENS),
    )


def is_generative_file(path: str | Path) -> bool:
    """True when the first item line of JSONL file ``path`` has ``targets`` (or its settings
    line sets ``until``/``max_gen_toks``): :func:`read_gen_jsonl` reads it, and says so when a
    line also has ``choices``. False for a multiple-choice file (:func:`~.task.read_jsonl`)."""
    for _, _, row in json_lines(Path(path)):
        if not isinstance(row, dict):
            return False
        if _is_settings(row):
            if any(k in row for k in SETTINGS):
                return True
            continue
        return "targets" in row
    return False


def _is_settings(row: object) -> bool:
    """A settings line: an object that names no item field (of either kind)."""
    return isinstance(row, dict) and not any(k in row for k in ITEM_FIELDS + CHOICE_FIELDS)


def _settings(row: dict, where: str) -> dict[str, Any]:
    unknown = set(row) - set(SETTINGS)
    if unknown:
        raise TaskFormatError(
            f"{where}: unknown setting(s) {', '.join(sorted(map(repr, unknown)))} in the "
            f"settings line (allowed: {', '.join(SETTINGS)}; an item needs 'context')"
        )
    try:
        until, max_new = check_generation(
            row.get("until", DEFAULT_UNTIL), row.get("max_gen_toks", DEFAULT_MAX_NEW_TOKENS), where
        )
    except UsageError as e:
        raise TaskFormatError(str(e)) from None
    return {"until": until, "max_gen_toks": max_new}


def _item_from_row(row: object, where: str, default_id: str) -> GenItem:
    if not isinstance(row, dict):
        raise TaskFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "targets" in row and any(k in row for k in CHOICE_FIELDS):
        raise TaskFormatError(
            f"{where}: the line mixes 'targets' (a generative item) with "
            f"{' and '.join(repr(k) for k in CHOICE_FIELDS if k in row)} (a multiple-choice "
            "item); give one or the other"
        )
    if "choices" in row:
        raise TaskFormatError(
            f"{where}: a multiple-choice item ('choices') in a file of generative items "
            "('targets'); every item of a file must be of one kind"
        )
    missing = [k for k in ("context", "targets") if k not in row]
    if missing:
        raise TaskFormatError(f"{where}: missing field(s) {', '.join(missing)}")
    unknown = set(row) - set(ITEM_FIELDS)
    if unknown:
        hint = (
            "; until and max_gen_toks are set once, in the file's first line"
            if unknown & set(SETTINGS)
            else ""
        )
        raise TaskFormatError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))} "
            f"(allowed: {', '.join(ITEM_FIELDS)}){hint}"
        )
    context, targets = row["context"], row["targets"]
    if not isinstance(context, str):
        raise TaskFormatError(f"{where}: 'context' must be a string, got {_short(context)}")
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise TaskFormatError(
            f"{where}: 'targets' must be a non-empty list of strings, got {_short(targets)}"
        )
    return GenItem(context, tuple(targets), str(row.get("id", default_id)))


def _short(value: Any, width: int = 60) -> str:
    """``repr(value)``, cut to ``width`` characters, on one line."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
