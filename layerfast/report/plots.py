"""The seed paper's figures (matplotlib, no pyplot state): attention red, MLP blue.

Each ``*_figure`` function returns a :class:`matplotlib.figure.Figure` (for tests and for
callers that compose figures); each ``plot_*`` function draws the same figure and saves it to a
file whose suffix picks the format (``.png``, ``.svg``, ``.pdf``). Per-block axes carry integer
block ticks only, and legends sit above the axes, where they cannot hide a bar.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

ATTN_COLOR, MLP_COLOR = "tab:red", "tab:blue"
MAX_TICKS = 40  # at most this many x tick labels; beyond it every k-th one


def _figure(n: int):
    """A constrained-layout figure with an Agg canvas and one axes, sized for ``n`` bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 0.16 * n + 2), 3.8), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig, path: str | Path) -> Path:
    fig.savefig(path)
    return Path(path)


def _colors(players: Sequence[str]) -> list[str]:
    return [ATTN_COLOR if p.startswith("attn") else MLP_COLOR for p in players]


def _legend(ax, extra=()) -> None:
    """The attention / MLP key (and ``extra`` handles) in one row above the axes."""
    from matplotlib.patches import Patch

    handles = [
        Patch(color=ATTN_COLOR, label="attention"),
        Patch(color=MLP_COLOR, label="MLP"),
        *extra,
    ]
    ax.legend(
        handles=handles,
        fontsize=7,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        ncol=len(handles),
        frameon=False,
        borderaxespad=0.2,
    )


def _title(fig, title: str) -> None:
    fig.suptitle(title, fontsize=9)


def _tick_step(n: int) -> int:
    return max(1, -(-n // MAX_TICKS))


def _ticks(ax, players) -> None:
    """Block numbers (integers) under each attention-MLP pair when the players are the standard
    ``attn0, mlp0, attn1, ...``; else the player names."""
    blocks = len(players) // 2
    if players == [f"{k}{i}" for i in range(blocks) for k in ("attn", "mlp")]:
        step = _tick_step(blocks)
        ax.set_xticks([2 * i + 0.5 for i in range(0, blocks, step)])
        ax.set_xticklabels([str(i) for i in range(0, blocks, step)], fontsize=7)
        ax.set_xlabel("block (each: attention, then MLP)", fontsize=8)
    else:
        step = _tick_step(len(players))
        ax.set_xticks(range(0, len(players), step))
        ax.set_xticklabels(players[::step], rotation=90, fontsize=6)


def _block_ticks(ax, n_blocks: int) -> None:
    """Integer block ticks 0, k, 2k, ... under one bar per block."""
    step = _tick_step(n_blocks)
    ax.set_xticks(range(0, n_blocks, step))
    ax.set_xticklabels([str(i) for i in range(0, n_blocks, step)], fontsize=7)
    ax.set_xlim(-0.6, n_blocks - 0.4)
    ax.set_xlabel("block", fontsize=8)


def ablation_figure(
    players: Sequence[str],
    values: np.ndarray,
    full: float,
    chance: float | None,
    title: str = "",
    utility: str = "",
):
    """Utility with each player removed (float [n_players]), with the full-model and chance
    lines; a Figure."""
    fig, ax = _figure(len(players))
    ax.bar(range(len(players)), values, color=_colors(players))
    extra = [ax.axhline(full, color="black", lw=1, ls="-", label=f"full model {full:.3f}")]
    if chance is not None:
        extra.append(ax.axhline(chance, color="gray", lw=1, ls="--", label=f"chance {chance:.3f}"))
    _ticks(ax, list(players))
    ax.set_ylabel(f"{utility} without player" if utility else "utility without player")
    _title(fig, title or "single-sublayer ablation")
    _legend(ax, extra)
    return fig


def plot_ablation(
    players: Sequence[str],
    values: np.ndarray,
    full: float,
    chance: float | None,
    path: str | Path,
    title: str = "",
    utility: str = "",
) -> Path:
    """:func:`ablation_figure` saved to ``path``."""
    return _save(ablation_figure(players, values, full, chance, title, utility), path)


def shapley_figure(
    players: Sequence[str],
    values: np.ndarray,
    stderr: np.ndarray | None,
    title: str = "",
):
    """Each player's share of the summed Shapley values (%), with 1-s.e. error bars; a
    Figure."""
    fig, ax = _figure(len(players))
    total = float(np.sum(values))
    scale = 100.0 / total if total != 0 else 1.0
    err = None
    if stderr is not None and not np.all(np.isnan(stderr)):
        err = np.abs(np.nan_to_num(stderr) * scale)
    ax.bar(
        range(len(players)),
        values * scale,
        color=_colors(players),
        yerr=err,
        error_kw={"elinewidth": 0.6, "capsize": 1},
    )
    ax.axhline(0, color="black", lw=0.6)
    _ticks(ax, list(players))
    ax.set_ylabel("share of total (%)" if total != 0 else "Shapley value")
    _title(fig, title or "layer Shapley values")
    _legend(ax)
    return fig


def plot_shapley(
    players: Sequence[str],
    values: np.ndarray,
    stderr: np.ndarray | None,
    path: str | Path,
    title: str = "",
) -> Path:
    """:func:`shapley_figure` saved to ``path``."""
    return _save(shapley_figure(players, values, stderr, title), path)


def blocks_figure(
    values: np.ndarray,
    ylabel: str,
    title: str = "",
    highlight: Sequence[int] = (),
    interval: tuple | None = None,
):
    """One bar per block (float [n_blocks]; highlighted blocks in grey, e.g. the pruned ones);
    ``interval`` (lo, hi) arrays draw error bars (e.g. bootstrap intervals); a Figure."""
    fig, ax = _figure(len(values))
    marked = set(highlight)
    colors = ["lightgray" if i in marked else "tab:green" for i in range(len(values))]
    v = np.nan_to_num(np.asarray(values, dtype=float))
    yerr = None
    if interval is not None:
        lo, hi = (np.nan_to_num(np.asarray(x, dtype=float), nan=0.0) for x in interval)
        yerr = np.stack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])
    ax.bar(range(len(values)), v, color=colors, yerr=yerr, ecolor="black", capsize=2)
    ax.axhline(0, color="black", linewidth=0.5)
    _block_ticks(ax, len(values))
    ax.set_ylabel(ylabel)
    _title(fig, title)
    return fig


