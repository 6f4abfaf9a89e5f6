"""The grid figure of a multi-model, multi-task report: per-sublayer Shapley shares, one panel
per (model, task), rows models and columns tasks.

Bars, not the seed paper's pies: a model has 2 x blocks players (60 for SmolLM2), and a pie of
60 slices shows neither the layer order nor small or negative values, while bars in execution
order keep the depth profile readable and make a negative share visible. Each panel's title
names its top 4 players with their shares. share_l = phi_l / sum_j |phi_j| (signed; the
absolute values sum to 1), so panels of models with different depths and utilities compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

TOP = 4


def shares(values: Sequence[float]) -> np.ndarray:
    """phi / sum |phi|, float64 [n]; zeros when every value is 0."""
    v = np.asarray(values, dtype=np.float64)
    total = np.abs(v).sum()
    return v / total if total > 0 else np.zeros_like(v)


def top_caption(players: Sequence[str], share: np.ndarray, k: int = TOP) -> str:
    """``"mlp11 .34, attn23 .31, ..."``: the ``k`` largest shares."""
    order = np.argsort(-share, kind="stable")[:k]
    return ", ".join(f"{players[i]} {share[i]:.2f}".replace("0.", ".") for i in order)


def grid_figure(
    models: Sequence[str],
    tasks: Sequence[str],
    results: dict[tuple[str, str], tuple[list[str], np.ndarray]],
):
    """The figure: ``results[(model, task)] = (players, Shapley values)``; a missing pair is an
    empty panel marked "not run"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    from .plots import ATTN_COLOR, MLP_COLOR

    fig, axes = plt.subplots(
        len(models),
        len(tasks),
        figsize=(4.2 * len(tasks), 2.6 * len(models) + 0.8),
        squeeze=False,
        sharey=True,
    )
    for r, model in enumerate(models):
        for c, task in enumerate(tasks):
            ax = axes[r][c]
            if (model, task) not in results:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
                ax.set_xticks([])
                continue
            players, values = results[(model, task)]
            share = shares(values)
            colors = [ATTN_COLOR if p.startswith("attn") else MLP_COLOR for p in players]
            blocks = np.arange(len(players)) / 2.0  # player l sits at block l // 2 (+0.5: mlp)
            ax.bar(blocks, share, width=0.45, color=colors)
            ax.axhline(0, color="black", lw=0.5)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(f"top: {top_caption(players, share)}", fontsize=8)
            if r == len(models) - 1:
                ax.set_xlabel("block")
            if r == 0:
                ax.annotate(
                    task,
                    (0.5, 1.22),
                    xycoords="axes fraction",
                    ha="center",
                    fontsize=10,
                    fontweight="bold",
                )
            if c == 0:
                ax.set_ylabel(f"{model}\nShapley share", fontsize=9)
    fig.legend(
        handles=[Patch(color=ATTN_COLOR, label="attention"), Patch(color=MLP_COLOR, label="MLP")],
        loc="upper right",
        ncol=2,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def save_grid(out: Path, models, tasks, results) -> list[Path]:
    """``grid.png`` and ``grid.svg`` in ``out``."""
    import matplotlib.pyplot as plt

    fig = grid_figure(models, tasks, results)
    paths = [out / "grid.png", out / "grid.svg"]
    fig.savefig(paths[0], dpi=130)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths
