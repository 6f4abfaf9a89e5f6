"""The result of a pruning search (:func:`~.search.prune_search`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class Step:
    """One step: the unit removed, v after it, candidate sets evaluated, and (greedy) every
    candidate unit's v / (beam) the kept sets."""

    step: int
    removed: str
    utility: float
    evaluated: int
    candidates: dict[str, float] = field(default_factory=dict)
    beam: list[list[str]] = field(default_factory=list)


@dataclass
class SearchResult:
    """What :func:`~.search.prune_search` found.

    order: unit names in removal order (k of them); removed: their unit indices; names: every
    unit's name; masks: the game's keep-masks bool [k + 1, n_players] along the path (row 0 the
    full model, row i after i removals); search: the path scored on the searched game
    (:func:`~.path.path_values`: values, lo, hi, retained, ...); held_out: the same for each
    held-out game; steps: :class:`Step` per removal; evaluations: coalitions asked of the game;
    compute: token-sublayer evaluations its runner ran for them (None for a plain callable);
    compute_naive: what a naive executor would run for the same coalitions; seconds: wall time.
    """

    method: str
    unit: str
    beam_width: int
    utility: str
    names: list[str]
    removed: list[int]
    order: list[str]
    masks: np.ndarray
    search: dict
    held_out: dict[str, dict]
    steps: list[Step]
    evaluations: int
    compute: int | None
    compute_naive: int | None
    seconds: float

    @property
    def utilities(self) -> np.ndarray:
        """v after 0..k removals, float64 [k + 1] (0: the full model)."""
        return np.asarray(self.search["values"], dtype=np.float64)

    @property
    def lo(self) -> np.ndarray | None:
        return None if self.search["lo"] is None else np.asarray(self.search["lo"])

    @property
    def hi(self) -> np.ndarray | None:
        return None if self.search["hi"] is None else np.asarray(self.search["hi"])

    @property
    def keep(self) -> np.ndarray:
        """The pruned model's keep-mask over the game's players, bool [n_players]."""
        return self.masks[-1]

    def to_dict(self) -> dict:
        """JSON-ready."""
        out = asdict(self)
        out["masks"] = self.masks.astype(int).tolist()
        return out

    def __repr__(self) -> str:
        u = self.utilities
        return (
            f"SearchResult({self.method}, unit={self.unit}, removed {len(self.order)}: "
            f"{', '.join(self.order)}; {self.utility} {u[0]:.4g} -> {u[-1]:.4g}; "
            f"{self.evaluations} evaluations)"
        )
