"""Estimates and error bars as the budget grows."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from . import shapley

__all__ = ["convergence", "plot_convergence"]


def convergence(
    game: Any,
    method: str,
    budgets: Iterable[int],
    seed: int = 0,
    memo: dict | None = None,
    **opts: Any,
) -> list[dict]:
    """Run ``method`` at each budget with the same seed and one shared memo.

    The shared memo means coalitions already evaluated at a smaller budget are not evaluated
    again by the game (with the same seed the sampling methods draw the same first units, so
    most of a larger run is already in the memo). Each run still counts its own distinct
    coalitions against its budget, so every record equals an independent run at that budget.

    Returns one dict per budget: ``budget``, ``values``, ``stderr`` (numpy arrays),
    ``n_evaluations``, ``n_new_evaluations`` (game calls this step actually made), ``method``,
    ``players``, ``efficiency_gap``.
    """
    budgets = [int(b) for b in budgets]
    if not budgets:
        raise ValueError("budgets must not be empty")
    memo = {} if memo is None else memo
    records = []
    for b in budgets:
        before = len(memo)
        res = shapley(game, method=method, budget=b, seed=seed, memo=memo, **opts)
        records.append(
            {
                "budget": b,
                "values": res.values,
                "stderr": res.stderr,
                "n_evaluations": res.n_evaluations,
                "n_new_evaluations": len(memo) - before,
                "method": res.method,
                "players": res.players,
                "efficiency_gap": res.efficiency_gap,
            }
        )
    return records


def plot_convergence(records: list[dict], path: str, players: Iterable | None = None,
                     level_z: float = 1.0, title: str | None = None) -> str:
    """Plot estimates with +/- ``level_z`` * stderr error bars against the budget, to a PNG.

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
        ax.errorbar(x, V[:, i], yerr=level_z * np.nan_to_num(S[:, i]), marker="o", ms=3,
                    capsize=2, label=names[i])
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
