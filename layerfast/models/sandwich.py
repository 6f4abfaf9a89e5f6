"""Sandwich-norm decoders (Gemma 2/3): each branch is ``post_norm(f(pre_norm(h)))``.

The post-norm belongs to the branch, so switching a player off drops the post-normed term.
Gemma's embedding scaling happens inside its embedding module, before the first sublayer, and
its final logit soft-capping is applied by :meth:`Adapter.logits`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .adapter import Adapter, register


@register
class SandwichNormAdapter(Adapter):
    model_types = ("gemma2", "gemma3_text", "gemma3")
    branch_names = ("self_attn", "mlp")
    # Zeroing these zeroes the branch: the RMS post-norm maps 0 to 0.
    output_projection_names: ClassVar[dict[str, tuple[str, ...]]] = {
        "attn": ("o_proj",),
        "mlp": ("down_proj",),
    }

    def base_model(self) -> nn.Module:
        base = self.hf_model.base_model
        return getattr(base, "language_model", base)

    def attn_branch(
        self, layer: nn.Module, h: torch.Tensor, kwargs: dict[str, Any]
    ) -> torch.Tensor:
        out, _ = layer.self_attn(hidden_states=layer.input_layernorm(h), **kwargs)
        return layer.post_attention_layernorm(out)

    def mlp_branch(self, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        out = layer.mlp(layer.pre_feedforward_layernorm(h))
        return layer.post_feedforward_layernorm(out)
