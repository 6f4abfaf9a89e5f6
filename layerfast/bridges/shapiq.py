"""Interoperability with shapiq (optional dependency, imported lazily).

* :func:`to_shapiq_game` wraps one of our games (callable bool[m, n] -> float[m] with
  ``n_players``) as a ``shapiq.Game`` with *raw* values (no normalisation), so shapiq's
  approximators (``PermutationSamplingSV``, ``KernelSHAP``, ``SVARM``, ...) run on it.
* :func:`from_shapiq_game` turns a ``shapiq.Game`` into one of our games.
* :func:`shapiq_interactions` runs one of shapiq's pairwise interaction approximators (SII or
  k-SII, order 2) on one of our games, to compare with
  :func:`layerfast.estimators.interaction_index.interactions`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..coalitions import as_masks
from ..errors import UsageError
from ..estimators.contract import describe

__all__ = [
    "to_shapiq_game",
    "from_shapiq_game",
    "ShapiqGameAdapter",
    "shapiq_interactions",
    "INTERACTION_APPROXIMATORS",
]

# shapiq's approximators of the order-2 SII / k-SII (shapiq.approximator), and "exact"
# (shapiq.ExactComputer over all 2^n coalitions)
INTERACTION_APPROXIMATORS = (
    "KernelSHAPIQ",
    "InconsistentKernelSHAPIQ",
    "SHAPIQ",
    "SVARMIQ",
    "PermutationSamplingSII",
    "exact",
)

_CLASS = None


def _import_shapiq():
    try:
        import shapiq  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "shapiq is required for layerfast.bridges.shapiq: pip install shapiq"
        ) from e
    return shapiq


def _wrapper_class():
    global _CLASS
    if _CLASS is None:
        shapiq = _import_shapiq()

        class LayerfastShapiqGame(shapiq.Game):
            """A ``shapiq.Game`` whose value function calls a layerfast-style game."""

            def __init__(self, game: Any, **kwargs: Any) -> None:
                self.layerfast_game = game
                about = describe(game)
                super().__init__(
                    n_players=about.n_players,
                    normalize=False,
                    player_names=[str(p) for p in about.players],
                    **kwargs,
                )
                self.normalization_value = 0.0

            def value_function(self, coalitions: np.ndarray) -> np.ndarray:
                masks = as_masks(coalitions, self.n_players)
                return np.asarray(self.layerfast_game(masks), dtype=np.float64).reshape(-1)

        _CLASS = LayerfastShapiqGame
    return _CLASS


def to_shapiq_game(game: Any, **kwargs: Any):
    """Wrap ``game`` as a ``shapiq.Game`` (raw values: normalization_value = 0)."""
    describe(game)  # a TypeError now for a game without n_players
    return _wrapper_class()(game, **kwargs)


class ShapiqGameAdapter:
    """Our game interface over a ``shapiq.Game``.

    ``normalized=False`` (default) returns raw values: shapiq's ``Game.__call__`` subtracts
    ``normalization_value``, which we add back.
    """

    def __init__(self, g: Any, normalized: bool = False) -> None:
        self.shapiq_game = g
        self.n_players = int(g.n_players)
        lookup = getattr(g, "player_name_lookup", None) or {}
        if len(lookup) == self.n_players:
            self.players = [name for name, _ in sorted(lookup.items(), key=lambda kv: kv[1])]
        else:
            self.players = [f"p{i}" for i in range(self.n_players)]
        self.normalized = normalized
        self.chance = None

    def __call__(self, masks: Any) -> np.ndarray:
        masks = as_masks(masks, self.n_players, players=self.players)
        out = np.asarray(self.shapiq_game(masks), dtype=np.float64).reshape(-1)
        if not self.normalized:
            out = out + float(getattr(self.shapiq_game, "normalization_value", 0.0) or 0.0)
        return out


def from_shapiq_game(g: Any, normalized: bool = False) -> ShapiqGameAdapter:
    """Turn a ``shapiq.Game`` into a layerfast-style game (callable with ``n_players``)."""
    return ShapiqGameAdapter(g, normalized=normalized)


def shapiq_interactions(
    game: Any,
    approximator: str = "KernelSHAPIQ",
    budget: int | None = None,
    seed: int = 0,
    index: str = "k-SII",
) -> np.ndarray:
    """shapiq's estimate of the pairwise interactions of ``game``: float64 [n, n], symmetric,
    diagonal NaN (as :class:`~layerfast.estimators.interaction_result.InteractionResult`).

    Args:
        approximator: one of :data:`INTERACTION_APPROXIMATORS` (a ``shapiq.approximator`` class
            built with ``n, max_order=2, index=index, random_state=seed``, or ``"exact"``).
        budget: coalitions the approximator may evaluate (default: min(2^n, 100 n));
            ignored by ``"exact"``.
        index: ``"k-SII"`` or ``"SII"``; at the top order (2 here) the two are equal.
    """
    if approximator not in INTERACTION_APPROXIMATORS:
        raise UsageError(
            f"unknown approximator {approximator!r}; choose one of "
            f"{list(INTERACTION_APPROXIMATORS)}"
        )
    if index not in ("SII", "k-SII"):
        raise UsageError(f"index must be 'SII' or 'k-SII', got {index!r}")
    shapiq = _import_shapiq()
    sg = to_shapiq_game(game)
    n = sg.n_players
    if approximator == "exact":
        iv = shapiq.ExactComputer(n_players=n, game=sg)(index, order=2)
    else:
        cls = getattr(shapiq.approximator, approximator)
        approx = cls(n=n, max_order=2, index=index, random_state=seed)
        iv = approx.approximate(int(budget or min(2**n, 100 * n)), sg)
    values = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(i + 1, n):
            values[i, j] = values[j, i] = float(iv[(i, j)])
    return values
