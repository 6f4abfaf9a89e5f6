"""Pre-norm decoders: ``h = h + attn(norm1(h)); h = h + mlp(norm2(h))``.

Llama 2/3, SmolLM2, TinyLlama, Mistral, Qwen2, Qwen3, Phi-3, and the MoE models Mixtral, Qwen2-MoE
and OLMoE (their sparse MoE block is the ``mlp`` player). In transformers 5 they all name their
parts ``self_attn``, ``mlp``, ``input_layernorm`` and ``post_attention_layernorm``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .adapter import Adapter, register


@register
class PreNormAdapter(Adapter):
    model_types = ("llama", "mistral", "qwen2", "qwen3", "phi3", "mixtral", "qwen2_moe", "olmoe",
                   "qwen3_moe")

    def attn_branch(self, layer: nn.Module, h: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        out, _ = layer.self_attn(hidden_states=layer.input_layernorm(h), **kwargs)
        return out

    def mlp_branch(self, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        out = layer.mlp(layer.post_attention_layernorm(h))
        return out[0] if isinstance(out, tuple) else out
