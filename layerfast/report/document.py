"""A report as a document: a list of blocks, rendered twice, to ``report.md``
(:func:`render_markdown`) and to the self-contained ``report.html``
(:func:`layerfast.report.html.render_html`). Nothing parses Markdown back.

Blocks are frozen dataclasses: :class:`Heading`, :class:`Paragraph`, :class:`Bullets`,
:class:`Table`, :class:`Figure` and :class:`Code`. Their text is Markdown text as the report
writes it: plain words with inline ``code`` spans (backticks), which the HTML shows as ``<code>``.
In Markdown, blocks are separated by one empty line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..paths import write_text

FENCE = "```"
ALIGN_RULES = {"l": "---", "r": "---:", "c": ":-:"}  # a pipe table's rule cell per alignment


@dataclass(frozen=True)
class Heading:
    """``# text`` (``level`` 1 to 6)."""

    text: str
    level: int = 1


@dataclass(frozen=True)
class Paragraph:
    """A paragraph; lines of ``text`` are one paragraph (joined by spaces in HTML)."""

    text: str


@dataclass(frozen=True)
class Bullets:
    """A bullet list, one item (one line of text) per entry."""

    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """A table of ``len(columns)`` columns and one tuple of cells per row.

    A cell is a string (Markdown text, shown as is) or a number or bool, which the HTML page
    formats (floats 4 decimals, NaN ``n/a``, True ``yes``) and sorts by value. ``align``: one of
    "l", "r", "c" per column for the Markdown pipe table (default all "l"). ``plain``: the table
    as preformatted text; when set, ``report.md`` shows it as a fenced code block instead of a
    pipe table (the HTML page still shows the sortable table of ``rows``).
    """

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    align: tuple[str, ...] = ()
    plain: str | None = None

    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]], plain: str | None = None) -> Table:
        """A table of dicts (the first one's keys are the columns; a missing key is None)."""
        columns = tuple(records[0]) if records else ()
        rows = tuple(tuple(r.get(c) for c in columns) for r in records)
        return cls(columns, rows, plain=plain)


@dataclass(frozen=True)
class Figure:
    """``![alt](src)``: ``src`` a .png or .svg file name relative to the report's folder."""

    src: str
    alt: str


@dataclass(frozen=True)
class Code:
    """A fenced code block of preformatted ``text``."""

    text: str


Block = Heading | Paragraph | Bullets | Table | Figure | Code


@dataclass(frozen=True)
class Document:
    """The blocks of a report in order. ``blank_end``: ``report.md`` ends with an empty line
    (the multi report always has), else with the last block's line."""

    blocks: tuple[Block, ...]
    blank_end: bool = False

    @property
    def title(self) -> str | None:
        """The first heading's text (the HTML page's title), None without a heading."""
        return next((b.text for b in self.blocks if isinstance(b, Heading)), None)


def render_markdown(doc: Document) -> str:
    """``report.md``: the blocks, one empty line between two, ending in a newline."""
    text = markdown_blocks(doc.blocks) + "\n"
    return text + "\n" if doc.blank_end else text


def markdown_blocks(blocks: Iterable[Block]) -> str:
    """The Markdown of ``blocks``, one empty line between two, no newline at the end."""
    return "\n\n".join(_markdown(block) for block in blocks)


def write_markdown(path: Path, doc: Document) -> Path:
    """Write :func:`render_markdown` of ``doc`` to ``path`` as UTF-8; return ``path``."""
    return write_text(path, render_markdown(doc))


def _markdown(block: Block) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Paragraph):
        return block.text
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Figure):
        return f"![{block.alt}]({block.src})"
    if isinstance(block, Code):
        return f"{FENCE}\n{block.text}\n{FENCE}"
    if isinstance(block, Table):
        if block.plain is not None:
            return f"{FENCE}\n{block.plain}\n{FENCE}"
        align = block.align or ("l",) * len(block.columns)
        lines = [_pipe_row(block.columns), "|" + "|".join(ALIGN_RULES[a] for a in align) + "|"]
        return "\n".join(lines + [_pipe_row(row) for row in block.rows])
    raise TypeError(f"not a document block: {block!r}")


def _pipe_row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"
