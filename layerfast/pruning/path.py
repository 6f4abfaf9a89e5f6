"""A removal path scored on a game: the utility after each step with item-bootstrap intervals,
retention against the full model, and what a naive executor would have spent."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..estimators.bootstrap import resample_indices

LEVEL = 0.95  # the intervals' coverage


def path_values(game: Any, masks: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """v along a path of bool masks [k + 1, n_players] (row 0: the full model).

    Returns ``{"utility", "values" [k+1], "lo", "hi", "retained", "retained_lo", "retained_hi"}``
    (lists of floats): ``lo``/``hi`` the 95% item-bootstrap interval (``n_boot`` replicates
    resampling the game's items, the same resample for every step; None without per-item terms
    or with ``n_boot=0``); ``retained`` = v / v(full) for accuracy-like utilities (those with a
    chance level, where v(full) > 0), else None, with the interval of the same paired resample.
    """
    masks = np.asarray(masks, dtype=bool)
    out: dict[str, Any] = {"utility": str(getattr(game, "utility", "v"))}
    terms = None
    if n_boot and hasattr(game, "item_values"):
        terms = np.asarray(game.item_values(masks), dtype=np.float64)  # [k + 1, n_items]
        values = terms.mean(axis=1)
    else:
        values = np.asarray(game(masks), dtype=np.float64)
    out["values"] = values.tolist()
    accuracy = getattr(game, "chance", None) is not None and values[0] > 0
    out["retained"] = (values / values[0]).tolist() if accuracy else None
    out["lo"] = out["hi"] = out["retained_lo"] = out["retained_hi"] = None
    if terms is not None and terms.shape[1] > 1:
        rng = np.random.default_rng(seed)
        idx = resample_indices(terms.shape[1], int(n_boot), rng)  # [n_boot, n_items]
        reps = terms[:, idx].mean(axis=2)  # [k + 1, n_boot]
        tail = 100 * (1 - LEVEL) / 2
        out["lo"], out["hi"] = (np.percentile(reps, q, axis=1).tolist() for q in (tail, 100 - tail))
        if accuracy:
            with np.errstate(divide="ignore", invalid="ignore"):  # a replicate's v(full) = 0
                ratio = np.where(reps[:1] > 0, reps / reps[:1], np.nan)
            out["retained_lo"], out["retained_hi"] = (
                np.nanpercentile(ratio, q, axis=1).tolist() for q in (tail, 100 - tail)
            )
    return out


def naive_compute(game: Any, masks: np.ndarray) -> int | None:
    """Token-sublayer evaluations a naive executor runs for the distinct coalitions ``masks``
    (bool [m, n_players]): each one's kept model sublayers times the real tokens of every batch.
    None for a game that is not a model's."""
    player_set = getattr(game, "player_set", None)
    executor = getattr(game, "executor", None)
    if player_set is None or executor is None:
        return None
    model_masks = np.unique(player_set.expand(np.asarray(masks, dtype=bool)), axis=0)
    tokens = sum(b.n_tokens for b in executor.batches)
    return int(model_masks.sum()) * int(tokens)
