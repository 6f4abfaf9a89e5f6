"""``report.html``: a report :class:`~layerfast.report.document.Document` as one self-contained
HTML page.

Figures are inline (``data:`` URIs of the SVG beside each PNG, else of the PNG itself), tables
sort by a click on a header (a few lines of inline JavaScript), and the page loads nothing from
a network: no external CSS, JavaScript or fonts. Every text of the document is HTML-escaped;
inline ``code`` spans (backticks) become ``<code>``.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..paths import write_text
from .document import Block, Bullets, Code, Document, Figure, Heading, Paragraph, Table

_CODE_SPAN = re.compile(r"`([^`]+)`")
_MIME = {".svg": "image/svg+xml", ".png": "image/png"}

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem;
       color: #111; line-height: 1.45; }
figure { margin: 1.5rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figure img.vector { width: 48rem; }
figcaption { font-size: 0.85rem; color: #555; }
pre { background: #f6f6f6; padding: 0.75rem; overflow-x: auto; font-size: 0.85rem; }
code { font-size: 0.9em; }
table.sortable { border-collapse: collapse; font-size: 0.9rem; margin: 1rem 0; }
table.sortable th, table.sortable td { border: 1px solid #ccc; padding: 0.2rem 0.6rem; }
table.sortable td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.sortable th { background: #eee; cursor: pointer; user-select: none; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; }
"""

# Click a header: sort the rows by that column (numbers as numbers, a cell's data-v if it has
# one), again to reverse. Array.prototype.sort is stable, so ties keep the previous order.
SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    var key = function (row) {
      var cell = row.cells[col];
      if (!cell) return "";
      return cell.hasAttribute("data-v") ? cell.getAttribute("data-v") : cell.textContent.trim();
    };
    var rows = Array.prototype.slice.call(body.rows);
    var numeric = rows.every(function (r) { var k = key(r); return k === "" || isFinite(k); });
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (numeric) {
        x = x === "" ? -Infinity : Number(x);
        y = y === "" ? -Infinity : Number(y);
        return dir * ((x > y) - (x < y));
      }
      return dir * x.localeCompare(y, undefined, {numeric: true});
    });
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def write_html(path: Path, doc: Document, folder: Path | None = None) -> Path:
    """Write :func:`render_html` of ``doc`` to ``path`` as UTF-8; return ``path``.

    ``folder`` holds the figures the document names (default: ``path``'s folder).
    """
    path = Path(path)
    text = render_html(doc, path.parent if folder is None else folder)
    return write_text(path, text)


def render_html(doc: Document, folder: Path) -> str:
    """The whole page for ``doc``; its title is the first heading's text.

    ``folder``: where the figures are; each :class:`Figure` becomes an ``<img>`` with a ``data:``
    URI of its file with the suffix ``.svg`` if that exists, else of the file itself. A
    :class:`Table` is a sortable table of its rows (never its plain-text form).
    Raises FileNotFoundError for a figure missing from ``folder`` and ValueError for a figure
    that is not a plain file name inside it (a URL, an absolute path, ``..``).
    """
    body = [_html(block, Path(folder)) for block in doc.blocks]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_escape(doc.title or 'layerfast report')}</title>",
            f"<style>{STYLE}</style>",
            "</head>",
            "<body>",
            *body,
            f"<script>{SORT_SCRIPT}</script>",
            "</body>",
            "</html>",
            "",
        ]
    )


def sortable_table(rows: Sequence[dict]) -> str:
    """A ``<table class="sortable">`` of ``rows`` (the first row's keys are the columns).

    Numbers are right-aligned and carry their full value in ``data-v`` for sorting; floats show
    4 decimals, NaN shows ``n/a`` (sorted first); booleans show ``yes`` or nothing; text is
    escaped, with inline ``code`` spans.
    """
    table = Table.from_records(rows)
    return _table(table.columns, table.rows)


def figure_uri(folder: Path, src: str) -> str:
    """A ``data:`` URI of the figure ``src`` in ``folder`` (its ``.svg`` twin when present)."""
    name = Path(src)
    if "://" in src or name.is_absolute() or ".." in name.parts or name.suffix not in _MIME:
        raise ValueError(f"figure {src!r}: expected a .png or .svg file name inside {folder}")
    path = folder / name
    if path.with_suffix(".svg").is_file():
        path = path.with_suffix(".svg")
    if not path.is_file():
        raise FileNotFoundError(f"figure {src!r} not found in {folder}")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:{_MIME[path.suffix]};base64,{data}"


def _html(block: Block, folder: Path) -> str:
    """One block's HTML (one or more lines)."""
    if isinstance(block, Heading):
        return f"<h{block.level}>{_inline(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{' '.join(_inline(t.strip()) for t in block.text.splitlines())}</p>"
    if isinstance(block, Bullets):
        return "\n".join(["<ul>", *(f"<li>{_inline(t)}</li>" for t in block.items), "</ul>"])
    if isinstance(block, Figure):
        alt = _escape(block.alt)
        uri = figure_uri(folder, block.src)
        kind = ' class="vector"' if uri.startswith("data:image/svg") else ""
        return f'<figure><img{kind} src="{uri}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'
    if isinstance(block, Code):
        return f"<pre><code>{_escape(block.text)}</code></pre>"
    if isinstance(block, Table):
        return _table(block.columns, block.rows)
    raise TypeError(f"not a document block: {block!r}")


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if not rows:
        return "<p><em>(empty table)</em></p>"
    head = "".join(f'<th scope="col">{_inline(c)}</th>' for c in columns)
    body = ["<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows]
    return "\n".join(
        ['<table class="sortable">', f"<thead><tr>{head}</tr></thead>", "<tbody>", *body]
        + ["</tbody>", "</table>"]
    )


def _cell(value: Any) -> str:
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()  # a numpy scalar
    if isinstance(value, bool):
        return f"<td>{'yes' if value else ''}</td>"
    if isinstance(value, int):
        return f'<td class="num" data-v="{value}">{value}</td>'
    if isinstance(value, float):
        if not math.isfinite(value):
            return '<td class="num" data-v="">n/a</td>'
        return f'<td class="num" data-v="{value!r}">{value:.4f}</td>'
    return f"<td>{_inline('' if value is None else str(value))}</td>"


def _inline(text: str) -> str:
    """Escaped ``text`` with ``code`` spans as ``<code>``."""
    parts = _CODE_SPAN.split(text)
    return "".join(
        f"<code>{_escape(p)}</code>" if k % 2 else _escape(p) for k, p in enumerate(parts)
    )


def _escape(text: str) -> str:
    return html.escape(text, quote=True)
