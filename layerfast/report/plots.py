"""The seed paper's figures (matplotlib, no pyplot state): attention red, MLP blue, a whole block
(``--unit block``) purple.

Each ``*_figure`` function returns a :class:`matplotlib.figure.Figure` (for tests and for
callers that compose figures); each ``plot_*`` function draws the same figure and saves it to a
file whose suffix picks the format (``.png``, ``.svg``, ``.pdf``). Per-block axes carry integer
block ticks only, and legends sit above the axes, where they cannot hide a bar. A player's bar
sits on its block (:func:`bar_layout`, from :class:`layerfast.players.Player`'s ``block`` and
``kind``); players whose names give no block (a closed-form game's ``p0``) sit at their list
positions, grey, labelled by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..paths import atomic_write
from ..players import KINDS, as_players

ATTN_COLOR, MLP_COLOR = "tab:red", "tab:blue"
BLOCK_COLOR = "tab:purple"  # a whole block as one player (--unit block)
OTHER_COLOR = "tab:gray"  # a player whose name gives no block or kind
KIND_COLORS = {"attn": ATTN_COLOR, "mlp": MLP_COLOR, "block": BLOCK_COLOR}
KIND_LABELS = {"attn": "attention", "mlp": "MLP", "block": "block (attention and MLP)"}
SUBLAYER_OFFSET = 0.2  # attention this far left of its block, MLP right (both kinds drawn)
MAX_TICKS = 40  # at most this many x tick labels; beyond it every k-th one


@dataclass(frozen=True)
class BarLayout:
    """Where and how to draw one bar per player.

    x: float [n_players] bar centres in block units: the player's block, -/+ SUBLAYER_OFFSET
        for attention / MLP in a block that has both (a block player on its block); the list
        positions 0, 1, ... when the names give no blocks.
    width: float [n_players] bar widths (x units). colors: one per player.
    kinds: the kinds drawn, in :data:`layerfast.players.KINDS` order (empty when the names
        give no kinds). split: some block holds both an attention and an MLP bar.
    ticks, labels: x tick positions and texts: whole block numbers, or player names.
    """

    x: np.ndarray
    width: np.ndarray
    colors: list[str]
    kinds: tuple[str, ...]
    split: bool
    ticks: list[float]
    labels: list[str]


def bar_layout(players: Sequence[str], max_ticks: int = MAX_TICKS) -> BarLayout:
    """The :class:`BarLayout` of ``players`` (names or :class:`~layerfast.players.Player`),
    with at most about ``max_ticks`` tick labels."""
    found = as_players(list(players))
    if found is None:
        n = len(players)
        step = _tick_step(n, max_ticks)
        names = [str(p) for p in players][::step]
        x = np.arange(n, dtype=float)
        return BarLayout(x, np.full(n, 0.8), [OTHER_COLOR] * n, (), False, list(x[::step]), names)
    kinds = tuple(k for k in KINDS if any(p.kind == k for p in found))
    attn, mlp = ({p.block for p in found if p.kind == k} for k in ("attn", "mlp"))
    both = attn & mlp  # blocks drawn as two bars, attention left and MLP right
    offset = {"attn": -SUBLAYER_OFFSET, "mlp": SUBLAYER_OFFSET, "block": 0.0}
    x = np.array([p.block + (offset[p.kind] if p.block in both else 0.0) for p in found])
    width = np.array([1.9 * SUBLAYER_OFFSET if p.block in both else 0.8 for p in found])
    blocks = sorted({p.block for p in found})
    ticks = blocks[:: _tick_step(len(blocks), max_ticks)]
    colors = [KIND_COLORS[p.kind] for p in found]
    labels = [str(b) for b in ticks]
    return BarLayout(x, width, colors, kinds, bool(both), [float(b) for b in ticks], labels)


def kind_handles(kinds: Iterable[str]) -> list:
    """Legend patches for the player kinds ``kinds`` (attention, MLP, block)."""
    from matplotlib.patches import Patch

    return [Patch(color=KIND_COLORS[k], label=KIND_LABELS[k]) for k in kinds]


def player_ticks(ax, layout: BarLayout, fontsize: float = 7) -> None:
    """Tick labels and x label of a per-player axes: block numbers under the blocks, or the
    player names (vertical) under list positions."""
    ax.set_xticks(layout.ticks)
    if layout.kinds:
        ax.set_xticklabels(layout.labels, fontsize=fontsize)
        label = "block (each: attention, then MLP)" if layout.split else "block"
        ax.set_xlabel(label, fontsize=fontsize + 1)
    else:
        ax.set_xticklabels(layout.labels, rotation=90, fontsize=fontsize - 1)


def _figure(n: int):
    """A constrained-layout figure with an Agg canvas and one axes, sized for ``n`` bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 0.16 * n + 2), 3.8), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def save_figure(fig, path: str | Path, **options) -> Path:
    """``fig.savefig(path, **options)`` through :func:`~layerfast.paths.atomic_write`, in the
    format of ``path``'s suffix: a failed write leaves no partial file and raises one
    :class:`~layerfast.errors.OutputError` naming ``path``."""
    import matplotlib

    kind = Path(path).suffix.lstrip(".") or matplotlib.rcParams["savefig.format"]
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format=kind, **options)
    return Path(path)


