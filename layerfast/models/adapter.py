"""The contract between a Hugging Face architecture and the sublayer forward loop.

An adapter knows, for one family of architectures, where the decoder blocks, the final norm and
the LM head live, how to compute each sublayer's *residual branch* ``f(norm(h))``, which modules
of a block are its two branches and which of their parameters are the output projections (zeroing
those removes a branch from the plain ``transformers`` model), and which config fields count the
blocks. This is the only place that knows module or config names of an architecture; the forward
loop (:class:`layerfast.models.sublayer_model.SublayerModel`) and pruning ask the adapter.

The residual state between sublayers is a tensor ``h`` of shape [B, T, d] for sequential-residual
models. Parallel-residual models (GPT-J/NeoX) keep a :class:`ParallelState` instead, because both
branches of a block read the block input.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import UsageError

# The sublayers (players) of one decoder block, in execution order.
PLAYER_KINDS = ("attn", "mlp")

# Keyword arguments a decoder layer receives that a branch must not see: we run without a KV cache.
_CACHE_KWARGS = frozenset(
    {
        "cache",
        "past_key_values",
        "layer_past",
        "past_key_value",
        "use_cache",
        "encoder_hidden_states",
        "encoder_attention_mask",
        "output_attentions",
    }
)


# The names transformers has given the KV-cache argument of an attention module, newest first.
CACHE_ARGUMENTS = ("cache", "past_key_values", "past_key_value", "layer_past")
_CACHE_ARGUMENT_OF: dict[type, str] = {}  # attention module class -> its cache argument


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
    # Attribute names, on a decoder block, of its (attention, MLP) branch modules.
    branch_names: ClassVar[tuple[str, ...]] = ()
    # Per player kind, the names of the output projections inside that branch module: a parameter
    # whose dotted name has one of these as a part is zeroed to remove the branch (so an MoE
    # block's every expert ``down_proj`` and its shared expert's are all hit). What follows the
    # projection in the branch must map 0 to 0 (true of Gemma's RMS post-norms and of a gated
    # shared expert).
    output_projection_names: ClassVar[dict[str, tuple[str, ...]]] = {}
    # Config fields holding the number of blocks, and per-block lists to subset when pruning.
    layer_count_fields: ClassVar[tuple[str, ...]] = ("num_hidden_layers",)
    per_layer_fields: ClassVar[tuple[str, ...]] = ("layer_types",)

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

    def branch_modules(self, layer: nn.Module) -> tuple[nn.Module, nn.Module]:
        """(attention module, MLP module) of decoder block ``layer``."""
        attn, mlp = self.branch_names
        return getattr(layer, attn), getattr(layer, mlp)

    def output_projections(self, layer: nn.Module, kind: str) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of every weight and bias whose zeroing removes branch ``kind``
        ('attn' or 'mlp') of ``layer``, names relative to the branch module."""
        if kind not in PLAYER_KINDS:
            raise UsageError(f"unknown sublayer kind {kind!r}; choose from {list(PLAYER_KINDS)}")
        module = self.branch_modules(layer)[PLAYER_KINDS.index(kind)]
        names = self.output_projection_names[kind]
        found = [
            (n, p)
            for n, p in module.named_parameters()
            if any(part in names for part in n.split("."))
        ]
        if not found:
            raise ValueError(
                f"{type(self).__name__}: no output projection ({', '.join(names)}) "
                f"in the {kind} branch {type(module).__name__}"
            )
        return found

    def uses_moe(self, layer: nn.Module) -> bool:
        """True when the layer's MLP is a mixture of experts (it is still the ``mlp`` player)."""
        return hasattr(self.branch_modules(layer)[1], "experts")

    # --- structural edits (pruning) ------------------------------------------------------------
    def keep_layers(self, keep: Sequence[int]) -> None:
        """Keep only decoder blocks ``keep`` (old indices, ascending), in place; renumber the
        config's block count and per-block lists and every module's ``layer_idx``, so the KV
        cache of the edited model lines up."""
        layers = self.layers()
        n_old = len(layers)
        kept = nn.ModuleList([layers[i] for i in keep])
        parent = self.base_model()
        name = next(n for n, m in parent.named_children() if m is layers)
        setattr(parent, name, kept)
        text_config = getattr(self.config, "text_config", self.config)
        for cfg in {id(c): c for c in (self.config, text_config)}.values():
            for attr in self.layer_count_fields:
                if hasattr(cfg, attr):
                    setattr(cfg, attr, len(keep))
            for attr in self.per_layer_fields:
                values = getattr(cfg, attr, None)
                if isinstance(values, list) and len(values) == n_old:
                    setattr(cfg, attr, [values[i] for i in keep])
            self.renumber_config(cfg, [layers[i] for i in keep])
        for new_idx, layer in enumerate(kept):
            for module in layer.modules():
                if hasattr(module, "layer_idx"):
                    module.layer_idx = new_idx

    def renumber_config(self, config: Any, kept: list[nn.Module]) -> None:
        """Family-specific config fields that refer to blocks by index; ``kept``: the blocks kept,
        in their new order. Default: none."""

    # --- config switches the evaluation stage reads (through here only) ------------------------
    @property
    def attention_implementation(self) -> str:
        """The attention kernel transformers runs ("eager", "sdpa", "flash_attention_2", ...)."""
        return str(attention_implementation(self.config))

    @property
    def logit_softcap(self) -> float | None:
        """Gemma's ``final_logit_softcapping`` (logits -> cap * tanh(logits / cap)), or None."""
        return getattr(self.config, "final_logit_softcapping", None) or None

    @property
    def sliding_window(self) -> int | None:
        """The sliding window of local attention layers in tokens, or None."""
        text = getattr(self.config, "text_config", None) or self.config  # Gemma 3 image-text
        return (
            getattr(self.config, "sliding_window", None)
            or getattr(text, "sliding_window", None)
            or None
        )

    # --- the two branches ----------------------------------------------------------------------
    def attn_branch(
        self, layer: nn.Module, h: torch.Tensor, kwargs: dict[str, Any]
    ) -> torch.Tensor:
        """f_attn(h): [B, T, d] -> [B, T, d], the term added to the residual stream."""
        raise NotImplementedError

    def mlp_branch(self, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        """f_mlp(h): [B, T, d] -> [B, T, d], the term added to the residual stream."""
        raise NotImplementedError

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM head on final-normed hidden states: [..., d] -> [..., V]."""
        logits = self.lm_head()(hidden)
        cap = self.logit_softcap
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    # --- decoding with a KV cache (:mod:`layerfast.models.generation`) ---------------------------
    def cache_argument(self, layer: nn.Module) -> str:
        """The name under which block ``layer``'s attention module takes its KV cache (transformers
        has renamed it: ``cache``, ``past_key_values``, ``past_key_value``, ``layer_past``)."""
        attn = self.branch_modules(layer)[0]
        found = _CACHE_ARGUMENT_OF.get(type(attn))
        if found is not None:
            return found
        params = inspect.signature(type(attn).forward).parameters
        for name in CACHE_ARGUMENTS:
            if name in params:
                _CACHE_ARGUMENT_OF[type(attn)] = name
                return name
        raise UsageError(
            f"{type(attn).__name__}.forward takes no KV cache argument "
            f"({', '.join(CACHE_ARGUMENTS)})"
            "; layerfast cannot decode with this transformers version"
        )

    @staticmethod
    def query_rows(kwargs: dict[str, Any], start: int) -> dict[str, Any]:
        """A block's branch arguments, recorded for queries 0..T-1, cut to queries start..T-1
        (the keys stay 0..T-1): the 4D mask's query rows [B, 1, T, T] -> [B, 1, T - start, T],
        rotary cos/sin [B, T, dh] -> [B, T - start, dh], position ids [B, T] -> [B, T - start].
        A 2D padding mask (flash attention) is over keys and stays; a None mask (the kernel's
        own causal mask) stays, which is exact for one query row."""
        if start == 0:
            return dict(kwargs)
        out: dict[str, Any] = {}
        for name, value in kwargs.items():
            if name == "attention_mask" and isinstance(value, torch.Tensor) and value.ndim == 4:
                value = value[:, :, start:, :]
            elif name == "position_embeddings" and isinstance(value, tuple):
                value = tuple(t[..., start:, :] for t in value)
            elif name == "position_ids" and isinstance(value, torch.Tensor):
                value = value[..., start:]
            elif name == "cache_position" and isinstance(value, torch.Tensor):
                value = value[start:]
            elif (
                name == "attention_mask"
                and value is not None
                and not isinstance(value, torch.Tensor)
            ):
                raise UsageError(
                    f"attention mask of type {type(value).__name__} cannot be cut to new queries;"
                    " load the model with attn_implementation='sdpa' or 'eager' to generate"
                )
            out[name] = value
        return out

    # --- helpers -------------------------------------------------------------------------------
    @staticmethod
    def branch_kwargs(
        layer: nn.Module, hidden: torch.Tensor, args: tuple, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
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
        return {
            k: v for k, v in named.items() if k not in _CACHE_KWARGS and k not in ("self", first)
        }


def attention_implementation(config: Any) -> str | None:
    """The attention kernel a ``transformers`` config selects, None when it names none (what
    :attr:`Adapter.attention_implementation` reads; also for a bare config, as sizing has)."""
    return getattr(config, "_attn_implementation", None)


_REGISTRY: dict[str, type[Adapter]] = {}


def register(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: make ``cls`` the adapter of each of its ``model_types``."""
    for model_type in cls.model_types:
        _REGISTRY[model_type] = cls
    return cls


def supported_model_types() -> list[str]:
    return sorted(_REGISTRY)


def registered_adapters() -> dict[str, type[Adapter]]:
    """model_type -> adapter class, for every supported architecture."""
    return dict(_REGISTRY)


def adapter_for(hf_model: nn.Module) -> Adapter:
    """The adapter for ``hf_model``'s architecture, or a UsageError naming the supported ones."""
    model_type = getattr(hf_model.config, "model_type", None)
    cls = _REGISTRY.get(model_type)
    if cls is None:
        raise UsageError(
            f"unsupported architecture {model_type!r} ({type(hf_model).__name__}); layerfast "
            f"supports: {', '.join(supported_model_types())}"
        )
    return cls(hf_model)
