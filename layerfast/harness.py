"""layerfast inside lm-evaluation-harness: the public name of the bridge in
:mod:`layerfast.bridges.lm_eval_model` (:class:`LayerfastLM`, the harness model ``"layerfast"``:
one coalition of sublayers, scored by layerfast's executor).

    import layerfast.harness, lm_eval
    layerfast.harness.register()  # once per process; `layerfast eval` does it
    lm_eval.simple_evaluate(
        model="layerfast",
        model_args="pretrained=smollm2-135m,remove=attn3,mlp5",
        tasks=["arc_easy"],
    )

This module imports the harness only when ``LayerfastLM`` is used.
"""

from __future__ import annotations

from typing import Any

from .bridges.lm_eval_registration import MODEL_NAME, register

__all__ = ["MODEL_NAME", "register"]  # and LayerfastLM, loaded on first use


def __getattr__(name: str) -> Any:
    if name == "LayerfastLM":
        from .bridges.lm_eval_model import LayerfastLM

        return LayerfastLM
    raise AttributeError(f"module 'layerfast.harness' has no attribute {name!r}")
