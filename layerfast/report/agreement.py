"""Do two views of layer importance rank the players alike? The generative form of a task
(``analogies-gen``: the model writes the answer) against its likelihood form (``analogies``: the
model's log-likelihoods pick among 4 choices), on the same items and the same players.

Each view comes as per-item ablation drops, float64 [n_items, n_players]: the full model's
per-item term minus the term without player l (:func:`item_drops`), the same items in the same
order in both views. The agreement is Spearman's rho of the two mean-drop vectors (average ranks
for ties), with a percentile interval from an item bootstrap: the items are resampled with
replacement (one resample for both views: they are paired), both mean-drop vectors are
recomputed and so is rho. A resample on which a view's mean drops are all equal has no rho (NaN):
it is skipped and counted (:attr:`Agreement.skipped`); when every one is, the interval is NaN and
:attr:`Agreement.note` says why. Ranks count from 1, the largest mean drop.
Resampled means are (integer draw counts @ terms) / n_items: ties on the items (frequent with
0/1 utilities) stay exact ties on every resample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UsageError
from ..estimators.ablation import ablation_masks
from ..estimators.bootstrap import resample_indices
from ..estimators.ranks import spearman as spearman_rho
from .document import Bullets, Heading, Paragraph, Table

# a generative built-in -> its multiple-choice form (the same items, ids and order); a task's own
# ``notes["likelihood_form"]`` wins over this table
LIKELIHOOD_FORMS = {"analogies-gen": "analogies", "capitals-gen": "capitals"}
MOST_DIFFERENT = 5  # players listed in Agreement.most_different
SECTION = "Likelihood vs generation"
_FLAT = "a view's mean drops all equal on the resample: no rank correlation"
_CELLS = 8_000_000  # float64 cells of one block of resample counts (about 64 MB)


@dataclass
class Agreement:
    """The rank agreement of two views over the same players and items.

    spearman: rho of the mean drops (NaN when a view's mean drops are all equal); low, high: its
    percentile interval at ``level`` over the ``n_boot - skipped`` item resamples with a rho
    (NaN when fewer than 2). first_drop, second_drop, first_rank, second_rank, rank_shift:
    float64 [n_players]; rank_shift = rank in the first view minus rank in the second (rank 1 =
    largest drop). most_different: up to 5 (player, first rank, second rank) with the largest
    nonzero |rank shift|, largest first (player order among ties). labels: the views' names.
    note: why a value is NaN or how many resamples were skipped ("" when there is nothing to say).
    """

    spearman: float
    low: float
    high: float
    n_items: int
    n_boot: int
    players: list[str]
    first_drop: np.ndarray
    second_drop: np.ndarray
    rank_shift: np.ndarray
    most_different: list[tuple[str, float, float]]
    first_rank: np.ndarray = field(default_factory=lambda: np.zeros(0))
    second_rank: np.ndarray = field(default_factory=lambda: np.zeros(0))
    level: float = 0.95
    skipped: int = 0
    labels: tuple[str, str] = ("first", "second")
    note: str = ""

    def to_dict(self) -> dict:
        """A JSON-ready record (NaN stays NaN: :func:`layerfast.report.files.write_json` writes
        null, and ``note`` says why)."""
        index = {p: i for i, p in enumerate(self.players)}
        return {
            "spearman": float(self.spearman),
            "interval": {
                "low": float(self.low),
                "high": float(self.high),
                "level": self.level,
                "method": "percentile, item bootstrap (paired resamples of the items)",
            },
            "n_items": self.n_items,
            "n_boot": self.n_boot,
            "skipped": self.skipped,
            "note": self.note,
            "labels": list(self.labels),
            "players": list(self.players),
            "first_drop": self.first_drop.tolist(),
            "second_drop": self.second_drop.tolist(),
            "first_rank": self.first_rank.tolist(),
            "second_rank": self.second_rank.tolist(),
            "rank_shift": self.rank_shift.tolist(),
            "most_different": [
                {
                    "player": p,
                    "first_rank": float(r1),
                    "second_rank": float(r2),
                    "first_drop": float(self.first_drop[index[p]]),
                    "second_drop": float(self.second_drop[index[p]]),
                }
                for p, r1, r2 in self.most_different
            ],
        }


def rank_agreement(
    first: Any,
    second: Any,
    n_boot: int = 1000,
    seed: int | np.random.Generator | None = 0,
    level: float = 0.95,
    *,
    players: Sequence[str] | None = None,
    labels: tuple[str, str] = ("first", "second"),
) -> Agreement:
    """Spearman's rho between the mean drops of two views, with its item-bootstrap interval.

    Args:
        first, second: per-item ablation drops, float [n_items, n_players] each, the same items
            in the same order (``full_item_terms[:, None] - ablated_item_terms``).
        n_boot: item resamples (0: no interval).
        seed: seed (or Generator) of the resamples.
        level: coverage of the percentile interval, in (0, 1).
        players: the players' names (default "0", "1", ...).
        labels: the two views' names, used in ``note`` and the report.
    """
    a, b = _check(first, second, n_boot, level)
    n_items, n_players = a.shape
    names = [str(p) for p in players] if players is not None else [str(i) for i in range(n_players)]
    if len(names) != n_players:
        raise UsageError(f"{len(names)} player names for {n_players} players")
    mean_a, mean_b = a.sum(axis=0) / n_items, b.sum(axis=0) / n_items
    rho = spearman_rho(mean_a, mean_b)[0]
    rank_a, rank_b = _ranks(mean_a[None])[0], _ranks(mean_b[None])[0]
    shift = rank_a - rank_b
    notes = [_constant_note(mean_a, mean_b, labels)] if math.isnan(rho) else []
    low = high = float("nan")
    skipped = 0
    if n_boot:
        reps = _bootstrap(a, b, n_boot, seed)
        valid = reps[np.isfinite(reps)]
        skipped = int(n_boot - valid.size)
        if valid.size >= 2:
            low, high = (float(q) for q in np.quantile(valid, [(1 - level) / 2, (1 + level) / 2]))
            if skipped:
                notes.append(f"{skipped} of {n_boot} item resamples skipped ({_FLAT})")
        else:
            notes.append(f"no interval: {skipped} of {n_boot} item resamples skipped ({_FLAT})")
    else:
        notes.append("no interval: n_boot=0 (no item bootstrap)")
    order = np.argsort(-np.abs(shift), kind="stable")
    most = [(names[i], float(rank_a[i]), float(rank_b[i])) for i in order if shift[i] != 0]
    return Agreement(
        spearman=float(rho),
        low=low,
        high=high,
        n_items=n_items,
        n_boot=n_boot,
        players=names,
        first_drop=mean_a,
        second_drop=mean_b,
        rank_shift=shift,
        most_different=most[:MOST_DIFFERENT],
        first_rank=rank_a,
        second_rank=rank_b,
        level=level,
        skipped=skipped,
        labels=tuple(labels),
        note="; ".join(notes),
    )


def _check(first: Any, second: Any, n_boot: Any, level: float) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise UsageError(
            f"the two views must be per-item drops of one shape [n_items, n_players]; got "
            f"{a.shape} and {b.shape}"
        )
    if a.shape[0] < 1 or a.shape[1] < 2:
        raise UsageError(f"need at least 1 item and 2 players to compare ranks; got {a.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise UsageError("per-item drops must be finite")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise UsageError(f"n_boot must be a whole number >= 0, got {n_boot!r}")
    if not 0.0 < level < 1.0:
        raise UsageError(f"level must be in (0, 1), got {level}")
    return a, b


def _constant_note(mean_a: np.ndarray, mean_b: np.ndarray, labels) -> str:
    flat = [name for name, m in zip(labels, (mean_a, mean_b)) if np.ptp(m) == 0]
    which = " and ".join(flat) + (" views'" if len(flat) > 1 else " view's")
    return f"Spearman undefined: the {which} mean drops are all equal"


def _ranks(x: np.ndarray) -> np.ndarray:
    """Row-wise ranks, 1 = largest, ties averaged: float64 [m, n]."""
    from scipy.stats import rankdata

    return rankdata(-x, method="average", axis=1).astype(np.float64)


def _row_spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair, float64 [m]; NaN where a row is constant."""
    rx, ry = _ranks(x), _ranks(y)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    num = (rx * ry).sum(axis=1)
    den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    flat = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.clip(num / den, -1.0, 1.0)
    rho[flat] = np.nan
    return rho


def _bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int, seed) -> np.ndarray:
    """rho on ``n_boot`` paired item resamples, float64 [n_boot] (NaN where undefined)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n_items = a.shape[0]
    idx = resample_indices(n_items, n_boot, rng)
    out = np.empty(n_boot)
    step = max(1, _CELLS // n_items)
    for start in range(0, n_boot, step):
        block = idx[start : start + step]
        flat = (block + n_items * np.arange(block.shape[0])[:, None]).reshape(-1)
        counts = np.bincount(flat, minlength=block.size).reshape(block.shape).astype(np.float64)
        out[start : start + step] = _row_spearman(counts @ a / n_items, counts @ b / n_items)
    return out


# --- the tasks and games of the two views ---------------------------------------------------
def likelihood_twin(task: Any) -> str | None:
    """The multiple-choice task with the same items as generative ``task`` (a task object or a
    name): its ``notes["likelihood_form"]``, else :data:`LIKELIHOOD_FORMS`; None for another
    task (a multiple-choice one, a generative file or BIG-bench task)."""
    if isinstance(task, str):
        return LIKELIHOOD_FORMS.get(task)
    if not getattr(task, "generative", False):
        return None
    form = (getattr(task, "notes", None) or {}).get("likelihood_form")
    return form or LIKELIHOOD_FORMS.get(getattr(task, "name", None))


def twin_task(task: Any, limit: int | None, seed: int = 0) -> Any | None:
    """The likelihood form of generative ``task`` on its items: loaded with the same ``limit``
    and ``seed`` (the built-ins then hold the same items); where the ids differ, the twin's items
    with ``task``'s ids, in ``task``'s order (those it lacks left out; :func:`aligned_indices`).
    None without a twin or without a shared item."""
    from .. import tasks

    name = likelihood_twin(task)
    if name is None:
        return None
    twin = tasks.load(name, limit=limit, seed=seed)
    ids = [it.id for it in task.items]
    if [it.id for it in twin.items] == ids:
        return twin
    full = tasks.load(name)
    by_id = {it.id: it for it in full.items}
    keep = [by_id[i] for i in ids if i in by_id]
    if not keep:
        return None
    notes = {**full.notes, "aligned_to": task.name}
    return tasks.Task(full.name, keep, full.delimiter, full.source, notes)


def aligned_indices(first: Any, second: Any) -> tuple[np.ndarray, np.ndarray]:
    """(positions in ``first``, positions in ``second``) of the item ids both tasks hold, in
    ``first``'s order: int64 [k] each."""
    where = {it.id: j for j, it in enumerate(second.items)}
    pairs = [(i, where[it.id]) for i, it in enumerate(first.items) if it.id in where]
    i, j = zip(*pairs) if pairs else ((), ())
    return np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)


