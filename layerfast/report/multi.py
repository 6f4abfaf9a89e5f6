"""``report.md`` of a multi-model, multi-task report: the grid, one row per (model, task) with its
full-model utility, chance and cornerstones with their statistical support, the ablation figures,
and the rank agreement of the Shapley values between tasks (Spearman's rho with a 95% interval).

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


def markdown(
    models: Sequence[str],
    tasks: Sequence[str],
    ablations: dict,
    shapley: dict,
    folders: dict,
    provenance: str,
    utility: str,
) -> str:
    """The combined ``report.md``; ``folders[(model, task)]`` is the pair's folder relative to
    the report."""
    lines = [
        f"# layerfast report: {len(models)} model(s) x {len(tasks)} task(s)",
        "",
        provenance,
        "",
        "## Shapley shares",
        "",
        "Per sublayer, phi / sum |phi| (proximity estimator, window 3); rows models, columns "
        "tasks; each panel's title names its top 4.",
        "",
        "![Shapley shares per model and task](grid.svg)",
        "",
        "## Per model and task",
        "",
        f"| model | task | items | full {utility} | chance | cornerstones (v without it, "
        "Holm-adjusted p of the drop) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for model in models:
        for task in tasks:
            abl = ablations.get((model, task))
            if abl is None:
                continue
            items = abl.info.get("n_items", "") if isinstance(abl.info, dict) else ""
            lines.append(
                f"| {model} | {task} | {items} | {abl.full:.3f} | {chance_text(abl.chance)} | "
                f"{cornerstone_support(abl)} |"
            )
    lines += ["", "## Rank agreement between tasks", ""]
    agreement = rank_agreement(models, tasks, shapley)
    if agreement:
        lines += [
            "Spearman's rho of the Shapley values over the players, with a 95% interval (Fisher "
            "z, standard error sqrt(1.06 / (n - 3))).",
            "",
            "| model | task A | task B | rho | 95% interval | p | players |",
            "|---|---|---|---:|---|---:|---:|",
        ]
        for r in agreement:
            lines.append(
                f"| {r['model']} | {r['task_a']} | {r['task_b']} | {_fmt(r['rho'])} | "
                f"[{_fmt(r['lo'])}, {_fmt(r['hi'])}] | {_fmt(r['p'], '.1e')} | {r['n']} |"
            )
    else:
        lines.append("One task per model: nothing to compare.")
    lines += ["", "## Ablation per model and task", ""]
    for model in models:
        for task in tasks:
            if (model, task) in ablations:
                folder = folders[(model, task)]
                lines += [
                    f"### {model} on {task}",
                    "",
                    f"![ablation of {model} on {task}]({folder}/ablation.svg)",
                    "",
                    f"Full report: `{folder}/report.md`.",
                    "",
                ]
    return "\n".join(lines) + "\n"
