"""layerfast inside lm-evaluation-harness: :class:`~layerfast.harness.lm.LayerfastLM`, the
harness model ``"layerfast"`` (one coalition of sublayers, scored by layerfast's executor).

    import layerfast, lm_eval
    lm_eval.simple_evaluate(
        model="layerfast",
        model_args="pretrained=smollm2-135m,remove=attn3,mlp5",
        tasks=["arc_easy"],
    )

``import layerfast`` registers the name with the harness (:mod:`layerfast.harness.registration`)
without importing it; this package imports the harness only when ``LayerfastLM`` is used.
"""

from __future__ import annotations

from typing import Any

from .registration import MODEL_NAME, register

__all__ = ["LayerfastLM", "MODEL_NAME", "register"]


def __getattr__(name: str) -> Any:
    if name == "LayerfastLM":
        from .lm import LayerfastLM

        return LayerfastLM
    raise AttributeError(f"module 'layerfast.harness' has no attribute {name!r}")
