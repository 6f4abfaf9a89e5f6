"""The KV cache of decoding under a coalition: keys and values by *original* layer index.

A removed attention sublayer is never run, so it writes nothing here; the attention modules of
``transformers`` call ``cache.update(keys, values, self.layer_idx, ...)`` with their own block
index, which is what keys this store.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class KVStore:
    """Keys and values [B, H, S, dh] of each attention sublayer that ran, by original layer index.

    Duck-types the ``update`` of ``transformers``' caches: appends the new positions and returns
    every position's keys and values.
    """

    def __init__(self) -> None:
        self.layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        old = self.layers.get(int(layer_idx))
        if old is not None:
            key_states = torch.cat([old[0], key_states], dim=-2)
            value_states = torch.cat([old[1], value_states], dim=-2)
        self.layers[int(layer_idx)] = (key_states, value_states)
        return key_states, value_states

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep batch rows ``rows`` int64 [B'] of every entry."""
        for idx, (k, v) in self.layers.items():
            self.layers[idx] = (k[rows.to(k.device)], v[rows.to(v.device)])

    def __contains__(self, layer_idx: int) -> bool:
        return int(layer_idx) in self.layers

    @classmethod
    def prefilled(
        cls, past: Sequence[dict[int, tuple[torch.Tensor, torch.Tensor]]], width: int
    ) -> KVStore:
        """A store for a left-padded batch of ``width`` cached columns: row b's entries
        ``past[b][layer] = (keys [H, S_b, dh], values [H, S_b, dh])`` right-aligned, the padding
        before them zero (it is masked out). Every row must hold the same layers."""
        store = cls()
        layers = set(past[0]) if past else set()
        if any(set(p) != layers for p in past):
            raise ValueError("prefilled rows hold different layers")
        for layer in layers:
            k0, v0 = past[0][layer]
            keys = k0.new_zeros((len(past), k0.shape[0], width, k0.shape[-1]))
            values = v0.new_zeros((len(past), v0.shape[0], width, v0.shape[-1]))
            for b, p in enumerate(past):
                k, v = p[layer]
                keys[b, :, width - k.shape[1] :] = k
                values[b, :, width - v.shape[1] :] = v
            store.layers[layer] = (keys, values)
        return store


class KVRecorder:
    """A cache that keeps nothing between calls: each attention sublayer's keys and values of
    its last pass, [B, H, T, dh], by layer index (what a teacher-forced pass leaves for decoding
    to resume from)."""

    def __init__(self) -> None:
        self.layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        self.layers[int(layer_idx)] = (key_states, value_states)
        return key_states, value_states
