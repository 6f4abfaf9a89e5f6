"""The report as a document rendered twice: report.md byte for byte as the Markdown writers
before the document model wrote it (``report_inputs``: their output on fixed inputs), and
report.html showing the same headings, figures and tables, every text escaped."""

from __future__ import annotations

import base64
import html
import re
from importlib import metadata

import pytest

from layerfast.report import tables
from layerfast.report.document import (
    Bullets,
    Code,
    Document,
    Figure,
    Heading,
    Paragraph,
    Table,
    render_markdown,
)
from layerfast.report.html import render_html
from layerfast.report.multi import multi_document
from layerfast.report.tables import pair_document, player_rows, provenance
from tests.report.report_inputs import (
    META,
    MODELS,
    MULTI_ONE_TASK,
    MULTI_TWO_TASKS,
    PAIR_WITH_BOOTSTRAP,
    PROVENANCE,
    SUMMARY_WITHOUT_BOOTSTRAP,
    TASKS,
    ablation_result,
    multi_inputs,
    shapley_result,
)
from tests.report.test_html import SVG, Tags, assert_self_contained


def pair_doc(boot: bool = True) -> Document:
    return pair_document(
        META, ablation_result(boot), shapley_result(boot), 12.0, provenance=PROVENANCE
    )


def multi_doc(tasks) -> Document:
    ablations, shapleys, folders = multi_inputs(tasks)
    return multi_document(MODELS, tasks, ablations, shapleys, folders, PROVENANCE, "acc")


def figures(folder, names):
    """Each figure as a PNG with an SVG twin (the report's figures)."""
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".png").write_bytes(b"\x89PNG\r\n\x1a\nraster")
        path.with_suffix(".svg").write_text(SVG)
    return folder


def cells(text: str, tag: str) -> list[str]:
    """The contents of every ``<tag ...>...</tag>`` of ``text`` (one line each)."""
    return re.findall(rf"<{tag}(?:\s[^>]*)?>(.*?)</{tag}>", text)


# --- report.md: the same bytes as before --------------------------------------------------------
def test_pair_report_markdown_is_the_old_text():
    assert render_markdown(pair_doc(boot=True)) == PAIR_WITH_BOOTSTRAP
    abl, res = ablation_result(boot=False), shapley_result(boot=False)
    assert tables.markdown_summary(META, abl, res, 12.0) == SUMMARY_WITHOUT_BOOTSTRAP
    plain = render_markdown(pair_document(META, abl, res, 12.0, provenance=PROVENANCE))
    head, gap, rest = SUMMARY_WITHOUT_BOOTSTRAP.partition("\n\n")
    assert plain == f"{head}{gap}- {PROVENANCE[0]}\n- {PROVENANCE[1]}\n{rest}"


@pytest.mark.parametrize("tasks,want", [(TASKS, MULTI_TWO_TASKS), (TASKS[:1], MULTI_ONE_TASK)])
def test_multi_report_markdown_is_the_old_text(tasks, want):
    assert render_markdown(multi_doc(tasks)) == want


def test_blocks_render_to_markdown():
    doc = Document(
        (
            Heading("t `x`", 2),
            Paragraph("one\ntwo"),
            Bullets(("a", "b")),
            Figure("f.png", "alt"),
            Code("x = 1"),
            Table(("a", "b"), (("1", 2.5),), align=("l", "c")),
            Table.from_records([{"a": 1}], plain="a\n-\n1"),
        )
    )
    want = "## t `x`\n\none\ntwo\n\n- a\n- b\n\n![alt](f.png)\n\n```\nx = 1\n```\n\n"
    want += "| a | b |\n|---|:-:|\n| 1 | 2.5 |\n\n```\na\n-\n1\n```\n"
    assert render_markdown(doc) == want
    assert render_markdown(Document(doc.blocks[:1], blank_end=True)) == "## t `x`\n\n"
    assert doc.title == "t `x`" and Document(()).title is None


