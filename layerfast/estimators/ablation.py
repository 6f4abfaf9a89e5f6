"""Single-sublayer ablation sweep: v(N) and v(N \\ {l}) for every player l.

Cornerstones are the players whose removal drops the utility to the chance level: v(N\\{l}) <=
chance + margin. The default margin is two binomial standard errors at chance,
2·sqrt(chance·(1 − chance) / n_items): a drop that far is indistinguishable from guessing. A game
without a task (a plain callable with ``chance``) has no item count: its margin defaults to 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class AblationResult:
    players: list[str]
    full: float  # v(N)
    values: np.ndarray  # float64 [n]: v(N \ {l})
    chance: float | None
    margin: float | None
    utility: str = ""
    info: dict = field(default_factory=dict)

    @property
    def drops(self) -> np.ndarray:
        """v(N) − v(N \\ {l}), float64 [n]: the ablation importance score."""
        return self.full - self.values

    @property
    def cornerstones(self) -> list[str]:
        if self.chance is None or self.margin is None:
            return []
        return [p for p, v in zip(self.players, self.values) if v <= self.chance + self.margin]

    def to_dict(self) -> dict:
        return {
            "players": self.players,
            "full": self.full,
            "values": self.values.tolist(),
            "drops": self.drops.tolist(),
            "chance": self.chance,
            "margin": self.margin,
            "cornerstones": self.cornerstones,
            "utility": self.utility,
            **self.info,
        }

    def rows(self) -> list[dict]:
        return [
            {
                "player": p,
                "utility_without": float(v),
                "drop": float(d),
                "cornerstone": p in self.cornerstones,
            }
            for p, v, d in zip(self.players, self.values, self.drops)
        ]


def ablation_masks(n_players: int) -> np.ndarray:
    """Row 0 is the full coalition; row 1 + l has player l switched off. bool [n + 1, n]."""
    masks = np.ones((n_players + 1, n_players), dtype=bool)
    masks[np.arange(1, n_players + 1), np.arange(n_players)] = False
    return masks


def ablate(game, margin: float | None = None, chance: float | None = None) -> AblationResult:
    """Run the sweep on ``game`` (any callable bool [m, n] -> float [m] with ``n_players``).

    chance: the utility's chance level (defaults to ``game.chance``); margin: see module doc.
    """
    n = game.n_players
    values = np.asarray(game(ablation_masks(n)), dtype=np.float64)
    chance = chance if chance is not None else getattr(game, "chance", None)
    n_items = len(game.task) if hasattr(game, "task") else None
    margin_rule = None if margin is None else "given"
    if margin is None and chance is not None:
        if n_items:
            margin = 2.0 * float(np.sqrt(chance * (1.0 - chance) / n_items))
            margin_rule = "2*sqrt(c(1-c)/n_items)"
        else:
            margin = 0.0
            margin_rule = "0 (no item count)"
    players = list(getattr(game, "players", [f"p{i}" for i in range(n)]))
    return AblationResult(
        players,
        float(values[0]),
        values[1:],
        chance,
        margin,
        utility=getattr(game, "utility", ""),
        info={"n_items": n_items, "margin_rule": margin_rule},
    )
