"""GPT-2: learned absolute positions; LayerNorm pre-norm blocks ``ln_1``/``attn``, ``ln_2``/``mlp``,
whose output projections are both named ``c_proj``."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .adapter import Adapter, register


@register
class GPT2Adapter(Adapter):
    model_types = ("gpt2",)
    branch_names = ("attn", "mlp")
    output_projection_names: ClassVar[dict[str, tuple[str, ...]]] = {
        "attn": ("c_proj",),
        "mlp": ("c_proj",),
    }
    layer_count_fields = ("n_layer",)

    def layers(self) -> nn.ModuleList:
        return self.base_model().h

    def final_norm(self) -> nn.Module:
        return self.base_model().ln_f

    def attn_branch(
        self, layer: nn.Module, h: torch.Tensor, kwargs: dict[str, Any]
    ) -> torch.Tensor:
        out, _ = layer.attn(layer.ln_1(h), **kwargs)
        return out

    def mlp_branch(self, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        return layer.mlp(layer.ln_2(h))