def _legend(ax, layout: BarLayout, extra=()) -> None:
    """The key of the kinds drawn (and ``extra`` handles) in one row above the axes."""
    handles = [*kind_handles(layout.kinds), *extra]
    if not handles:
        return
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


def _tick_step(n: int, max_ticks: int = MAX_TICKS) -> int:
    return max(1, -(-n // max_ticks))


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
    layout = bar_layout(players)
    ax.bar(layout.x, values, width=layout.width, color=layout.colors)
    extra = [ax.axhline(full, color="black", lw=1, ls="-", label=f"full model {full:.3f}")]
    if chance is not None:
        extra.append(ax.axhline(chance, color="gray", lw=1, ls="--", label=f"chance {chance:.3f}"))
    player_ticks(ax, layout)
    ax.set_ylabel(f"{utility} without player" if utility else "utility without player")
    _title(fig, title or "single-sublayer ablation")
    _legend(ax, layout, extra)
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
    return save_figure(ablation_figure(players, values, full, chance, title, utility), path)


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
    layout = bar_layout(players)
    ax.bar(
        layout.x,
        values * scale,
        width=layout.width,
        color=layout.colors,
        yerr=err,
        error_kw={"elinewidth": 0.6, "capsize": 1},
    )
    ax.axhline(0, color="black", lw=0.6)
    player_ticks(ax, layout)
    ax.set_ylabel("share of total (%)" if total != 0 else "Shapley value")
    _title(fig, title or "layer Shapley values")
    _legend(ax, layout)
    return fig


def plot_shapley(
    players: Sequence[str],
    values: np.ndarray,
    stderr: np.ndarray | None,
    path: str | Path,
    title: str = "",
) -> Path:
    """:func:`shapley_figure` saved to ``path``."""
    return save_figure(shapley_figure(players, values, stderr, title), path)


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
    return save_figure(blocks_figure(values, ylabel, title, highlight, interval), path)


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
    try:
        save_figure(fig, path, dpi=120)
    finally:
        plt.close(fig)
    return str(path)


def search_figure(result: dict, title: str):
    """A pruning search's path (``SearchResult.to_dict()``): v after each removal with its 95%
    item-bootstrap band, and the held-out tasks' retention (right axis) where they have one."""
    path = result["search"]
    steps = np.arange(len(path["values"]))
    fig, ax = _figure(len(steps))
    ax.plot(steps, path["values"], marker="o", ms=3, color="black", label=path["utility"])
    if path["lo"] is not None:
        ax.fill_between(steps, path["lo"], path["hi"], color="black", alpha=0.15, lw=0)
    ax.set_xlabel("units removed")
    ax.set_ylabel(f"{path['utility']} (search task)")
    held = {k: v for k, v in result.get("held_out", {}).items() if v["retained"] is not None}
    lines = ax.get_lines()
    if held:
        right = ax.twinx()
        for name, values in held.items():
            (line,) = right.plot(steps, values["retained"], marker=".", ms=3, label=name)
            if values["retained_lo"] is not None:
                right.fill_between(
                    steps, values["retained_lo"], values["retained_hi"], alpha=0.12, lw=0,
                    color=line.get_color(),
                )  # fmt: skip
        right.set_ylabel("retained on held-out tasks (v / v(full))")
        lines = [*lines, *right.get_lines()]
    ax.legend(handles=lines, fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.0),
              ncol=len(lines), frameon=False)  # fmt: skip
    ax.set_xticks(steps[:: _tick_step(len(steps))])
    labels = ["full", *result["order"]]
    ax.set_xticklabels([labels[i] for i in steps[:: _tick_step(len(steps))]], rotation=90,
                       fontsize=7)  # fmt: skip
    _title(fig, title)
    return fig


def plot_search(result: dict, path: str | Path, title: str) -> Path:
    return save_figure(search_figure(result, title), path)
