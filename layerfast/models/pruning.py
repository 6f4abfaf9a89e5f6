"""Score-based pruning to an ordinary ``transformers`` model.

* ``unit="block"``: the selected decoder blocks are deleted; the config's layer count (and
  per-layer lists such as Gemma's ``layer_types``) and every layer index kept by the remaining
  blocks are renumbered, so the KV cache of the pruned model lines up (a stale ``layer_idx`` after
  deleting layers is the known failure).
* ``unit="sublayer"``: a selected sublayer is removed exactly by zeroing its output projection
  (weights and bias): its branch then adds 0 to the residual stream.

Selection (:func:`select`): ``rule="lowest"`` removes the ``k`` (or ``fraction`` of all) units with
the lowest scores; ``rule="cumulative"`` sorts the units by score, normalises the scores to sum to
1 and removes the longest run of lowest-scored units whose cumulative share stays <= ``fraction``.
(The AVSS authors' script accumulates before sorting, which selects early layers rather than
low-scored ones; here the rule is applied after sorting.) Higher score = more important.
"""
from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
import torch
from torch import nn

from . import SublayerModel

# Output projections of the residual branches (weight and bias are zeroed).
_ATTN_OUT = ("o_proj", "c_proj", "dense", "out_proj")
_MLP_OUT = ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2")
_LAYER_LISTS = ("layer_types",)


def select(scores: Sequence[float], fraction: float | None = 0.25, k: int | None = None,
           rule: str = "lowest") -> list[int]:
    """Indices of the units to remove, sorted (see the module docstring)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or not len(s):
        raise ValueError("scores must be a non-empty 1-D array")
    if np.isnan(s).any():
        raise ValueError(f"scores hold NaN at units {np.flatnonzero(np.isnan(s)).tolist()} "
                         "(e.g. AVSS where AS = 0): choose another score or fill them first")
    order = np.argsort(s, kind="stable")
    if rule == "lowest":
        if k is None:
            if fraction is None or not 0 <= fraction < 1:
                raise ValueError(f"fraction must be in [0, 1), got {fraction}")
            k = int(round(fraction * len(s)))
        if not 0 <= k < len(s):
            raise ValueError(f"k must be in [0, {len(s) - 1}], got {k}")
        return sorted(order[:k].tolist())
    if rule == "cumulative":
        if s.min() < 0:
            raise ValueError("the cumulative rule needs non-negative scores")
        share = np.cumsum(s[order]) / s.sum()
        return sorted(order[:int(np.searchsorted(share, fraction, side="right"))].tolist())
    raise ValueError(f"unknown rule {rule!r}; choose 'lowest' or 'cumulative'")


def prune(model: SublayerModel, scores: Sequence[float], fraction: float | None = 0.25,
          k: int | None = None, unit: str = "block", rule: str = "lowest") -> nn.Module:
    """A pruned deep copy of ``model.hf_model`` (the original is untouched).

    scores: one per block (unit="block", length n_blocks) or per player (unit="sublayer",
    length n_players, in ``model.players`` order); higher = more important.
    """
    expected = {"block": model.n_blocks, "sublayer": model.n_players}
    if unit not in expected:
        raise ValueError(f"unit must be 'block' or 'sublayer', got {unit!r}")
    if len(scores) != expected[unit]:
        raise ValueError(f"{unit} scores need length {expected[unit]}, got {len(scores)}")
    removed = select(scores, fraction, k, rule)
    hf = copy.deepcopy(model.hf_model)
    pruned = SublayerModel(hf)  # the same adapter locates the parts of the copy
    if unit == "block":
        remove_blocks(pruned, removed)
    else:
        for j in removed:
            zero_branch(pruned, j)
    hf.config.layerfast_pruned = {"unit": unit, "removed": removed, "rule": rule}
    return hf


def remove_blocks(model: SublayerModel, blocks: Sequence[int]) -> None:
    """Delete decoder blocks in place and renumber the config and the layer indices."""
    keep = [i for i in range(model.n_blocks) if i not in set(blocks)]
    layers = model.adapter.layers()
    kept = nn.ModuleList([layers[i] for i in keep])
    parent = model.adapter.base_model()
    name = next(n for n, m in parent.named_children() if m is layers)
    setattr(parent, name, kept)
    config = getattr(model.config, "text_config", model.config)
    for cfg in {id(c): c for c in (model.config, config)}.values():
        for attr in ("num_hidden_layers", "n_layer"):
            if hasattr(cfg, attr):
                setattr(cfg, attr, len(keep))
        for attr in _LAYER_LISTS:
            values = getattr(cfg, attr, None)
            if isinstance(values, list) and len(values) == model.n_blocks:
                setattr(cfg, attr, [values[i] for i in keep])
        if getattr(cfg, "mlp_only_layers", None) is not None:
            # Qwen-MoE marks dense layers by index (and by decoder_sparse_step): spell out which
            # of the kept blocks are dense, from the modules themselves.
            cfg.mlp_only_layers = [new for new, old in enumerate(keep)
                                   if not model.adapter.uses_moe(layers[old])]
            if hasattr(cfg, "decoder_sparse_step"):
                cfg.decoder_sparse_step = 1
    for new_idx, layer in enumerate(kept):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx


@torch.no_grad()
def zero_branch(model: SublayerModel, player: int) -> None:
    """Zero the output projection of player ``player`` (weights and biases), in place."""
    block, is_mlp = divmod(player, 2)
    layer = model.blocks[block]
    branch = layer.mlp if is_mlp else next(
        getattr(layer, n) for n in ("self_attn", "attn", "attention") if hasattr(layer, n))
    names = _MLP_OUT if is_mlp else _ATTN_OUT
    hit = False
    for pname, param in branch.named_parameters():
        if any(part in names for part in pname.split(".")):
            param.zero_()
            hit = True
    if not hit:
        raise ValueError(f"no output projection ({', '.join(names)}) found in {model.players[player]}")
