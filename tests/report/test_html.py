"""report.html: one self-contained page (figures inline, sortable tables, nothing from a network),
checked as text and, where a Chromium binary exists, rendered in headless Chromium."""

from __future__ import annotations

import base64
import html.parser
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from layerfast import cli
from layerfast.report.document import Bullets, Code, Document, Figure, Heading, Paragraph, Table
from layerfast.report.html import render_html, sortable_table, write_html
from tests.cli.test_cli import save_tiny_model, sweep, write_task_file

CHROMIUMS = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM = next((p for p in map(shutil.which, CHROMIUMS) if p), None)
NO_CHROMIUM = (
    f"no Chromium binary on PATH (looked for {', '.join(CHROMIUMS)}); on Debian/Ubuntu "
    "`apt-get install -y chromium` makes this rendering check run"
)
SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="40pt" height="20pt" viewBox="0 0 40 20">'
    '<rect width="40" height="20" fill="red"/></svg>'
)


class Tags(html.parser.HTMLParser):
    """Every start tag of a page with its attributes, and the text inside <title>."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.title = ""
        self._in_title = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data

    def named(self, tag: str) -> list[dict]:
        return [a for t, a in self.tags if t == tag]


def assert_self_contained(text: str) -> None:
    """No reference that a browser would fetch: every src/href is a data: URI or a fragment."""
    tags = Tags(text)
    assert re.search(r"https?://", text) is None
    assert "url(" not in text and "@import" not in text
    for tag, attrs in tags.tags:
        for name in ("src", "href"):
            if name in attrs:
                assert attrs[name].startswith(("data:", "#")), (tag, attrs[name][:80])
    assert not tags.named("link") and all("src" not in a for a in tags.named("script"))


# --- the page from a document -----------------------------------------------------------------
def test_document_escaped_and_figures_inline(tmp_path):
    (tmp_path / "fig.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "fig.svg").write_text(SVG)
    (tmp_path / "only.png").write_bytes(b"\x89PNG\r\n\x1a\nraster")
    doc = Document(
        (
            Heading("report: <b>m</b> & `t`"),
            Bullets(('made by `layerfast report --task "a<b"`', "a & b")),
            Figure("fig.png", 'shares "x" <y>'),
            Figure("only.png", "raster"),
            Code("</pre><script>alert(1)</script>"),
            Table(("name", "score"), (("<i>a</i>", "0.5"), ("b", "10")), align=("l", "r")),
            Paragraph("text <one>\ncontinued"),
        )
    )
    text = render_html(doc, tmp_path)
    assert_self_contained(text)
    tags = Tags(text)
    assert tags.title == "report: <b>m</b> & `t`"  # the heading as text, never as markup
    assert "<b>m</b>" not in text and "<i>a</i>" not in text and "alert(1)</script>" not in text
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<code>layerfast report --task &quot;a&lt;b&quot;</code>" in text
    assert "<p>text &lt;one&gt; continued</p>" in text
    imgs = tags.named("img")
    assert [a["alt"] for a in imgs] == ['shares "x" <y>', "raster"]
    svg_uri = "data:image/svg+xml;base64," + base64.b64encode(SVG.encode()).decode()
    assert imgs[0]["src"] == svg_uri  # the SVG twin wins over the PNG
    assert base64.b64decode(imgs[1]["src"].split(",", 1)[1]) == (tmp_path / "only.png").read_bytes()
    assert text.count('<table class="sortable">') == 1 and '<th scope="col">score</th>' in text
    assert "<script>" in text and "aria-sort" in text  # the sort script, inline


def test_table_with_a_plain_text_form_is_a_sortable_table(tmp_path):
    block = "player  value\n------\nattn0   0.5"
    rows = [
        {"player": "attn0", "value": np.float64(0.5), "n": np.int64(3), "top": np.bool_(True)},
        {"player": "mlp0", "value": float("nan"), "n": 12, "top": False},
    ]
    doc = Document((Heading("r"), Table.from_records(rows, plain=block), Code("other")))
    text = render_html(doc, tmp_path)
    assert "player  value" not in text and "<pre><code>other</code></pre>" in text
    assert '<td class="num" data-v="0.5">0.5000</td>' in text
    assert '<td class="num" data-v="">n/a</td>' in text and '<td class="num" data-v="12">' in text
    assert "<td>yes</td>" in text
    assert sortable_table([]) == "<p><em>(empty table)</em></p>"


@pytest.mark.parametrize("src", ["https://example.org/a.png", "/etc/a.png", "../a.png", "a.gif"])
def test_figure_outside_the_folder_is_refused(tmp_path, src):
    with pytest.raises(ValueError, match="expected a .png or .svg file name"):
        render_html(Document((Figure(src, "x"),)), tmp_path)


def test_missing_figure_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.png"):
        render_html(Document((Figure("gone.png", "x"),)), tmp_path)


def test_write_html_is_utf8(tmp_path):
    path = write_html(tmp_path / "r.html", Document((Heading("± s.e. – ü"),)))
    assert "<h1>± s.e. – ü</h1>" in path.read_bytes().decode("utf-8")


# --- report.html of a real `layerfast report` run ---------------------------------------------
@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, model_factory, tiny_tokenizer_fixture):
    root = tmp_path_factory.mktemp("html")
    model = save_tiny_model(root / "tiny-llama", model_factory, tiny_tokenizer_fixture)
    task = write_task_file(root / "tiny6.jsonl")
    out = root / "report"
    assert cli.main([str(a) for a in sweep("report", model, task, out)]) == 0
    return out


def test_report_header_names_command_and_versions(report_dir):
    md = (report_dir / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# layerfast report: tiny-llama on tiny6\n\n- made by `layerfast report ")
    import torch
    import transformers

    import layerfast

    versions = md.split("\n")[3]
    for name, version in [
        ("layerfast", layerfast.__version__),
        ("torch", torch.__version__),
        ("transformers", transformers.__version__),
        ("numpy", np.__version__),
    ]:
        assert f"{name} {version}" in versions
    for stem in ("ablation", "shapley"):
        assert (report_dir / f"{stem}.svg").read_text().lstrip().startswith("<?xml")


def test_report_html_embeds_every_figure_and_sorts(report_dir):
    text = (report_dir / "report.html").read_bytes().decode("utf-8")  # strict UTF-8
    assert_self_contained(text)
    md = (report_dir / "report.md").read_text(encoding="utf-8")
    figures = re.findall(r"^!\[[^\]]*\]\(([^)]+)\)$", md, flags=re.M)
    assert figures == ["ablation.png", "shapley.png"]
    imgs = Tags(text).named("img")
    assert len(imgs) == len(figures)
    for name, img in zip(figures, imgs, strict=True):
        head, data = img["src"].split(",", 1)
        assert head == "data:image/svg+xml;base64"
        assert base64.b64decode(data) == (report_dir / name).with_suffix(".svg").read_bytes()
    assert "made by <code>layerfast report --model " in text
    assert '<table class="sortable">' in text and '<th scope="col">± s.e.</th>' in text
    assert all(f"<td>{p}</td>" in text for p in ("attn0", "mlp0", "attn2", "mlp2"))
    assert 'th.addEventListener("click"' in text


# --- rendered in headless Chromium --------------------------------------------------------------
PROBE = """<script>
window.addEventListener("load", function () {
  var sizes = Array.prototype.map.call(document.images, function (im) {
    return [im.complete, im.naturalWidth, im.naturalHeight, im.getBoundingClientRect().width,
            im.getBoundingClientRect().height];
  });
  var table = document.querySelector("table.sortable");
  var header = Array.prototype.filter.call(table.tHead.rows[0].cells,
                                           function (th) { return th.textContent === "drop"; })[0];
  var order = function () {
    return Array.prototype.map.call(table.tBodies[0].rows,
                                    function (r) { return r.cells[0].textContent; });
  };
  header.click();
  var up = order();
  header.click();
  document.title = JSON.stringify({sizes: sizes, up: up, down: order()});
});
</script>"""


def chromium(*args: str, cwd: Path) -> str:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # as root in CI containers
        "--disable-gpu",
        f"--user-data-dir={cwd / 'profile'}",
        "--virtual-time-budget=10000",
        *args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_report_html_renders_in_chromium(report_dir, tmp_path):
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "\n</body>"), encoding="utf-8")
    dom = chromium("--dump-dom", probed.as_uri(), cwd=tmp_path)
    found = json.loads(Tags(dom).title)
    assert len(found["sizes"]) == 2
    for complete, natural_w, natural_h, w, h in found["sizes"]:
        assert complete and natural_w > 100 and natural_h > 100 and w > 100 and h > 100
    abl = json.loads((report_dir / "ablation.json").read_text())
    drop = {p: -np.inf if d is None else d for p, d in zip(abl["players"], abl["drops"])}
    assert found["up"] == sorted(abl["players"], key=drop.get)  # both sorts are stable
    assert found["down"] == sorted(found["up"], key=lambda p: -drop[p])

    shot = tmp_path / "shot.png"
    chromium("--screenshot=" + str(shot), "--window-size=1100,1600", probed.as_uri(), cwd=tmp_path)
    import matplotlib.image

    rgb = (matplotlib.image.imread(shot)[..., :3] * 255).astype(int)
    red = (abs(rgb - (214, 39, 40)).sum(-1) < 30).sum()  # tab:red, the attention bars
    blue = (abs(rgb - (31, 119, 180)).sum(-1) < 30).sum()  # tab:blue, the MLP bars
    assert red > 200 and blue > 200, (red, blue)