def plot_blocks(
    values: np.ndarray,
    path: str | Path,
    ylabel: str,
    title: str = "",
    highlight: Sequence[int] = (),
    interval: tuple | None = None,
) -> Path:
    """:func:`blocks_figure` saved to ``path``."""
    return _save(blocks_figure(values, ylabel, title, highlight, interval), path)


def plot_convergence(
    records: list[dict],
    path: str | Path,
    players: Iterable | None = None,
    level_z: float = 1.0,
    title: str | None = None,
) -> str:
    """Plot estimates with +/- ``level_z`` * stderr error bars against the budget, to a PNG.

    ``records``: as returned by :func:`layerfast.estimators.convergence.convergence`.
    ``players``: names or indices of the players to draw (default: all, up to 12).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    if not records:
        raise ValueError("no records to plot")
    names = list(records[0].get("players") or [f"p{i}" for i in range(len(records[0]["values"]))])
    if players is None:
        idx = list(range(min(12, len(names))))
    else:
        idx = [names.index(p) if isinstance(p, str) else int(p) for p in players]
    x = np.array([r["n_evaluations"] for r in records], dtype=float)
    V = np.stack([np.asarray(r["values"], float) for r in records])
    S = np.stack([np.asarray(r["stderr"], float) for r in records])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i in idx:
        ax.errorbar(
            x,
            V[:, i],
            yerr=level_z * np.nan_to_num(S[:, i]),
            marker="o",
            ms=3,
            capsize=2,
            label=names[i],
        )
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(np.unique(x)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%d"))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("distinct coalitions evaluated")
    ax.set_ylabel("Shapley estimate")
    ax.set_title(title or f"{records[0].get('method', '')}: estimate +/- {level_z:g} stderr")
    if len(idx) <= 12:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
