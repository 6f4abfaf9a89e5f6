"""Pre-norm decoders: ``h = h + attn(norm1(h)); h = h + mlp(norm2(h))``.

Llama 2/3, SmolLM2, TinyLlama, Mistral, Qwen2, Qwen3, Phi-3, and the MoE models Mixtral, Qwen2-MoE
and OLMoE (their sparse MoE block is the ``mlp`` player). In transformers 5 they all name their
parts ``self_attn``, ``mlp``, ``input_layernorm`` and ``post_attention_layernorm``; the output
projections are ``o_proj`` and ``down_proj`` (an MoE block has one ``down_proj`` per expert, plus
its shared expert's on Qwen2-MoE).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .adapter import Adapter, register


@register
class PreNormAdapter(Adapter):
    model_types = (
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "phi3",
        "mixtral",
        "qwen2_moe",
        "olmoe",
        "qwen3_moe",
    )
    branch_names = ("self_attn", "mlp")
    output_projection_names: ClassVar[dict[str, tuple[str, ...]]] = {
        "attn": ("o_proj",),
        "mlp": ("down_proj",),
    }

    def renumber_config(self, config: Any, kept: list[nn.Module]) -> None:
        if getattr(config, "mlp_only_layers", None) is not None:
            # Qwen-MoE marks dense layers by index (and by decoder_sparse_step): spell out which
            # of the kept blocks are dense, from the modules themselves.
            config.mlp_only_layers = [i for i, layer in enumerate(kept) if not self.uses_moe(layer)]
            if hasattr(config, "decoder_sparse_step"):
                config.decoder_sparse_step = 1

    def attn_branch(
        self, layer: nn.Module, h: torch.Tensor, kwargs: dict[str, Any]
    ) -> torch.Tensor:
        out, _ = layer.self_attn(hidden_states=layer.input_layernorm(h), **kwargs)
        return out

    def mlp_branch(self, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        out = layer.mlp(layer.post_attention_layernorm(h))
        return out[0] if isinstance(out, tuple) else out
