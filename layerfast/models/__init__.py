"""Stage 1 of models -> tasks -> evaluation -> estimators -> report: models, any supported HF
causal LM as an ordered list of skippable sublayers (the players).

``adapter`` (the contract and registry: the one place that knows an architecture's module and
config names) with one adapter per family (``prenorm``, ``sandwich``, ``gpt2``, ``gpt_neox``);
``sublayer_model`` (the forward loop); ``inputs`` (token lists -> model inputs); ``loading``
(``lf.load``), ``hub`` (model hub ids through the HF cache), ``folders`` (the checks of a model
folder), ``placement`` (device maps: the one module that knows accelerate), ``device_map`` (a map's
keys checked against the model), ``digest`` (the
weights' hash), ``saving``; ``pruning`` (a pruned ``transformers`` model).
"""

from . import gpt2, gpt_neox, prenorm, sandwich  # noqa: F401  (register the adapters)
from .adapter import PLAYER_KINDS, Adapter, adapter_for, registered_adapters, supported_model_types
from .loading import DEFAULT_MODEL, PACKAGED, copy_as, load, parse_dtype
from .sublayer_model import LayerInputs, SublayerModel

__all__ = [
    "Adapter",
    "adapter_for",
    "registered_adapters",
    "supported_model_types",
    "PLAYER_KINDS",
    "load",
    "copy_as",
    "parse_dtype",
    "DEFAULT_MODEL",
    "PACKAGED",
    "LayerInputs",
    "SublayerModel",
]
