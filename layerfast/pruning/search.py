"""Pruning by search: remove units one at a time, each step keeping the candidate that leaves the
game's utility highest (FinerCut over sublayers, SLEB over blocks), or the best ``beam_width``
sets (beam search).

    res = lf.prune_search(game, target=0.25, unit="sublayer", method="greedy")
    res.order        # unit names in removal order
    res.utilities    # float64 [k + 1]: v after 0, 1, ..., k removals, with res.lo / res.hi

Every candidate set is one coalition of ``game``: all candidates of a step go to the game in one
call, so the prefix executor shares each candidate's residual states up to the unit it removes
(the candidates of a step are "current model minus one more unit"), and the cache holds each
evaluation: a killed search rerun with the same cache replays its finished steps without a
forward pass and picks the same units; ablation and Shapley sweeps reuse the same coalitions.
Ties go to the lower unit index (the earlier one), so a search is deterministic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from numbers import Integral
from typing import Any

import numpy as np

from ..errors import UsageError
from ..models.pruning import prune_keep
from .path import naive_compute, path_values
from .result import SearchResult, Step
from .units import Units, game_units, target_count

METHODS = ("greedy", "beam")


def prune_search(
    game: Any,
    target: float | int = 0.25,
    unit: str | None = None,
    method: str = "greedy",
    beam_width: int = 4,
    keep_first: int = 0,
    keep_last: int = 0,
    eval_games: Mapping[str, Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    on_step: Callable[[Step], None] | None = None,
) -> SearchResult:
    """Search which units to remove from ``game`` (maximising its utility after each removal).

    Args:
        game: an ``lf.Game`` (any utility: accuracy, ``logprob``, ``nll`` on text, ``kl``,
            generative ones), or any callable bool [m, n_players] -> float [m] with
            ``n_players`` (then units are its players).
        target: a fraction in (0, 1) of all units (rounded to a count), or a count >= 1.
        unit: "sublayer", "block" (a block's sublayers removed together; on a sublayer game the
            coalitions are the same ones a sublayer search evaluates, so they share the cache),
            or None: the game's players.
        method: "greedy" (one set kept per step) or "beam" (``beam_width`` sets kept).
        keep_first, keep_last: never remove units of the first / last that many blocks.
        eval_games: held-out games ({name: Game} with the same players), evaluated on the
            chosen path after the search: retention on tasks the search never saw.
        n_boot: item-bootstrap replicates for the intervals (0: none).
        on_step: called with each finished :class:`~.result.Step` (progress lines).

    Returns a :class:`~.result.SearchResult`; ``evaluations`` counts coalitions asked of the
    game (the full model included), ``compute`` the token-sublayer evaluations the game ran for
    them (0 for what its memo or cache held).
    """
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "beam" and (
        isinstance(beam_width, bool) or not isinstance(beam_width, Integral) or beam_width < 2
    ):
        raise UsageError(f"beam_width must be a whole number >= 2, got {beam_width!r}")
    width = 1 if method == "greedy" else int(beam_width)
    units = game_units(game, unit, keep_first, keep_last)
    k = target_count(target, units)
    held = dict(eval_games or {})
    for name, other in held.items():
        if list(map(str, getattr(other, "players", []))) != list(map(str, game.players)):
            raise UsageError(
                f"held-out game {name!r} has other players than the searched game: make it with "
                "the same players/unit"
            )
    t0 = time.monotonic()
    compute0 = _compute_run(game)
    n = game.n_players
    full = np.ones((1, n), dtype=bool)
    seen = {frozenset(): float(game(full)[0])}
    asked = [full]
    beam: list[tuple[int, ...]] = [()]
    steps: list[Step] = []
    for step in range(1, k + 1):
        candidates: dict[frozenset, tuple[int, ...]] = {}
        for path in beam:
            for u in np.flatnonzero(units.eligible):
                if int(u) not in path:
                    candidates.setdefault(frozenset(path + (int(u),)), path + (int(u),))
        sets = list(candidates)
        masks = np.stack([units.mask(candidates[s], n) for s in sets])
        values = np.asarray(game(masks), dtype=np.float64)
        asked.append(masks)
        seen.update(zip(sets, values.tolist()))
        ranked = sorted(range(len(sets)), key=lambda i: (_key(values[i]), sorted(sets[i])))
        beam = [candidates[sets[i]] for i in ranked[:width]]
        best = beam[0]
        record = Step(
            step=step,
            removed=units.names[best[-1]],
            utility=seen[frozenset(best)],
            evaluated=len(sets),
            candidates={units.names[candidates[s][-1]]: float(v) for s, v in zip(sets, values)}
            if width == 1
            else {},
            beam=[[units.names[u] for u in p] for p in beam],
        )
        steps.append(record)
        if on_step is not None:
            on_step(record)
    order = list(beam[0])
    path_masks = np.stack([units.mask(order[:i], n) for i in range(k + 1)])
    compute = _compute_run(game) - compute0 if compute0 is not None else None
    evaluated = np.concatenate(asked)
    return SearchResult(
        method=method,
        unit=units.kind,
        beam_width=width,
        utility=str(getattr(game, "utility", "v")),
        names=list(units.names),
        removed=order,
        order=[units.names[u] for u in order],
        masks=path_masks,
        search=path_values(game, path_masks, n_boot, seed),
        held_out={name: path_values(g, path_masks, n_boot, seed) for name, g in held.items()},
        steps=steps,
        evaluations=int(len(evaluated)),
        compute=compute,
        compute_naive=naive_compute(game, evaluated),
        seconds=time.monotonic() - t0,
    )


def pruned_model(game: Any, result: SearchResult):
    """The pruned ``transformers`` model of a search on a model's Game (a deep copy): the
    removed sublayers' output projections zeroed, or for a block search the blocks deleted
    (:func:`layerfast.models.pruning.prune_keep`); ``save_pretrained`` works."""
    if not hasattr(game, "player_set"):
        raise UsageError("pruned_model needs the search's lf.Game (a model's), not a plain game")
    keep = game.player_set.expand(result.keep[None])[0]  # model keep-mask [n_sublayers]
    return prune_keep(game.model, keep, "block" if result.unit == "block" else "sublayer")


def _key(value: float) -> float:
    """Sort key of a utility: higher first, NaN last."""
    return float("inf") if np.isnan(value) else -value


def _compute_run(game: Any) -> int | None:
    value = getattr(game, "compute_run", None)
    return None if value is None else int(value)


__all__ = ["METHODS", "SearchResult", "Step", "Units", "prune_search", "pruned_model"]
