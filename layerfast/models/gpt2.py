"""GPT-2: learned absolute positions, LayerNorm pre-norm blocks ``ln_1``/``attn``, ``ln_2``/``mlp``."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .adapter import Adapter, register


@register
class GPT2Adapter(Adapter):
    model_types = ("gpt2",)

    def layers(self) -> nn.ModuleList:
        return self.base_model().h

    def final_norm(self) -> nn.Module:
        return self.base_model().ln_f

    def uses_moe(self, layer: nn.Module) -> bool:
        return False

    def attn_branch(self, layer: nn.Module, h: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        out, _ = layer.attn(layer.ln_1(h), **kwargs)
        return out

    def mlp_branch(self, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        return layer.mlp(layer.ln_2(h))