def item_drops(game: Any) -> np.ndarray:
    """Per-item ablation drops of ``game``, float64 [n_items, n_players]: the full coalition's
    per-item term minus the term without player l (``game.item_values``; after
    :func:`~layerfast.estimators.ablation.ablate` these come from the game's memo)."""
    terms = np.asarray(game.item_values(ablation_masks(game.n_players)), dtype=np.float64)
    return (terms[0][None, :] - terms[1:]).T


def likelihood_agreement(
    game: Any, limit: int | None, seed: int = 0, n_boot: int = 1000, **options: Any
) -> tuple[Agreement, tuple[str, ...], dict] | None:
    """The agreement of generative ``game`` (after its ablation sweep) with its task's likelihood
    form: a :class:`~layerfast.Game` of the same model (``game.model``, not loaded again) on the
    twin task's items (:func:`twin_task` with ``limit`` and ``seed``); ``options`` go to that
    Game (``players``, ``unit``, ``cache``, sizes; ``utility``, default the twin's default).
    Returns (agreement, the lines naming the views, a JSON-ready record), or None when the task
    has no likelihood form or the game fewer than 2 players."""
    from ..estimators.ablation import ablate
    from ..evaluation.game import Game

    twin = twin_task(game.task, limit, seed) if game.n_players >= 2 else None
    if twin is None:
        return None
    lik = Game(game.model, twin, **options)
    try:
        if lik.players != game.players:
            raise UsageError(
                f"the likelihood game's players {lik.players} are not the generative game's "
                f"{game.players}"
            )
        lik_abl = ablate(lik, item_bootstrap=0)
        gen_full = float(np.mean(game.per_item(game.full_mask())))
        gen_at, lik_at = aligned_indices(game.task, twin)
        agr = rank_agreement(
            item_drops(lik)[lik_at],
            item_drops(game)[gen_at],
            n_boot,
            players=game.players,
            labels=("likelihood", "generation"),
        )
    finally:
        lik.close()
    views = {
        "likelihood": {"task": twin.name, "utility": lik.utility, "full": lik_abl.full},
        "generation": {"task": game.task.name, "utility": game.utility, "full": gen_full},
    }
    lines = tuple(
        f"{view}: `{v['utility']}` on `{v['task']}` (full model v(N) = {v['full']:.4f})"
        for view, v in views.items()
    )
    return agr, lines, {**agr.to_dict(), **views, "n_players": len(agr.players)}


