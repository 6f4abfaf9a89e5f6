"""Model adapters: any supported HF causal LM as an ordered list of skippable sublayers."""

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
