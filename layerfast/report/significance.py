"""Which players' ablation drops and Shapley values can be told from zero at the task's item
count, and how many items the observed values would need.

Both use the item bootstrap (:mod:`layerfast.estimators.bootstrap`): a drop's error is the item
sample's (the coalitions of an ablation sweep are fixed); a Shapley value's is the total
(coalition sampling and items). A value is *distinguishable from zero* when its two-sided 95%
normal interval excludes 0. The items needed for a value x with item-level standard error s
at n items come from s shrinking as 1/sqrt(items): a two-sided test at 5% has 80% power when
|x| = (z_0.975 + z_0.8) s sqrt(n / N), so N = n ((z_0.975 + z_0.8) s / |x|)^2. When the coalition
sampling error alone is larger than the value, more items cannot help: a larger budget is needed.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

from .document import Paragraph, Table, markdown_blocks

Z_LEVEL = NormalDist().inv_cdf(0.975)  # two-sided 95%
Z_POWER = NormalDist().inv_cdf(0.80)


def distinguishable(values: np.ndarray, stderr: np.ndarray) -> np.ndarray:
    """bool [n]: the 95% interval ``values ± 1.96 stderr`` excludes 0 (False where stderr is
    NaN)."""
    values, stderr = np.asarray(values, float), np.asarray(stderr, float)
    with np.errstate(invalid="ignore"):
        return np.abs(values) > Z_LEVEL * stderr


def items_needed(values: np.ndarray, stderr_items: np.ndarray, n_items: int) -> np.ndarray:
    """float [n]: items for 80% power at 5% (two-sided) to tell each value from 0, from its
    item-level standard error at ``n_items`` items; inf for a value of 0, NaN without an
    error."""
    values, s = np.abs(np.asarray(values, float)), np.asarray(stderr_items, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        need = n_items * ((Z_LEVEL + Z_POWER) * s / values) ** 2
    return np.where(values == 0, np.inf, np.ceil(need))


def significance_table(abl: Any, res: Any, n_items: int | None) -> str | None:
    """A Markdown table, one row per player: drop and Shapley value, whether each is told from
    0 at this item count, and the items each would need; None without an item bootstrap."""
    blocks = significance_blocks(abl, res, n_items)
    return None if blocks is None else markdown_blocks(blocks)


def significance_blocks(abl: Any, res: Any, n_items: int | None) -> tuple[Paragraph, Table] | None:
    """:func:`significance_table` as report blocks: the paragraph saying what the table shows
    and the table (cells as text); None without an item bootstrap."""
    drop_se = getattr(abl, "drop_stderr_items", None)
    boot = res is not None and getattr(res, "item_rank_counts", None) is not None
    if drop_se is None or not boot or not n_items:
        return None
    drop_ok = distinguishable(abl.drops, drop_se)
    drop_n = items_needed(abl.drops, drop_se, n_items)
    phi_ok = distinguishable(res.values, res.stderr_total)
    phi_n = items_needed(res.values, res.stderr_items, n_items)
    coalition_bound = np.abs(res.values) <= Z_LEVEL * np.nan_to_num(res.coalition_stderr)
    intro = Paragraph(
        f"Told from zero at {n_items} items (95% interval excludes 0), and the items needed "
        "for 80% power at 5% (from the bootstrap's item-level error; `budget` where the "
        "coalition sampling error alone is too large, so more items cannot help):"
    )
    rows = []
    for i, p in enumerate(abl.players):
        phi_items = "budget" if coalition_bound[i] and not phi_ok[i] else _count(phi_n[i])
        rows.append(
            (
                str(p),
                f"{abl.drops[i]:.3f}",
                _yes(drop_ok[i]),
                _count(drop_n[i]),
                f"{res.values[i]:.4f}",
                _yes(phi_ok[i]),
                phi_items,
            )
        )
    columns = ("player", "drop", "drop ≠ 0", "items for drop", "Shapley", "Shapley ≠ 0")
    table = Table(
        (*columns, "items for Shapley"), tuple(rows), align=("l", "r", "c", "r", "r", "c", "r")
    )
    return intro, table


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _count(n: float) -> str:
    if math.isnan(n):
        return "n/a"
    if math.isinf(n):
        return "never (0)"
    return f"{int(n):,}"
