"""layerfast: fast, exact layer-importance analysis of transformer language models.

    import layerfast as lf
    model = lf.load("smollm2-135m")
    task = lf.tasks.load("capitals", limit=100)
    game = lf.Game(model, task, utility="acc_norm")
    abl = lf.ablate(game)
    res = lf.shapley(game, method="proximity", window=3)

Importing the package is cheap: the model, task and estimator modules load on first use.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Bound eagerly: importing the subpackage layerfast.shapley would otherwise set the package
# attribute `shapley` to the module, shadowing the function (numpy-only, so cheap).
from .shapley import ShapleyResult, shapley  # noqa: E402

_LAZY = {
    "load": ("layerfast.models", "load"),
    "SublayerModel": ("layerfast.models", "SublayerModel"),
    "Task": ("layerfast.tasks", "Task"),
    "Game": ("layerfast.game", "Game"),
    "ablate": ("layerfast.ablation", "ablate"),
    "AblationResult": ("layerfast.ablation", "AblationResult"),
    "perplexity": ("layerfast.perplexity", "perplexity"),
    "stats": ("layerfast.activation_stats", "stats"),
    "avss": ("layerfast.activation_stats", "avss"),
    "eavss": ("layerfast.eavss_scores", "eavss"),
    "prune": ("layerfast.pruning", "prune"),
}
_SUBMODULES = {"tasks", "models", "assets", "shapley", "utility", "executor", "cache", "report"}

__all__ = sorted(_LAZY) + ["shapley", "ShapleyResult"] + sorted(_SUBMODULES - {"shapley"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"layerfast.{name}")
    else:
        raise AttributeError(f"module 'layerfast' has no attribute {name!r}")
    globals()[name] = value
    return value
