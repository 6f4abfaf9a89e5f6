"""A Hugging Face causal LM seen as an ordered list of skippable sublayers.

Players are ``attn0, mlp0, attn1, mlp1, ...`` in execution order. Switching a player off drops its
residual branch (``h = h + f(norm(h))`` becomes ``h = h``); the skip connection stays. The forward
loop is written out here so that an executor can stop after any sublayer and resume from the
residual state it kept.

How the inputs of the decoder layers are obtained: :meth:`SublayerModel.prepare` runs the HF decoder
stack once with every decoder layer replaced by a recorder that returns its input unchanged. That
yields the embeddings (with whatever scaling, positions and dropout the architecture applies) and,
for every layer, the exact keyword arguments HF would pass it (attention mask for its attention
type, rotary cos/sin, position ids). The cost is the embedding lookup and mask construction only.

Models split over devices or offloaded to CPU/disk (``lf.load(..., device_map=...)``): each block's
arguments are moved once, in :meth:`SublayerModel.prepare`, to the device the block runs on, and
:meth:`SublayerModel.step` moves the residual state there before the branch; the branch's modules
load their offloaded weights when called. Where that is lives in :mod:`layerfast.models.placement`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..coalitions import as_mask
from ..errors import UsageError
from ..players import sublayer_players
from . import generation, placement
from .adapter import PLAYER_KINDS, Adapter, ParallelState, adapter_for

State = Any  # torch.Tensor [B, T, d] or ParallelState


@dataclass
class LayerInputs:
    """What one batch needs besides the residual state, shared by every coalition.

    embeddings: [B, T, d] the residual stream entering block 0.
    layer_kwargs: per block, the keyword arguments of its attention branch.
    attention_mask: [B, T] 1 for real tokens, 0 for padding (or the 4D mask it was given).
    """

    embeddings: torch.Tensor
    layer_kwargs: list[dict[str, Any]]
    attention_mask: torch.Tensor


class SublayerModel(nn.Module):
    """Any supported HF causal LM with a keep-mask over its sublayers.

    Attributes:
        players: ['attn0', 'mlp0', 'attn1', ...] in execution order (MoE blocks are 'mlpN'), as
            :class:`~layerfast.players.Player` (a name that knows its block and kind).
        hf_model: the wrapped ``transformers`` model (weights shared, not copied).
        tokenizer: its tokenizer, or None.
        load_spec: how ``lf.load`` built it (model, dtype, device, device_map, max_memory,
            offload_folder, trust_remote_code: plain picklable values, so another process can
            load the same model), or None for a model wrapped otherwise.
    """

    def __init__(self, hf_model: nn.Module, tokenizer: Any = None, name: str | None = None):
        super().__init__()
        self.hf_model = hf_model.eval()
        self.tokenizer = tokenizer
        self.adapter: Adapter = adapter_for(hf_model)
        self.name = name or getattr(hf_model.config, "_name_or_path", "") or type(hf_model).__name__
        self.blocks = self.adapter.layers()
        self.n_blocks = len(self.blocks)
        self.players = sublayer_players(self.n_blocks, self.PLAYER_KINDS)
        self.n_players = len(self.players)
        self._weights_digest: tuple | None = None  # (token, sha256): see fingerprint()
        self._digest_store: dict | None = None  # where lf.load stores that digest
        self.load_spec: dict[str, Any] | None = None  # set by lf.load

    # --- properties --------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf_model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """The input device: where the embeddings are computed (never ``meta``, also when the
        model is offloaded); results are returned here."""
        return placement.input_device(self.hf_model)

    @property
    def config(self):
        return self.hf_model.config

    # --- players and blocks --------------------------------------------------------------------
    PLAYER_KINDS = PLAYER_KINDS  # the sublayers of one block, in execution order: attn, mlp

    def players_of(self, block: int) -> list[int]:
        """Indices into ``players`` of block ``block``'s sublayers: [attn, mlp]."""
        if not 0 <= block < self.n_blocks:
            raise UsageError(f"block {block} out of range: the model has {self.n_blocks} blocks")
        per = len(self.PLAYER_KINDS)
        return list(range(per * block, per * block + per))

    def block_of(self, player: int) -> tuple[int, str]:
        """(block index, kind) of player index ``player``, e.g. 3 -> (1, 'mlp')."""
        if not 0 <= player < self.n_players:
            raise UsageError(
                f"player {player} out of range: the model has {self.n_players} "
                f"players ({self.players[0]}..{self.players[-1]})"
            )
        return self.players[player].block, self.players[player].kind

    def block_mask(self, removed_blocks: Sequence[int]) -> np.ndarray:
        """Keep-mask bool [n_players] with every sublayer of ``removed_blocks`` off."""
        keep = np.ones(self.n_players, dtype=bool)
        for block in removed_blocks:
            keep[self.players_of(int(block))] = False
        return keep

    # --- validation ----------------------------------------------------------------------------
    def keep_mask(self, keep: Sequence[bool] | np.ndarray | torch.Tensor | None) -> list[bool]:
        """Validate a keep-mask: bool [n_players], True = kept; None means all kept.

        The rules are :func:`layerfast.coalitions.as_mask` (bool or 0/1, exactly 1-D).
        """
        if keep is None:
            return [True] * self.n_players
        arr = keep.cpu() if isinstance(keep, torch.Tensor) else keep
        return as_mask(arr, self.n_players, players=self.players, name="keep").tolist()

    # --- the forward loop, in pieces ------------------------------------------------------------
    @torch.no_grad()
    def prepare(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> LayerInputs:
        """Embeddings [B, T, d] and each block's branch arguments for input_ids [B, T].

        attention_mask: [B, T] (1 = real token), or a model-ready 4D mask [B, 1, T, T];
        position_ids: [B, T], default 0..T-1.
        """
        if input_ids.ndim != 2:
            raise UsageError(
                f"input_ids must be [batch, tokens], got shape {tuple(input_ids.shape)}"
            )
        input_ids = input_ids.to(self.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(self.device)
        records: list[tuple[torch.Tensor, tuple, dict] | None] = [None] * self.n_blocks

        def recorder(i: int):
            def forward(hidden_states, *args, **kwargs):
                records[i] = (hidden_states, args, kwargs)
                return hidden_states

            return forward

        # A layer may already carry an instance-level forward (accelerate hooks do): put it back.
        saved = [vars(layer).get("forward") for layer in self.blocks]
        for i, layer in enumerate(self.blocks):
            layer.forward = recorder(i)
        try:
            self.adapter.base_model()(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=None if position_ids is None else position_ids.to(self.device),
                use_cache=False,
            )
        finally:
            for layer, forward in zip(self.blocks, saved, strict=True):
                if forward is None:
                    del layer.forward
                else:
                    layer.forward = forward
        embeddings = records[0][0]
        # The recorder ran in place of the layer's own device hook: move each block's arguments
        # to where the block runs, once per batch (a no-op unless the model is dispatched).
        layer_kwargs = [
            placement.to_device(
                self.adapter.branch_kwargs(layer, rec[0], rec[1], rec[2]),
                placement.execution_device(layer),
            )
            for layer, rec in zip(self.blocks, records, strict=True)
        ]
        return LayerInputs(embeddings, layer_kwargs, attention_mask)

    def initial_state(self, inputs: LayerInputs) -> State:
        if self.adapter.parallel_residual:
            return ParallelState(inputs.embeddings)
        return inputs.embeddings

    def step(self, j: int, state: State, inputs: LayerInputs, on: bool) -> State:
        """Run player j (``players[j]``, a sublayer of block ``block_of(j)[0]``) on the residual
        state, or skip it."""
        block, kind = self.block_of(j)
        is_mlp = kind == "mlp"
        layer = self.blocks[block]
        state = self.place(state, block)
        if self.adapter.parallel_residual:
            return self._parallel_step(layer, state, inputs.layer_kwargs[block], is_mlp, on)
        h = state
        if not on:
            return h  # the skip connection stays: h = h
        if is_mlp:
            return h + self.adapter.mlp_branch(layer, h)
        return h + self.adapter.attn_branch(layer, h, inputs.layer_kwargs[block])

    def _parallel_step(self, layer, state: ParallelState, kwargs, is_mlp: bool, on: bool) -> State:
        x = state.x
        if not is_mlp:
            attn_out = self.adapter.attn_branch(layer, x, kwargs) if on else None
            return ParallelState(x, attn_out)
        # Same summation order as HF: mlp_out + attn_out + x.
        total = self.adapter.mlp_branch(layer, x) if on else None
        if state.attn_out is not None:
            total = state.attn_out if total is None else total + state.attn_out
        return ParallelState(x if total is None else total + x)

    def place(self, state: State, block: int) -> State:
        """``state`` on the device block ``block`` runs on (itself unless the model is split
        over devices)."""
        device = placement.execution_device(self.blocks[block])
        if device is None:
            return state
        if isinstance(state, ParallelState):
            attn_out = None if state.attn_out is None else state.attn_out.to(device)
            return ParallelState(state.x.to(device), attn_out)
        return state.to(device)

    @contextmanager
    def head_weights(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """(weight [V, d], bias [V] or None) of the LM head, on the device it runs on, to read
        directly while the context is open (offloaded weights are loaded for that long)."""
        head = self.adapter.lm_head()
        with placement.materialised(head):
            yield head.weight, head.bias

    @staticmethod
    def residual(state: State) -> torch.Tensor:
        """The residual stream [B, T, d] held by a state (after a whole block for parallel ones)."""
        return state.x if isinstance(state, ParallelState) else state

    def final_hidden(self, state: State) -> torch.Tensor:
        """Final norm of the residual stream: [B, T, d]."""
        return self.adapter.final_norm()(self.residual(state))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM head (with soft-capping where the architecture has it): [..., d] -> [..., V]."""
        return self.adapter.logits(hidden)

    # --- the whole forward ---------------------------------------------------------------------
    def hidden_states(
        self, input_ids: torch.Tensor, keep=None, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Final-normed hidden states [B, T, d] on :attr:`device`, only the kept players run."""
        kept = self.keep_mask(keep)
        inputs = self.prepare(input_ids, attention_mask)
        state = self.initial_state(inputs)
        for j in range(self.n_players):
            state = self.step(j, state, inputs, kept[j])
        return self.final_hidden(state).to(self.device)

    def forward(
        self, input_ids: torch.Tensor, keep=None, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits [B, T, V] on :attr:`device` for input_ids [B, T]; keep: bool [n_players], None
        = all kept."""
        return self.logits(self.hidden_states(input_ids, keep, attention_mask)).to(self.device)

    # --- generation ----------------------------------------------------------------------------
    def generate(
        self,
        input_ids: torch.Tensor,
        keep=None,
        max_new_tokens: int = 32,
        stop: Sequence[str] | None = None,
        attention_mask: torch.Tensor | None = None,
        batch_size: int = 8,
    ) -> torch.Tensor:
        """Greedy new tokens int64 [B, <= max_new_tokens] for input_ids [B, T] (left-padded where
        ``attention_mask`` [B, T] says so), only the kept players run; a row that stopped early
        (EOS, or a ``stop`` string in its new text) is padded with the pad id. The KV cache is
        keyed by original layer index: see :mod:`layerfast.models.generation`."""
        if input_ids.ndim != 2:
            raise UsageError(
                f"input_ids must be [batch, tokens], got shape {tuple(input_ids.shape)}"
            )
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        rows = [ids[m.bool()].tolist() for ids, m in zip(input_ids.cpu(), mask.cpu())]
        gen = generation.generate_ids(self, rows, keep, max_new_tokens, stop, batch_size)
        width = max((len(t) for t in gen.tokens), default=0)
        out = torch.full((len(rows), width), generation.pad_id(self), dtype=torch.long)
        for b, tokens in enumerate(gen.tokens):
            out[b, : len(tokens)] = torch.as_tensor(tokens, dtype=torch.long)
        return out.to(self.device)

    # --- identity ------------------------------------------------------------------------------
    def fingerprint(self, recompute: bool = False) -> str:
        """A short hash of the config, dtype and every byte of every weight and buffer, used to
        key cached utilities.

        The weights' SHA-256 is reused while torch reports no change to any tensor (and, after
        ``lf.load`` of a folder, taken from the digest stored for its unchanged weight files):
        see :mod:`layerfast.models.digest`. Pass ``recompute=True`` after writing to weights
        behind torch's back (through ``.data`` or a NumPy view).
        """
        from . import digest as weights

        config = self.config.to_dict()
        config.pop("_name_or_path", None)  # where it was loaded from: the same model elsewhere
        h = hashlib.sha256()
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
        h.update(str(self.dtype).encode())
        h.update(weights.current(self, recompute).encode())
        return h.hexdigest()[:16]

    def __repr__(self) -> str:
        return (
            f"SublayerModel({self.name!r}, {type(self.hf_model).__name__}, "
            f"{self.n_blocks} blocks, {self.n_players} players, {self.dtype})"
        )
