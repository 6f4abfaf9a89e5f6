"""The combined report of a multi-model, multi-task run, as a document: the grid, one row per
(model, task) with its full-model utility, chance and cornerstones with their statistical
support, the ablation figures, and the rank agreement of the Shapley values between tasks
(Spearman's rho with a 95% interval).

Interval: Fisher's z = atanh(rho) with the standard error sqrt(1.06 / (n - 3)) of Fieller,
Hartley & Pearson (1957) for Spearman's rho, n the number of players; back-transformed with tanh.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations
from typing import Any

import numpy as np

from ..estimators.ablation import NOT_ENOUGH_ITEMS
from .document import Bullets, Document, Figure, Heading, Paragraph, Table
from .tables import chance_text

Z95 = 1.959963984540054


def spearman_interval(rho: float, n: int) -> tuple[float, float]:
    """95% interval of Spearman's rho over ``n`` pairs (NaN when n <= 3 or rho is NaN)."""
    if n <= 3 or not math.isfinite(rho):
        return float("nan"), float("nan")
    z, se = math.atanh(max(min(rho, 1 - 1e-12), -1 + 1e-12)), math.sqrt(1.06 / (n - 3))
    return math.tanh(z - Z95 * se), math.tanh(z + Z95 * se)


def rank_agreement(models: Sequence[str], tasks: Sequence[str], shapley: dict) -> list[dict]:
    """Per model and pair of tasks: rho, its interval and p (``shapley[(model, task)]`` is a
    ShapleyResult)."""
    from ..estimators.ranks import spearman

    rows = []
    for model in models:
        for a, b in combinations(tasks, 2):
            if (model, a) not in shapley or (model, b) not in shapley:
                continue
            va, vb = shapley[(model, a)].values, shapley[(model, b)].values
            rho, p = spearman(va, vb)
            lo, hi = spearman_interval(rho, len(va))
            rows.append(
                {
                    "model": model,
                    "task_a": a,
                    "task_b": b,
                    "rho": rho,
                    "lo": lo,
                    "hi": hi,
                    "p": p,
                    "n": len(va),
                }
            )
    return rows


def cornerstone_support(abl: Any) -> str:
    """``"attn0 (v 0.21, p_drop 1e-05), ..."``: each cornerstone with v(N without it) and its
    Holm-adjusted McNemar p-value; or why there are none."""
    if not abl.cornerstones:
        return abl.cornerstone_note if abl.status == NOT_ENOUGH_ITEMS else "none"
    out = []
    for name in abl.cornerstones:
        i = abl.players.index(name)
        p = "" if abl.p_drop is None else f", p_drop {abl.p_drop[i]:.1e}"
        out.append(f"{name} (v {abl.values[i]:.3f}{p})")
    return ", ".join(out)


def _fmt(x: float, spec: str = ".3f") -> str:
    return "n/a" if x is None or not np.isfinite(x) else format(x, spec)


def multi_document(
    models: Sequence[str],
    tasks: Sequence[str],
    ablations: dict,
    shapley: dict,
    folders: dict,
    provenance: Sequence[str],
    utility: str,
) -> Document:
    """The combined report's document (``report.md``, ``report.html`` in OUT).

    models, tasks: the labels, in the order of rows and columns.
    ablations, shapley: AblationResult and ShapleyResult per ``(model, task)`` (a pair missing
        from ``ablations`` has no row).
    folders: each pair's folder relative to the report (``"tiny-a/one.jsonl"``).
    provenance: the header's bullet items (:func:`layerfast.report.tables.provenance`).
    utility: the utility's name, for the full-model column.
    """
    blocks = [
        Heading(f"layerfast report: {len(models)} model(s) x {len(tasks)} task(s)"),
        Bullets(tuple(provenance)),
        Heading("Shapley shares", 2),
        Paragraph(
            "Per sublayer, phi / sum |phi| (proximity estimator, window 3); rows models, columns "
            "tasks; each panel's title names its top 4."
        ),
        Figure("grid.svg", "Shapley shares per model and task"),
        Heading("Per model and task", 2),
        Table(
            ("model", "task", "items", f"full {utility}", "chance")
            + ("cornerstones (v without it, Holm-adjusted p of the drop)",),
            tuple(_pair_row(m, t, ablations[(m, t)]) for m, t in _pairs(models, tasks, ablations)),
            align=("l", "l", "r", "r", "r", "l"),
        ),
        Heading("Rank agreement between tasks", 2),
    ]
    agreement = rank_agreement(models, tasks, shapley)
    if agreement:
        blocks += [
            Paragraph(
                "Spearman's rho of the Shapley values over the players, with a 95% interval "
                "(Fisher z, standard error sqrt(1.06 / (n - 3)))."
            ),
            Table(
                ("model", "task A", "task B", "rho", "95% interval", "p", "players"),
                tuple(_agreement_row(r) for r in agreement),
                align=("l", "l", "l", "r", "l", "r", "r"),
            ),
        ]
    else:
        blocks.append(Paragraph("One task per model: nothing to compare."))
    blocks.append(Heading("Ablation per model and task", 2))
    for model, task in _pairs(models, tasks, ablations):
        folder = folders[(model, task)]
        blocks += [
            Heading(f"{model} on {task}", 3),
            Figure(f"{folder}/ablation.svg", f"ablation of {model} on {task}"),
            Paragraph(f"Full report: `{folder}/report.md`."),
        ]
    return Document(tuple(blocks), blank_end=True)


def _pairs(models: Sequence[str], tasks: Sequence[str], ablations: dict) -> list[tuple[str, str]]:
    """The (model, task) pairs that ran, models outer and tasks inner."""
    return [(m, t) for m in models for t in tasks if (m, t) in ablations]


def _pair_row(model: str, task: str, abl: Any) -> tuple[str, ...]:
    items = abl.info.get("n_items", "") if isinstance(abl.info, dict) else ""
    return (
        model,
        task,
        str(items),
        f"{abl.full:.3f}",
        chance_text(abl.chance),
        cornerstone_support(abl),
    )


def _agreement_row(r: dict) -> tuple[str, ...]:
    interval = f"[{_fmt(r['lo'])}, {_fmt(r['hi'])}]"
    p = _fmt(r["p"], ".1e")
    return (r["model"], r["task_a"], r["task_b"], _fmt(r["rho"]), interval, p, str(r["n"]))
