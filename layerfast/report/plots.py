"""The seed paper's figures as PNG files (matplotlib, Agg backend): attention red, MLP blue."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

ATTN_COLOR, MLP_COLOR = "tab:red", "tab:blue"


def _figure(n: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 0.16 * n + 2), 3.6), dpi=120)
    return plt, fig, ax


def _colors(players: Sequence[str]) -> list[str]:
    return [ATTN_COLOR if p.startswith("attn") else MLP_COLOR for p in players]


def _legend(ax, extra=()):
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            Patch(color=ATTN_COLOR, label="attention"),
            Patch(color=MLP_COLOR, label="MLP"),
            *extra,
        ],
        fontsize=7,
        loc="best",
    )


def _ticks(ax, players):
    blocks = len(players) // 2
    if players == [f"{k}{i}" for i in range(blocks) for k in ("attn", "mlp")]:
        step = max(1, blocks // 40)
        ax.set_xticks([2 * i + 0.5 for i in range(0, blocks, step)])
        ax.set_xticklabels([str(i) for i in range(0, blocks, step)], fontsize=7)
        ax.set_xlabel("block (each: attention, then MLP)", fontsize=8)
    else:
        step = max(1, len(players) // 40)
        ax.set_xticks(range(0, len(players), step))
        ax.set_xticklabels(players[::step], rotation=90, fontsize=6)


def plot_ablation(
    players: Sequence[str],
    values: np.ndarray,
    full: float,
    chance: float | None,
    path: str | Path,
    title: str = "",
    utility: str = "",
) -> Path:
    """Utility with each player removed, with the full-model and chance lines."""
    plt, fig, ax = _figure(len(players))
    ax.bar(range(len(players)), values, color=_colors(players))
    extra = [ax.axhline(full, color="black", lw=1, ls="-", label=f"full model {full:.3f}")]
    if chance is not None:
        extra.append(ax.axhline(chance, color="gray", lw=1, ls="--", label=f"chance {chance:.3f}"))
    _ticks(ax, list(players))
    ax.set_ylabel(f"{utility} without player" if utility else "utility without player")
    ax.set_title(title or "single-sublayer ablation", fontsize=9)
    _legend(ax, extra)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_shapley(
    players: Sequence[str],
    values: np.ndarray,
    stderr: np.ndarray | None,
    path: str | Path,
    title: str = "",
) -> Path:
    """Each player's share of the summed Shapley values (%), with 1-s.e. error bars."""
    plt, fig, ax = _figure(len(players))
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
    ax.set_title(title or "layer Shapley values", fontsize=9)
    _legend(ax)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_blocks(
    values: np.ndarray,
    path: str | Path,
    ylabel: str,
    title: str = "",
    highlight: Sequence[int] = (),
    interval: tuple | None = None,
) -> Path:
    """One bar per block (highlighted blocks in grey, e.g. the pruned ones); ``interval``
    (lo, hi) arrays draw error bars (e.g. bootstrap intervals)."""
    plt, fig, ax = _figure(len(values))
    colors = ["lightgray" if i in set(highlight) else "tab:green" for i in range(len(values))]
    v = np.nan_to_num(np.asarray(values, dtype=float))
    yerr = None
    if interval is not None:
        lo, hi = (np.nan_to_num(np.asarray(x, dtype=float), nan=0.0) for x in interval)
        yerr = np.stack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])
    ax.bar(range(len(values)), v, color=colors, yerr=yerr, ecolor="black", capsize=2)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("block", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


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
