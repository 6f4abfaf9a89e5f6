"""Multiple-choice tasks: the :class:`Task` container and its JSONL file format.

JSONL, one item per line::

    {"context": "Q: What is the capital of Peru?\\nA:", "choices": ["Lima", "Quito"], "gold": 0}

Each choice is scored as the continuation ``delimiter + choice`` of ``context`` (the delimiter is
" " by default, as lm-evaluation-harness's ``target_delimiter``); ``acc_norm`` divides by the
choice's length in characters without the delimiter, as the harness does.

An optional first line (the first that is not blank) sets the file's delimiter: a JSON object
without ``"context"`` whose only key is ``"delimiter"``, a string::

    {"delimiter": ""}
    {"context": "Q: What is the capital of Peru?\nA:", "choices": [" Lima", " Quito"], "gold": 0}

That is the form for lm-evaluation-harness-style data whose choices already start with a space
(the harness's ``doc_to_choice`` often keeps it), which the default would score after a doubled
space. Which delimiter applies: ``read_jsonl(path, delimiter=...)`` (``lf.tasks.load``,
``--target-delimiter``) when given, else the file's setting, else " ". An unknown key in the
settings line, a non-string value, or a settings line after the first item is a
:class:`TaskFormatError` naming file and line. When the delimiter is the default " " and every
choice of every item starts with whitespace, reading warns (:class:`~layerfast.errors.
LayerfastWarning`) and says how to fix it; a file that sets ``{"delimiter": " "}`` itself keeps
the doubled space without the warning.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError, warn
from .requests import (
    DEFAULT_MAX_LENGTH,
    EmptyContinuation,
    Request,
    check_tokenizer,
    encode_request,
)
from .scoring import DEFAULT_UTILITY, UTILITIES, Scorer, check_utility


class TaskFormatError(UsageError):
    """A task file is empty or one of its lines is malformed (the message names file and line)."""


DEFAULT_DELIMITER = " "  # lm-evaluation-harness's default target_delimiter
SETTINGS = ("delimiter",)  # the keys of a file's settings line
ITEM_FIELDS = ("context", "choices", "gold", "id")


@dataclass(frozen=True)
class Item:
    context: str
    choices: tuple[str, ...]
    gold: int
    id: str


@dataclass
class Task:
    """A list of multiple-choice items with the facts a sweep needs.

    chance: expected accuracy of a uniform random guess (mean of 1/len(choices)). utilities:
    ``acc``, ``acc_norm``, ``acc_bytes``, ``logprob``, ``margin`` (:mod:`.scoring`).
    """

    utilities = UTILITIES
    default_utility = DEFAULT_UTILITY

    name: str
    items: list[Item]
    delimiter: str = " "
    source: str = ""
    notes: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.items:
            raise TaskFormatError(f"task {self.name!r} has no items")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def chance(self) -> float:
        return float(np.mean([1.0 / len(it.choices) for it in self.items]))

    def subset(self, limit: int | None, seed: int = 0) -> Task:
        """``limit`` items drawn at random (reproducibly by ``seed``), kept in file order."""
        keep = subset_indices(len(self.items), limit, seed)
        if keep is None:
            return self
        return Task(
            self.name,
            [self.items[i] for i in keep],
            self.delimiter,
            self.source,
            {**self.notes, "limit": limit, "seed": seed},
        )

    def check_utility(self, name: str | None) -> str:
        return check_utility(self.default_utility if name is None else name)

    def requests(self, tokenizer: Any, max_length: int = DEFAULT_MAX_LENGTH) -> list[Request]:
        """Every (item, choice) request in item order (``group`` the item, ``unit`` the
        choice), scored as the continuation ``delimiter + choice`` and left-truncated to at
        most ``max_length`` input tokens."""
        check_tokenizer(tokenizer)
        requests = []
        for i, item in enumerate(self.items):
            for c, choice in enumerate(item.choices):
                try:
                    requests.append(
                        encode_request(
                            tokenizer, item.context, self.delimiter + choice, max_length, i, c
                        )
                    )
                except EmptyContinuation:
                    raise EmptyContinuation(
                        f"item {item.id!r} choice {c} ({choice!r}) encodes to no tokens "
                        "after its context"
                    ) from None
        return requests

    def scorer(self, requests: list[Request]) -> Scorer:
        """The :class:`~layerfast.tasks.scoring.Scorer` of this task's requests."""
        return Scorer(self, requests)

    def fingerprint(self) -> str:
        payload = json.dumps(
            [self.delimiter] + [[it.context, list(it.choices), it.gold] for it in self.items]
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_jsonl(self, path: str | Path) -> None:
        """Write the items, after a settings line when :func:`read_jsonl` would otherwise read
        the file back with another delimiter or warn about it."""
        with open(path, "w", encoding="utf-8") as f:
            if self.delimiter != DEFAULT_DELIMITER or _every_choice_starts_with_whitespace(
                self.items
            ):
                f.write(json.dumps({"delimiter": self.delimiter}) + "\n")
            for it in self.items:
                f.write(
                    json.dumps(
                        {
                            "context": it.context,
                            "choices": list(it.choices),
                            "gold": it.gold,
                            "id": it.id,
                        }
                    )
                    + "\n"
                )

    def __repr__(self) -> str:
        return f"Task({self.name!r}, {len(self.items)} items, chance={self.chance:.3f})"


def subset_indices(n: int, limit: int | None, seed: int = 0) -> np.ndarray | None:
    """The sorted indices of ``limit`` of ``n`` items drawn at random by ``seed`` (int
    [limit]); None when ``limit`` is None or keeps every item. Every task kind's ``subset``."""
    if limit is None or limit >= n:
        return None
    if limit <= 0:
        raise UsageError(f"limit must be positive, got {limit}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=limit, replace=False))


def read_jsonl(path: str | Path, delimiter: str | None = None) -> Task:
    """Parse and validate a JSONL task file; errors name the file and the line.

    delimiter: the string between context and each choice; None: the file's settings line's
    ``"delimiter"``, else " " (see the module docstring).
    """
    path = Path(path)
    items: list[Item] = []
    setting: str | None = None
    first = True  # the next non-blank line is the file's first
    for lineno, line, row in json_lines(path):
        where = f"{path}:{lineno}"
        if _is_settings(row):
            if not first:
                raise TaskFormatError(
                    f"{where}: the settings line {line.strip()[:80]} must be the file's first "
                    "line, before the items"
                )
            setting = _delimiter_setting(row, where)
        else:
            items.append(_item_from_row(row, where, default_id=str(lineno)))
        first = False
    if not items:
        raise TaskFormatError(f"{path}: the file holds no items")
    chosen = delimiter if delimiter is not None else setting
    if chosen is None and _every_choice_starts_with_whitespace(items):
        warn(
            f"{path}: every choice starts with whitespace and is scored after the default "
            "delimiter ' ', so each continuation begins with a doubled space; if the choices "
            'carry their own space, set the delimiter to "": --target-delimiter "", '
            '{"delimiter": ""} as the file\'s first line, or lf.tasks.load(path, delimiter="") '
            '(a first line {"delimiter": " "} keeps the doubled space without this warning)'
        )
    return Task(path.stem, items, DEFAULT_DELIMITER if chosen is None else chosen, source=str(path))


def _is_settings(row: object) -> bool:
    """A settings line: an object without ``"context"`` that names no other item field either
    (such a line is a malformed item, and its error says what is missing)."""
    return isinstance(row, dict) and not any(k in row for k in ITEM_FIELDS)


def _delimiter_setting(row: dict, where: str) -> str | None:
    unknown = set(row) - set(SETTINGS)
    if unknown:
        raise TaskFormatError(
            f"{where}: unknown setting(s) {', '.join(sorted(map(repr, unknown)))} in the "
            f"settings line (allowed: {', '.join(SETTINGS)}; an item needs 'context')"
        )
    value = row.get("delimiter")
    if "delimiter" in row and not isinstance(value, str):
        raise TaskFormatError(f"{where}: setting 'delimiter' must be a string, got {value!r}")
    return value


def _every_choice_starts_with_whitespace(items: list[Item]) -> bool:
    return all(c[:1].isspace() for it in items for c in it.choices)


def json_lines(path: Path) -> Iterator[tuple[int, str, object]]:
    """(line number, line, parsed value) of every non-blank line of a JSONL file; a line that
    is not JSON raises :class:`TaskFormatError` naming file and line."""
    for lineno, line in enumerate(text_lines(path), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, line, json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskFormatError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None


def text_lines(path: Path) -> Iterator[str]:
    """The lines of a UTF-8 text file (a leading byte-order mark is dropped), decoded one at a
    time so that a byte that is not UTF-8 raises :class:`TaskFormatError` naming file and line."""
    try:
        f = open(path, "rb")
    except IsADirectoryError:
        raise TaskFormatError(f"{path} is a folder, not a text file") from None
    except OSError as e:
        raise TaskFormatError(f"{path}: cannot be read ({e.strerror})") from None
    with f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise TaskFormatError(
                    f"{path}:{lineno}: not UTF-8 text (byte {raw[e.start]:#04x} at column "
                    f"{e.start + 1}); save the file as UTF-8"
                ) from None


def _item_from_row(row: object, where: str, default_id: str) -> Item:
    if not isinstance(row, dict):
        raise TaskFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "targets" in row and "choices" not in row:
        raise TaskFormatError(
            f"{where}: a generative item ('targets') in a multiple-choice file; "
            "lf.tasks.load reads a file of generative items"
        )
    missing = [k for k in ("context", "choices", "gold") if k not in row]
    if missing:
        raise TaskFormatError(f"{where}: missing field(s) {', '.join(missing)}")
    unknown = set(row) - set(ITEM_FIELDS)
    if unknown:
        hint = "; the delimiter is set once, in the file's first line" if "delimiter" in row else ""
        raise TaskFormatError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))} "
            f"(allowed: {', '.join(ITEM_FIELDS)}){hint}"
        )
    context, choices, gold = row["context"], row["choices"], row["gold"]
    if not isinstance(context, str):
        raise TaskFormatError(f"{where}: 'context' must be a string")
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(c, str) and c for c in choices)
    ):
        raise TaskFormatError(f"{where}: 'choices' must be a list of at least 2 non-empty strings")
    repeated = sorted({c for c in choices if choices.count(c) > 1})
    if repeated:
        raise TaskFormatError(
            f"{where}: 'choices' repeats {', '.join(map(repr, repeated))}: each choice must "
            "appear once"
        )
    if isinstance(gold, bool) or not isinstance(gold, int) or not 0 <= gold < len(choices):
        raise TaskFormatError(
            f"{where}: 'gold' must be an integer index in [0, {len(choices) - 1}], got {gold!r}"
        )
    return Item(context, tuple(choices), gold, str(row.get("id", default_id)))