# --- report.html: the same content, from the same document --------------------------------------
def test_pair_report_html_shows_the_same_content(tmp_path):
    doc = pair_doc(boot=True)
    text = render_html(doc, figures(tmp_path, ["ablation.png", "shapley.png"]))
    assert_self_contained(text)
    tags = Tags(text)
    assert tags.title == "layerfast report: m<1> on t & u"
    assert cells(text, "h1") == ["layerfast report: m&lt;1&gt; on t &amp; u"]
    bullets = cells(text, "li")
    assert len(bullets) == 10 and bullets[0] == (
        "made by <code>layerfast report --task &quot;a&lt;b&quot;</code>"
    )
    assert bullets[-1] == "wall time 12 s on 2 CPU threads; x86_64, 2 cores, 2024-01-02"
    imgs = tags.named("img")
    assert [a["alt"] for a in imgs] == ["ablation", "shapley"]
    svg_uri = "data:image/svg+xml;base64," + base64.b64encode(SVG.encode()).decode()
    assert all(a["src"] == svg_uri for a in imgs)  # the SVG twin, inline
    # the player table sortable (not the fenced text of report.md), then the significance table
    assert "<pre>" not in text and "player  v(N" not in text
    assert text.count('<table class="sortable">') == 2
    abl, res = ablation_result(), shapley_result()
    columns = list(player_rows(abl, res)[0])
    headers = cells(text, "th")
    assert headers[: len(columns)] == [html.escape(c) for c in columns]
    assert headers[len(columns) :] == [
        "player",
        "drop",
        "drop ≠ 0",
        "items for drop",
        "Shapley",
        "Shapley ≠ 0",
        "items for Shapley",
    ]
    assert '<td class="num" data-v="0.55">0.5500</td>' in text  # mlp0's drop, sortable by value
    assert "<td>yes</td>" in text and "<td>never (0)</td>" in text and "<td>budget</td>" in text
    assert "<code>budget</code> where the coalition sampling error" in text


def test_multi_report_html_shows_the_same_content(tmp_path):
    folder = figures(
        tmp_path, ["grid.svg", *(f"{m}/{t}/ablation.svg" for m in MODELS for t in TASKS)]
    )
    text = render_html(multi_doc(TASKS), folder)
    assert_self_contained(text)
    assert cells(text, "h2") == [
        "Shapley shares",
        "Per model and task",
        "Rank agreement between tasks",
        "Ablation per model and task",
    ]
    assert cells(text, "h3") == [f"{m} on {t}" for m in MODELS for t in TASKS]
    assert len(cells(text, "li")) == 2
    alts = [a["alt"] for a in Tags(text).named("img")]
    assert alts == ["Shapley shares per model and task"] + [
        f"ablation of {m} on {t}" for m in MODELS for t in TASKS
    ]
    assert text.count('<table class="sortable">') == 2
    assert "<tr><td>tiny-a</td><td>one</td><td>6</td><td>0.800</td><td>0.250</td>" in text
    assert "<tr><td>tiny-b</td><td>one</td><td></td><td>0.800</td>" in text
    assert "<td>[-0.726, 0.996]</td>" in text
    assert "<p>Full report: <code>tiny-b/two/report.md</code>.</p>" in text


def test_html_escapes_every_text(tmp_path):
    evil = "<script>alert(1)</script>"
    doc = Document(
        (
            Heading(f"h {evil}"),
            Paragraph(f"p {evil} `{evil}`"),
            Bullets((f"b {evil}",)),
            Figure("f.png", f'"{evil}'),
            Code(evil),
            Table((evil,), ((evil,), (1.5,))),
        )
    )
    text = render_html(doc, figures(tmp_path, ["f.png"]))
    assert "alert(1)</script>" not in text and text.count("<script>") == 1  # the sort script
    # title, heading, paragraph (twice), bullet, alt and caption, code, header and cell
    assert text.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 10
    assert "<code>&lt;script&gt;alert(1)&lt;/script&gt;</code>" in text


def test_provenance_names_the_command_and_versions():
    env = {"python": "3.11", "torch": "2.1", "transformers": "4.4", "device": "cpu"}
    made_by, versions = provenance({"command": "layerfast report --x", "environment": env}, "9.1")
    assert made_by == "made by `layerfast report --x`"
    assert versions.startswith("with layerfast 9.1, Python 3.11, torch 2.1, transformers 4.4, ")
    assert f"numpy {metadata.version('numpy')}" in versions and versions.endswith("; device cpu")
