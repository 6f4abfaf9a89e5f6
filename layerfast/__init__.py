"""layerfast: fast, exact layer-importance analysis of transformer language models.

    import layerfast as lf
    model = lf.load("smollm2-135m")
    task = lf.tasks.load("capitals", limit=100)
    game = lf.Game(model, task, utility="acc_norm")
    abl = lf.ablate(game)
    res = lf.shapley(game, method="proximity", window=3)

Importing the package is cheap: the model, task and estimator modules load on first use. The
stages, in the order a coalition travels: models -> tasks -> evaluation -> estimators -> report
(side paths: activations, hallucination, pruning, bench; bridges to lm-evaluation-harness and
shapiq; the command line in cli). ``layerfast.harness.register()`` makes
``lm_eval.simple_evaluate(model="layerfast", ...)`` work.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_LAZY = {
    "load": ("layerfast.models", "load"),
    "SublayerModel": ("layerfast.models", "SublayerModel"),
    "Task": ("layerfast.tasks", "Task"),
    "Game": ("layerfast.evaluation.game", "Game"),
    "ablate": ("layerfast.estimators.ablation", "ablate"),
    "AblationResult": ("layerfast.estimators.ablation", "AblationResult"),
    "perplexity": ("layerfast.evaluation.perplexity", "perplexity"),
    "stats": ("layerfast.activations.collect", "stats"),
    "avss": ("layerfast.activations.collect", "avss"),
    "eavss": ("layerfast.hallucination.eavss", "eavss"),
    "prune": ("layerfast.models.pruning", "prune"),
    "prune_search": ("layerfast.pruning.search", "prune_search"),
    "pruned_model": ("layerfast.pruning.search", "pruned_model"),
    "shapley": ("layerfast.estimators", "shapley"),
    "ShapleyResult": ("layerfast.estimators", "ShapleyResult"),
    "interactions": ("layerfast.estimators", "interactions"),
    "InteractionResult": ("layerfast.estimators", "InteractionResult"),
}
# Stage packages, and the module names of 0.1 kept as aliases of their new homes.
_SUBMODULES = {
    "tasks": "layerfast.tasks",
    "models": "layerfast.models",
    "assets": "layerfast.assets",
    "evaluation": "layerfast.evaluation",
    "estimators": "layerfast.estimators",
    "activations": "layerfast.activations",
    "hallucination": "layerfast.hallucination",
    "report": "layerfast.report",
    "pruning": "layerfast.pruning",
    "utility": "layerfast.tasks.scoring",
    "executor": "layerfast.evaluation.naive_executor",
    "cache": "layerfast.evaluation.cache",
}

__all__ = sorted(_LAZY) + sorted(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
    elif name in _SUBMODULES:
        value = importlib.import_module(_SUBMODULES[name])
    else:
        raise AttributeError(f"module 'layerfast' has no attribute {name!r}")
    globals()[name] = value
    return value
