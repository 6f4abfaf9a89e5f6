"""Register layerfast as the lm-evaluation-harness model ``"layerfast"``, explicitly:
``layerfast.harness.register()`` (``layerfast eval`` calls it). ``import layerfast`` neither
imports the harness nor touches its registry.

The harness finds models only in its registry (``lm_eval.api.registry.model_registry``; 0.4.13
reads no entry points). What is registered is a placeholder ("module:attribute" string, the
harness's own lazy form), so the model class (and torch) load only when the harness asks for
``"layerfast"``. The harness fills its registry with its own models only when the registry is
empty at the first ``get_model`` call, so :func:`register` imports ``lm_eval.models`` (a table of
placeholders) first: registering ours alone would hide ``"hf"`` and the other built-in names.
"""

from __future__ import annotations

MODEL_NAME = "layerfast"
TARGET = "layerfast.bridges.lm_eval_model:LayerfastLM"


def register() -> None:
    """Register ``"layerfast"`` in the harness's model registry (imports lm_eval); idempotent,
    and harmless before or after the harness's own imports."""
    import lm_eval.models  # noqa: F401  (the built-in names first, see the module docstring)
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=TARGET)
