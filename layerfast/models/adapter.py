"""The contract between a Hugging Face architecture and the sublayer forward loop.

An adapter knows, for one family of architectures, where the decoder blocks, the final norm and
the LM head live, and how to compute each sublayer's *residual branch* ``f(norm(h))``. The forward
loop itself lives in :class:`layerfast.models.sublayer_model.SublayerModel`; adapters never loop.

The residual state between sublayers is a tensor ``h`` of shape [B, T, d] for sequential-residual
models. Parallel-residual models (GPT-J/NeoX) keep a :class:`ParallelState` instead, because both
branches of a block read the block input.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

# Keyword arguments a decoder layer receives that a branch must not see: we run without a KV cache.
_CACHE_KWARGS = frozenset({"cache", "past_key_values", "layer_past", "past_key_value", "use_cache",
                           "encoder_hidden_states", "encoder_attention_mask", "output_attentions"})


@dataclass
class ParallelState:
    """Residual state inside a parallel-residual block.

    x: [B, T, d] the block input (read by both branches).
    attn_out: [B, T, d] the attention branch output, or None when attention is off or not yet run.
    """

    x: torch.Tensor
    attn_out: torch.Tensor | None = None


class Adapter:
    """Base class: one subclass per architecture family, registered by ``model_type``."""

    model_types: ClassVar[tuple[str, ...]] = ()
    parallel_residual: ClassVar[bool] = False

    def __init__(self, hf_model: nn.Module):
        self.hf_model = hf_model
        self.config = hf_model.config

    # --- where things live -------------------------------------------------------------------
    def base_model(self) -> nn.Module:
        """The decoder stack without the LM head (e.g. ``LlamaModel``)."""
        return self.hf_model.base_model

    def layers(self) -> nn.ModuleList:
        return self.base_model().layers

    def final_norm(self) -> nn.Module:
        return self.base_model().norm

    def lm_head(self) -> nn.Module:
        return self.hf_model.get_output_embeddings()

    def uses_moe(self, layer: nn.Module) -> bool:
        """True when the layer's MLP is a mixture of experts (it is still the ``mlp`` player)."""
        return hasattr(layer.mlp, "experts")

    # --- the two branches ----------------------------------------------------------------------
    def attn_branch(self, layer: nn.Module, h: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        """f_attn(h): [B, T, d] -> [B, T, d], the term added to the residual stream."""
        raise NotImplementedError

    def mlp_branch(self, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        """f_mlp(h): [B, T, d] -> [B, T, d], the term added to the residual stream."""
        raise NotImplementedError

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM head on final-normed hidden states: [..., d] -> [..., V]."""
        logits = self.lm_head()(hidden)
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    # --- helpers -------------------------------------------------------------------------------
    @staticmethod
    def branch_kwargs(layer: nn.Module, hidden: torch.Tensor, args: tuple,
                      kwargs: dict[str, Any]) -> dict[str, Any]:
        """Name the arguments a decoder layer was called with, minus the hidden state and cache."""
        signature = inspect.signature(type(layer).forward)
        bound = signature.bind(layer, hidden, *args, **kwargs)
        named: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                named.update(value)
            elif kind is not inspect.Parameter.VAR_POSITIONAL:
                named[name] = value
        first = list(signature.parameters)[1]  # the hidden-state parameter, after self
        return {k: v for k, v in named.items()
                if k not in _CACHE_KWARGS and k not in ("self", first)}


_REGISTRY: dict[str, type[Adapter]] = {}


def register(cls: type[Adapter]) -> type[Adapter]:
    for model_type in cls.model_types:
        _REGISTRY[model_type] = cls
    return cls


def supported_model_types() -> list[str]:
    return sorted(_REGISTRY)


def adapter_for(hf_model: nn.Module) -> Adapter:
    """The adapter for ``hf_model``'s architecture, or a ValueError naming the supported ones."""
    model_type = getattr(hf_model.config, "model_type", None)
    cls = _REGISTRY.get(model_type)
    if cls is None:
        raise ValueError(
            f"unsupported architecture {model_type!r} ({type(hf_model).__name__}); layerfast "
            f"supports: {', '.join(supported_model_types())}"
        )
    return cls(hf_model)
