"""Multiple-choice tasks: the :class:`Task` container and its JSONL file format.

JSONL, one item per line::

    {"context": "Q: What is the capital of Peru?\\nA:", "choices": ["Lima", "Quito"], "gold": 0}

Each choice is scored as the continuation ``delimiter + choice`` of ``context`` (the delimiter is
" " by default, as lm-evaluation-harness's ``target_delimiter``); ``acc_norm`` divides by the
choice's length in characters without the delimiter, as the harness does.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UsageError


class TaskFormatError(UsageError):
    """A task file is empty or one of its lines is malformed (the message names file and line)."""


@dataclass(frozen=True)
class Item:
    context: str
    choices: tuple[str, ...]
    gold: int
    id: str


@dataclass
class Task:
    """A list of multiple-choice items with the facts a sweep needs.

    chance: expected accuracy of a uniform random guess (mean of 1/len(choices)).
    """

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
        if limit is None or limit >= len(self.items):
            return self
        if limit <= 0:
            raise UsageError(f"limit must be positive, got {limit}")
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(self.items), size=limit, replace=False))
        return Task(
            self.name,
            [self.items[i] for i in keep],
            self.delimiter,
            self.source,
            {**self.notes, "limit": limit, "seed": seed},
        )

    def fingerprint(self) -> str:
        payload = json.dumps(
            [self.delimiter] + [[it.context, list(it.choices), it.gold] for it in self.items]
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_jsonl(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
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


def read_jsonl(path: str | Path, delimiter: str = " ") -> Task:
    """Parse and validate a JSONL task file; errors name the file and the line."""
    path = Path(path)
    items: list[Item] = []
    for lineno, line in enumerate(text_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskFormatError(f"{where}: not valid JSON ({e.msg})") from None
        items.append(_item_from_row(row, where, default_id=str(lineno)))
    if not items:
        raise TaskFormatError(f"{path}: the file holds no items")
    return Task(path.stem, items, delimiter, source=str(path))


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
    missing = [k for k in ("context", "choices", "gold") if k not in row]
    if missing:
        raise TaskFormatError(f"{where}: missing field(s) {', '.join(missing)}")
    unknown = set(row) - {"context", "choices", "gold", "id"}
    if unknown:
        raise TaskFormatError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))} "
            "(allowed: context, choices, gold, id)"
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
