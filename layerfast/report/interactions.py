"""The layer-interaction part of a report (``layerfast report --interactions``): the pairwise
interaction index as ``interactions.json`` / ``.csv``, a heatmap (``interactions.png`` and
``.svg``) and a report section with the most redundant and most synergistic pairs.

Sign convention (:mod:`layerfast.estimators.interaction_result`): a value < 0 is a redundant
pair (removing both hurts more than the two single removals together), > 0 a synergistic one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .document import Bullets, Figure, Heading, Paragraph, Table
from .files import with_svg, write_csv, write_json
from .plots import _tick_step, save_figure

__all__ = [
    "SECTION",
    "interaction_figure",
    "plot_interactions",
    "save_interactions",
    "interaction_blocks",
    "interaction_summary",
    "method_text",
]

SECTION = "Layer interactions"
METHOD_TEXT = {
    "exact": "exact pairwise Shapley interaction index (SII) over all {c} coalitions",
    "sampled": "sampled pairwise Shapley interaction index (SII), {c} coalitions",
    "removal": "removal interaction v(N) - v(N\\i) - v(N\\j) + v(N\\{{i,j}}) ({c} coalitions; "
    "not the SII: only coalitions next to the full model)",
}


def method_text(res: Any) -> str:
    """One line saying which index ``res`` holds and what it cost."""
    return METHOD_TEXT.get(res.method, res.method + " ({c} coalitions)").format(c=res.n_evaluations)


def interaction_figure(res: Any, title: str = ""):
    """Heatmap of ``res.values`` [n, n] (blue: redundant, red: synergistic; symmetric colour
    scale; grey: the diagonal and pairs not estimated); a Figure."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    n = res.n_players
    side = min(12.0, max(4.5, 0.22 * n + 3.0))
    fig = MplFigure(figsize=(side + 1.2, side), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    values = np.ma.masked_invalid(np.asarray(res.values, dtype=np.float64))
    scale = float(np.abs(values).max()) if values.count() else 1.0
    scale = scale if scale > 0 else 1.0
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.85")
    image = ax.imshow(values, cmap=cmap, vmin=-scale, vmax=scale, interpolation="nearest")
    step = _tick_step(n)
    ticks = list(range(0, n, step))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    fontsize = 7 if n <= 24 else 5
    ax.set_xticklabels([res.players[i] for i in ticks], rotation=90, fontsize=fontsize)
    ax.set_yticklabels([res.players[i] for i in ticks], fontsize=fontsize)
    bar = fig.colorbar(image, ax=ax, shrink=0.8)
    bar.set_label("interaction (< 0 redundant, > 0 synergistic)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.suptitle(title or f"pairwise interactions ({res.method})", fontsize=9)
    return fig


def plot_interactions(res: Any, path: str | Path, title: str = "") -> Path:
    """:func:`interaction_figure` saved to ``path`` (its suffix picks the format)."""
    return save_figure(interaction_figure(res, title), path)


def save_interactions(out: Path, res: Any, meta: dict) -> list[Path]:
    """``interactions.json`` (``meta`` and ``res.to_dict()``), ``interactions.csv`` (one row per
    pair, most redundant first) and ``interactions.png`` / ``.svg`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    title = f"{meta.get('model', '')} on {meta.get('task', '')}: {method_text(res)}"
    rows = res.rows() or [{"i": None, "j": None, "value": None, "stderr": None}]
    return [
        write_json(out / "interactions.json", {**meta, **res.to_dict()}),
        write_csv(out / "interactions.csv", rows),
        *with_svg(lambda path: plot_interactions(res, path, title), out / "interactions.png"),
    ]


def _top_rows(res: Any, k: int) -> list[tuple[str, str, str, str]]:
    rows = []
    for kind in ("redundant", "synergistic"):
        for i, j, value, se in res.top(k, kind):
            rows.append(
                (kind, f"{res.players[i]} x {res.players[j]}", f"{value:+.4g}", f"{se:.3g}")
            )
    return rows


def _error_text(res: Any) -> str:
    if res.stderr_items is not None and np.isfinite(res.stderr_items).any():
        kind = "coalition sampling and items" if res.method == "sampled" else "items"
        return (
            f"stderr: {kind} (item bootstrap, {res.info['item_bootstrap']['replicates']} resamples)"
        )
    if res.method == "sampled":
        return "stderr: coalition sampling only"
    return "stderr: 0 (no sampling; run with --item-bootstrap B for the error due to the items)"


def interaction_blocks(res: Any, k: int = 5, note: str = "") -> tuple:
    """The report section: heading, what was computed (``note``: e.g. why not the exact SII),
    the heatmap and the top ``k`` redundant and synergistic pairs with their stderr."""
    facts = [method_text(res), _error_text(res)]
    if note:
        facts.append(note)
    facts.append(
        "sign: < 0 redundant (removing both hurts more than the two single removals together), "
        "> 0 synergistic (the pair works only together)"
    )
    blocks: tuple = (
        Heading(SECTION, 2),
        Bullets(tuple(facts)),
        Figure("interactions.png", "interactions"),
    )
    rows = _top_rows(res, k)
    if not rows:
        return blocks + (Paragraph("No pair interacts (every value is 0)."),)
    intro = Paragraph(f"The {k} most redundant and the {k} most synergistic pairs:")
    table = Table(("kind", "pair", "interaction", "stderr"), tuple(rows), ("l", "l", "r", "r"))
    return blocks + (intro, table)


def interaction_summary(res: Any, k: int = 5, note: str = "") -> str:
    """What ``layerfast report --interactions`` prints: the method line and the top pairs."""
    lines = [f"\nlayer interactions: {method_text(res)}" + (f" ({note})" if note else "")]
    for kind in ("redundant", "synergistic"):
        top = res.top(k, kind)
        pairs = ", ".join(
            f"{res.players[i]} x {res.players[j]} {value:+.3g} ± {se:.2g}"
            for i, j, value, se in top
        )
        lines.append(f"top {kind} pairs: {pairs or 'none'}")
    return "\n".join(lines)
