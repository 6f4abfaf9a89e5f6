"""Score-based pruning to an ordinary ``transformers`` model.

* ``unit="block"``: the selected decoder blocks are deleted; the config's layer count (and
  per-layer lists such as Gemma's ``layer_types``) and every layer index kept by the remaining
  blocks are renumbered, so the KV cache of the pruned model lines up (a stale ``layer_idx`` after
  deleting layers is the known failure).
* ``unit="sublayer"``: a selected sublayer is removed exactly by zeroing its output projection
  (weights and bias; every expert's on MoE blocks): its branch then adds 0 to the residual stream.

Which modules and config fields those are is the adapter's knowledge
(:meth:`Adapter.output_projections`, :meth:`Adapter.keep_layers`); this module names none.

Selection (:func:`select`): ``rule="lowest"`` removes the ``k`` (or ``fraction`` of all) units with
the lowest scores; ``rule="cumulative"`` sorts the units by score, normalises the scores to sum to
1 and removes the longest run of lowest-scored units whose cumulative share stays <= ``fraction``.
(The AVSS authors' script accumulates before sorting, which selects early layers rather than
low-scored ones; here the rule is applied after sorting.) Higher score = more important.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import UsageError
from . import placement
from .sublayer_model import SublayerModel

RULES = ("lowest", "cumulative")
UNITS = ("block", "sublayer")


def select(
    scores: Sequence[float],
    fraction: float | None = 0.25,
    k: int | None = None,
    rule: str = "lowest",
) -> list[int]:
    """Indices of the units to remove, sorted (see the module docstring).

    scores: float [n_units], higher = more important. ``k`` (rule "lowest" only) overrides
    ``fraction``.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or not len(s):
        raise UsageError(f"scores must be a non-empty 1-D array, got shape {s.shape}")
    if np.isnan(s).any():
        raise UsageError(
            f"scores hold NaN at units {np.flatnonzero(np.isnan(s)).tolist()} "
            "(e.g. AVSS where AS = 0): choose another score or fill them first"
        )
    if rule not in RULES:
        raise UsageError(f"unknown rule {rule!r}; choose 'lowest' or 'cumulative'")
    order = np.argsort(s, kind="stable")
    if rule == "lowest":
        if k is None:
            if fraction is None or not 0 <= fraction < 1:
                raise UsageError(f"fraction must be in [0, 1), got {fraction}")
            k = int(round(fraction * len(s)))
        if not 0 <= k < len(s):
            raise UsageError(f"k must be in [0, {len(s) - 1}], got {k}")
        return sorted(order[:k].tolist())
    if fraction is None or not 0 <= fraction <= 1:
        raise UsageError(f"the cumulative rule needs a fraction in [0, 1], got {fraction}")
    if s.min() < 0:
        raise UsageError(
            f"the cumulative rule needs non-negative scores, got {s.min():g} "
            f"at unit {int(s.argmin())}"
        )
    share = np.cumsum(s[order]) / s.sum()
    return sorted(order[: int(np.searchsorted(share, fraction, side="right"))].tolist())


def prune(
    model: SublayerModel,
    scores: Sequence[float],
    fraction: float | None = 0.25,
    k: int | None = None,
    unit: str = "block",
    rule: str = "lowest",
) -> nn.Module:
    """A pruned deep copy of ``model.hf_model`` (the original is untouched).

    scores: one per block (unit="block", length n_blocks) or per player (unit="sublayer",
    length n_players, in ``model.players`` order); higher = more important.
    """
    expected = {"block": model.n_blocks, "sublayer": model.n_players}
    if unit not in UNITS:
        raise UsageError(f"unit must be 'block' or 'sublayer', got {unit!r}")
    if len(scores) != expected[unit]:
        raise UsageError(
            f"{unit} scores need length {expected[unit]} (one per {unit} of "
            f"{model.name}), got {len(scores)}"
        )
    removed = select(scores, fraction, k, rule)
    placement.refuse_dispatched(model.hf_model, "pruning")
    hf = copy.deepcopy(model.hf_model)
    pruned = SublayerModel(hf)  # the same adapter locates the parts of the copy
    if unit == "block":
        remove_blocks(pruned, removed)
    else:
        for j in removed:
            zero_branch(pruned, j)
    hf.config.layerfast_pruned = {"unit": unit, "removed": removed, "rule": rule}
    return hf


def prune_keep(model: SublayerModel, keep: Sequence[bool] | np.ndarray, unit: str = "sublayer"):
    """A pruned deep copy of ``model.hf_model`` with the sublayers ``keep`` turns off (bool
    [n_players], True = kept; what a pruning search found): for ``unit="block"`` the blocks
    whose every sublayer is off are deleted (each must be whole), otherwise each removed
    sublayer's output projection is zeroed. Equal to the masked model (``model(x, keep=keep)``)."""
    keep = np.asarray(model.keep_mask(keep), dtype=bool)
    if unit not in UNITS:
        raise UsageError(f"unit must be 'block' or 'sublayer', got {unit!r}")
    placement.refuse_dispatched(model.hf_model, "pruning")
    removed = np.flatnonzero(~keep).tolist()
    blocks = [b for b in range(model.n_blocks) if not keep[model.players_of(b)].any()]
    if unit == "block":
        split = [str(model.players[j]) for j in removed if model.block_of(j)[0] not in blocks]
        if split:
            raise UsageError(f"unit 'block' removes whole blocks; {split} leave their block half")
    hf = copy.deepcopy(model.hf_model)
    pruned = SublayerModel(hf)
    if unit == "block":
        remove_blocks(pruned, blocks)
    else:
        for j in removed:
            zero_branch(pruned, j)
    names = (
        [f"block{b}" for b in blocks] if unit == "block" else [model.players[j] for j in removed]
    )
    hf.config.layerfast_pruned = {"unit": unit, "removed": names, "rule": "search"}
    return hf


def remove_blocks(model: SublayerModel, blocks: Sequence[int]) -> None:
    """Delete decoder blocks in place and renumber the config and the layer indices.

    ``model`` itself keeps its old block list; wrap the edited ``model.hf_model`` anew to use it.
    """
    bad = [b for b in blocks if not 0 <= b < model.n_blocks]
    if bad:
        raise UsageError(f"blocks {bad} out of range: the model has {model.n_blocks} blocks")
    removed = set(blocks)
    model.adapter.keep_layers([i for i in range(model.n_blocks) if i not in removed])


@torch.no_grad()
def zero_branch(model: SublayerModel, player: int) -> None:
    """Zero the output projection of player ``player`` (weights and biases), in place."""
    block, kind = model.block_of(player)
    for _, param in model.adapter.output_projections(model.blocks[block], kind):
        param.zero_()
