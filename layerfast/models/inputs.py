"""Model inputs from token lists: what every forward of a :class:`~.sublayer_model.SublayerModel`
takes (the statistics pass, the evaluation batches, fine-tuning)."""

from __future__ import annotations

import torch


def pad_right(sequences: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (input_ids [B, T], attention_mask [B, T]), right-padded with ``pad_id``."""
    t_max = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), t_max), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), t_max), dtype=torch.long)
    for b, seq in enumerate(sequences):
        ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[b, : len(seq)] = 1
    return ids, mask
