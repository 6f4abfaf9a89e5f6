"""Stacked suffixes: several coalitions of one small batch run through one sublayer call.

A batch of a few hundred tokens leaves each sublayer call overhead-bound on a CPU and
launch-bound on a GPU. The prefix executor (:class:`~.prefix_executor.PrefixExecutor`) then
takes the coalitions, in trie order, in groups of up to ``group`` consecutive ones. A group shares
its members' common prefix: that part runs once, on the batch, from the deepest state kept on the
prefix stack. Then the state is repeated once per member along the batch dimension
([g * B, T, d], member i in rows i * B .. (i + 1) * B) and every remaining sublayer runs once
for all the members that keep it: on the whole stack when all do, on the rows of those that do
(gathered, run, put back) otherwise, not at all when none does. Each member is then scored on
its own rows.

Rows are independent through every sublayer (norms, MLPs and attention act within a sample), so
a member's values differ from the unstacked run only by the rounding of matrix products over a
different number of rows: within the packing tolerance (2e-5 in fp32, 0.05 in bf16 per request
log-likelihood), and tested against the unstacked executor. The unstacked prefix executor
(``stack_tokens=0``) stays bit-identical to the naive one. Parallel-residual models
(:class:`~layerfast.models.adapter.ParallelState`) are not stacked.

The layer arguments of a stack of s copies (rotary tables, attention masks) come from the
model's own preparation of the batch repeated s times (:meth:`SublayerModel.prepare`), once per
batch and size.
"""

from __future__ import annotations

import numpy as np
import torch

from ..models import SublayerModel
from .batching import Batch
from .state_stack import StateStack, state_bytes

MAX_GROUP = 64  # members per stack at most, whatever the batch size


def group_size(model: SublayerModel, batch: Batch, stack_tokens: int) -> int:
    """Coalitions stacked per call for ``batch``: ``stack_tokens`` // its padded tokens, at most
    :data:`MAX_GROUP`; 1 (no stacking) for parallel-residual models or ``stack_tokens`` 0."""
    if stack_tokens <= 0 or model.adapter.parallel_residual:
        return 1
    padded = int(batch.input_ids.numel())
    return max(1, min(MAX_GROUP, stack_tokens // max(padded, 1)))


def groups(branch: list[int], n: int, size: int) -> list[list[int]]:
    """Consecutive trie-ordered coalitions in groups of up to ``size``; a duplicate of the
    coalition before it (branch depth ``n``) joins its group without counting towards the size
    (it is not run again)."""
    out: list[list[int]] = []
    runs = 0  # distinct coalitions in the last group
    for k, depth in enumerate(branch):
        if out and depth == n:
            out[-1].append(k)
        elif out and runs < size:
            out[-1].append(k)
            runs += 1
        else:
            out.append([k])
            runs = 1
    return out


class StackedInputs:
    """The layer arguments of a batch repeated s times, prepared on first use (s >= 1)."""

    def __init__(self, model: SublayerModel, batch: Batch, inputs):
        self.model, self.batch, self.cache = model, batch, {1: inputs}

    def __call__(self, s: int):
        if s not in self.cache:
            b = self.batch
            mask = b.attention_mask.repeat(s, *([1] * (b.attention_mask.ndim - 1)))
            positions = None if b.position_ids is None else b.position_ids.repeat(s, 1)
            self.cache[s] = self.model.prepare(b.input_ids.repeat(s, 1), mask, positions)
        return self.cache[s]


def member_rows(members: np.ndarray, batch_rows: int, device: torch.device) -> torch.Tensor:
    """int64 [len(members) * batch_rows]: the stacked rows of the given member indices."""
    base = torch.as_tensor(members, dtype=torch.int64, device=device)[:, None] * batch_rows
    return (base + torch.arange(batch_rows, device=device)).reshape(-1)


def run_group(
    executor,
    batch: Batch,
    inputs: StackedInputs,
    ordered: np.ndarray,
    branch: list[int],
    members: list[int],
    stack: StateStack,
    keep_last: set[int],
) -> list[np.ndarray]:
    """Score the coalitions ``members`` (indices into the trie-ordered bool masks ``ordered``
    [m, n] with their branch depths ``branch``, duplicates of their predecessor included) from
    ``stack``, popped to the group's branch depth; returns each member's values (float64
    [len(batch.request_index)]). States at the depths ``keep_last``, where later coalitions
    branch off the last member's path, are pushed."""
    model, n = executor.model, ordered.shape[1]
    runs = [k for k in members if k == members[0] or branch[k] < n]  # duplicates run once
    masks = ordered[runs]  # [g, n]
    # in trie order a run's common prefix is the least branch depth within it
    common = min((branch[k] for k in members[1:]), default=n)  # every member agrees before it
    start = min(common, branch[members[0]])
    depth, state = stack.top(start)
    for d in range(depth, common):  # the shared prefix, once
        state = model.step(d, state, inputs(1), bool(masks[0, d]))
        if masks[0, d]:
            executor.count(1, batch, recomputed=d < start)
        if d + 1 in keep_last and d + 1 < n:
            stack.push(d + 1, state)
    g, rows = len(runs), batch.input_ids.shape[0]
    state = state.repeat(g, *([1] * (state.ndim - 1)))  # [g * B, T, d], member i in rows i * B..
    for d in range(common, n):
        keep = masks[:, d]  # bool [g]
        if keep.all():
            state = model.step(d, state, inputs(g), True)
        elif keep.any():
            picked = member_rows(np.flatnonzero(keep), rows, state.device)  # [s * B]
            ran = model.step(d, state.index_select(0, picked), inputs(int(keep.sum())), True)
            state = state.index_copy(0, picked, ran)
        executor.count(int(keep.sum()), batch)
        if d + 1 in keep_last and d + 1 < n and stack.fits(state_bytes(state) // g):
            stack.push(d + 1, state[(g - 1) * rows :].clone())  # the last member's rows
    scored = [executor.score(state[i * rows : (i + 1) * rows], batch) for i in range(g)]
    out, i = [], -1
    for k in members:
        i += k == members[0] or branch[k] < n
        out.append(scored[i])
    return out