# --- the report's section ------------------------------------------------------------------------
def agreement_blocks(agr: Agreement, views: Sequence[str] = ()) -> tuple:
    """The report section: a heading, the facts (``views``: a line per view saying what it is,
    then rho with its interval and the item count) and the table of the players whose rank
    differs most (or a line saying none does)."""
    first, second = agr.labels
    facts = (
        *views,
        f"Spearman of the ablation drops ({first} vs {second}): {_rho_text(agr)}",
        f"items: {agr.n_items} (the same items in both views); players: {len(agr.players)}",
    )
    if agr.note:
        facts += (f"note: {agr.note}",)
    blocks: tuple = (Heading(SECTION, 2), Bullets(facts))
    if not agr.most_different:
        return blocks + (Paragraph("Every player has the same rank in both views."),)
    index = {p: i for i, p in enumerate(agr.players)}
    rows = tuple(
        (
            p,
            f"{r1:g}",
            f"{r2:g}",
            f"{r1 - r2:+g}",
            f"{agr.first_drop[index[p]]:.3f}",
            f"{agr.second_drop[index[p]]:.3f}",
        )
        for p, r1, r2 in agr.most_different
    )
    columns = (
        "player",
        f"rank ({first})",
        f"rank ({second})",
        "shift",
        f"drop ({first})",
        f"drop ({second})",
    )
    intro = Paragraph(
        f"The players whose rank differs most (rank 1 = the largest drop; shift = rank "
        f"({first}) - rank ({second})):"
    )
    return blocks + (intro, Table(columns, rows, align=("l", "r", "r", "r", "r", "r")))


def agreement_line(agr: Agreement) -> str:
    """The one line the CLI prints."""
    first, second = agr.labels
    line = f"{first} vs {second} ranks: Spearman {_rho_text(agr)}"
    return line + (f"; {agr.note}" if agr.note else "")


def _rho_text(agr: Agreement) -> str:
    rho = "n/a" if math.isnan(agr.spearman) else f"{agr.spearman:.3f}"
    pct = f"{100 * agr.level:g}%"
    if math.isnan(agr.low):
        return f"{rho} (no {pct} interval)"
    return (
        f"{rho} ({pct} interval {agr.low:.3f} to {agr.high:.3f}, item bootstrap, "
        f"B={agr.n_boot - agr.skipped} of {agr.n_boot})"
    )
