"""GPT-NeoX / Pythia. With ``use_parallel_residual`` (the default) a block computes
``x + attn(ln1(x)) + mlp(ln2(x))``: both branches read the block input x, and switching a player
off drops its term. Without it the block is an ordinary sequential pre-norm block."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .adapter import Adapter, register


@register
class GPTNeoXAdapter(Adapter):
    model_types = ("gpt_neox",)
    branch_names = ("attention", "mlp")
    output_projection_names: ClassVar[dict[str, tuple[str, ...]]] = {
        "attn": ("dense",),
        "mlp": ("dense_4h_to_h",),
    }

    def __init__(self, hf_model: nn.Module):
        super().__init__(hf_model)
        self.parallel_residual = bool(getattr(self.config, "use_parallel_residual", True))

    def final_norm(self) -> nn.Module:
        return self.base_model().final_layer_norm

    def attn_branch(
        self, layer: nn.Module, h: torch.Tensor, kwargs: dict[str, Any]
    ) -> torch.Tensor:
        out, _ = layer.attention(layer.input_layernorm(h), **kwargs)
        return layer.post_attention_dropout(out)

    def mlp_branch(self, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        return layer.post_mlp_dropout(layer.mlp(layer.post_attention_layernorm(h)))
