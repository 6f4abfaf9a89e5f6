"""``report.html``: a report's Markdown as one self-contained HTML page.

Figures are inline (``data:`` URIs of the SVG beside each PNG, else of the PNG itself), tables
sort by a click on a header (a few lines of inline JavaScript), and the page loads nothing from
a network: no external CSS, JavaScript or fonts. Every text taken from the Markdown or the
tables is HTML-escaped.

The Markdown read is the subset the report writers produce: ``#`` headings, ``-`` bullets,
paragraphs, ``![alt](file.png)`` figure lines, fenced code blocks, pipe tables and inline
``code``.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_FENCE = "```"
_IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)$")
_HEADING = re.compile(r"^(?P<level>#{1,6})\s+(?P<text>.*)$")
_BULLET = re.compile(r"^[-*]\s+(?P<text>.*)$")
_RULE_CELL = re.compile(r"^:?-{1,}:?$")
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


def write_html(
    path: Path,
    markdown: str,
    folder: Path | None = None,
    tables: Mapping[str, Sequence[dict]] | None = None,
) -> Path:
    """Write :func:`render_html` of ``markdown`` to ``path`` as UTF-8; return ``path``.

    ``folder`` holds the figures the Markdown names (default: ``path``'s folder).
    """
    path = Path(path)
    text = render_html(markdown, path.parent if folder is None else folder, tables)
    path.write_text(text, encoding="utf-8")
    return path


def render_html(
    markdown: str, folder: Path, tables: Mapping[str, Sequence[dict]] | None = None
) -> str:
    """The whole page for ``markdown`` (see the module docstring for the subset read).

    ``folder``: where the figures named by ``![alt](file)`` lines are; each becomes an ``<img>``
    with a ``data:`` URI of ``file`` with the suffix ``.svg`` if that exists, else of ``file``.
    ``tables``: a fenced code block whose text equals a key is shown as a sortable table of that
    key's rows (dicts; the first row's keys are the columns) instead of as preformatted text.
    Raises FileNotFoundError for a figure missing from ``folder`` and ValueError for a figure
    that is not a plain file name inside it (a URL, an absolute path, ``..``).
    """
    body, title = _blocks(markdown.splitlines(), Path(folder), tables or {})
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_escape(title or 'layerfast report')}</title>",
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
    4 decimals, NaN shows ``n/a`` (sorted first); booleans show ``yes`` or nothing.
    """
    if not rows:
        return "<p><em>(empty table)</em></p>"
    columns = list(rows[0])
    head = "".join(f'<th scope="col">{_escape(c)}</th>' for c in columns)
    body = ["<tr>" + "".join(_cell(row.get(c)) for c in columns) + "</tr>" for row in rows]
    return "\n".join(
        ['<table class="sortable">', f"<thead><tr>{head}</tr></thead>", "<tbody>", *body]
        + ["</tbody>", "</table>"]
    )


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


def _blocks(lines: list[str], folder: Path, tables: Mapping[str, Sequence[dict]]):
    """HTML lines for the Markdown ``lines`` and the text of the first heading."""
    out: list[str] = []
    title = None
    paragraph: list[str] = []
    i = 0

    def flush():
        if paragraph:
            out.append(f"<p>{' '.join(_inline(t) for t in paragraph)}</p>")
            paragraph.clear()

    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith(_FENCE):
            flush()
            end = i + 1
            while end < len(lines) and not lines[end].startswith(_FENCE):
                end += 1
            code = "\n".join(lines[i + 1 : end])
            if code in tables:
                out.append(sortable_table(tables[code]))
            else:
                out.append(f"<pre><code>{_escape(code)}</code></pre>")
            i = end + 1
            continue
        if (m := _HEADING.match(line)) is not None:
            flush()
            level = len(m["level"])
            title = title or m["text"]
            out.append(f"<h{level}>{_inline(m['text'])}</h{level}>")
        elif (m := _IMAGE.match(line.strip())) is not None:
            flush()
            alt = _escape(m["alt"])
            uri = figure_uri(folder, m["src"])
            kind = ' class="vector"' if uri.startswith("data:image/svg") else ""
            img = f'<img{kind} src="{uri}" alt="{alt}">'
            out.append(f"<figure>{img}<figcaption>{alt}</figcaption></figure>")
        elif _BULLET.match(line):
            flush()
            items = []
            while i < len(lines) and (b := _BULLET.match(lines[i].rstrip())) is not None:
                items.append(f"<li>{_inline(b['text'])}</li>")
                i += 1
            out.extend(["<ul>", *items, "</ul>"])
            continue
        elif line.startswith("|") and i + 1 < len(lines) and _is_rule(lines[i + 1]):
            flush()
            columns = _pipe_cells(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                cells = _pipe_cells(lines[i])
                rows.append(dict(zip(columns, cells + [""] * (len(columns) - len(cells)))))
                i += 1
            out.append(_markdown_table(columns, rows))
            continue
        elif not line.strip():
            flush()
        else:
            paragraph.append(line.strip())
        i += 1
    flush()
    return out, title


def _markdown_table(columns: list[str], rows: list[dict]) -> str:
    """A sortable table of a Markdown pipe table's cells (text, with inline ``code``)."""
    head = "".join(f'<th scope="col">{_inline(c)}</th>' for c in columns)
    body = ["<tr>" + "".join(f"<td>{_inline(r[c])}</td>" for c in columns) + "</tr>" for r in rows]
    return "\n".join(
        ['<table class="sortable">', f"<thead><tr>{head}</tr></thead>", "<tbody>", *body]
        + ["</tbody>", "</table>"]
    )


def _pipe_cells(line: str) -> list[str]:
    text = line.strip()
    text = text[1:] if text.startswith("|") else text
    text = text[:-1] if text.endswith("|") else text
    return [c.strip() for c in text.split("|")]


def _is_rule(line: str) -> bool:
    cells = _pipe_cells(line)
    return line.strip().startswith("|") and all(_RULE_CELL.match(c) for c in cells)


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
    return f"<td>{_escape('' if value is None else str(value))}</td>"


def _inline(text: str) -> str:
    """Escaped ``text`` with ``code`` spans as ``<code>``."""
    parts = _CODE_SPAN.split(text)
    return "".join(
        f"<code>{_escape(p)}</code>" if k % 2 else _escape(p) for k, p in enumerate(parts)
    )


def _escape(text: str) -> str:
    return html.escape(text, quote=True)
