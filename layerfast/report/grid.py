"""The grid figure of a multi-model, multi-task report: per-sublayer Shapley shares, one panel
per (model, task), rows models and columns tasks.

Bars, not the seed paper's pies: a model has 2 x blocks players (60 for SmolLM2), and a pie of
60 slices shows neither the layer order nor small or negative values, while bars on each
player's block (:func:`layerfast.report.plots.bar_layout`) keep the depth profile readable and
make a negative share visible. Each panel's title
names its top 4 players with their shares. share_l = phi_l / sum_j |phi_j| (signed; the
absolute values sum to 1), so panels of models with different depths and utilities compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..players import KINDS

TOP = 4
GRID_TICKS = 8  # at most about this many block labels under a panel


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
    results: dict[tuple[str, str], tuple[Sequence[str], np.ndarray]],
):
    """The figure: ``results[(model, task)] = (players, Shapley values float [n_players])``
    (players as names or :class:`~layerfast.players.Player`); a missing pair is an empty panel
    marked "not run". Each bar sits on its player's block (x in block units)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import bar_layout, kind_handles, player_ticks

    fig, axes = plt.subplots(
        len(models),
        len(tasks),
        figsize=(4.2 * len(tasks), 2.6 * len(models) + 0.8),
        squeeze=False,
        sharey=True,
    )
    kinds: set[str] = set()
    for r, model in enumerate(models):
        for c, task in enumerate(tasks):
            ax = axes[r][c]
            if (model, task) not in results:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
                ax.set_xticks([])
                continue
            players, values = results[(model, task)]
            share = shares(values)
            layout = bar_layout(players, max_ticks=GRID_TICKS)
            kinds.update(layout.kinds)
            ax.bar(layout.x, share, width=layout.width, color=layout.colors)
            ax.axhline(0, color="black", lw=0.5)
            player_ticks(ax, layout)
            ax.set_title(f"top: {top_caption(players, share)}", fontsize=8)
            if r != len(models) - 1:
                ax.set_xlabel("")
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
    handles = kind_handles(k for k in KINDS if k in kinds)
    if handles:
        fig.legend(handles=handles, loc="upper right", ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig


def save_grid(out: Path, models, tasks, results) -> list[Path]:
    """``grid.png`` and ``grid.svg`` in ``out``."""
    import matplotlib.pyplot as plt

    from .plots import save_figure

    fig = grid_figure(models, tasks, results)
    paths = [out / "grid.png", out / "grid.svg"]
    try:
        save_figure(fig, paths[0], dpi=130)
        save_figure(fig, paths[1])
    finally:
        plt.close(fig)
    return paths
