"""The prefix-cached executor: coalitions that agree on their first k sublayers share the
residual state after sublayer k.

Batches are the outer loop (:meth:`NaiveExecutor.loglik_many`, which reports each coalition as it
is scored, and each finished batch, so the runner stores work as it completes); within a batch,
the coalitions are visited in trie order (sorted in execution order, kept before removed).
Coalition i starts from the state at its branch depth ``lcp(previous, i)`` (the length of the
longest common prefix with the coalition visited before it) and runs only its own suffix. States
are kept on a stack only at depths where a later coalition will branch, within a memory budget;
when a state does not fit, the later coalition recomputes from the deepest state kept below its
branch point instead of failing. Every step runs the same kernels on the same batch as
:class:`~layerfast.evaluation.naive_executor.NaiveExecutor`, so the results are bit-identical to
it, whichever subset of coalitions a batch is run for.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .batching import Batch
from .naive_executor import NaiveExecutor
from .sizing import CPU_MEMORY_BUDGET, stack_tokens_for
from .stacking import StackedInputs, group_size, groups, run_group
from .state_stack import StateStack


def trie_order(masks: np.ndarray) -> np.ndarray:
    """Indices that sort bool masks [m, n] lexicographically in execution order, kept first."""
    return np.lexsort((~masks).T[::-1]) if len(masks) else np.zeros(0, dtype=np.int64)


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the longest common prefix of two bool vectors."""
    diff = np.flatnonzero(a != b)
    return int(diff[0]) if len(diff) else len(a)


def shared_prefixes(ordered: np.ndarray) -> np.ndarray:
    """int64 [m]: for bool masks [m, n] in trie order, each one's common prefix with the one
    before (0 for the first): where the prefix executor resumes it."""
    shared = np.zeros(len(ordered), dtype=np.int64)
    for k in range(1, len(ordered)):
        shared[k] = common_prefix(ordered[k - 1], ordered[k])
    return shared


def prefix_steps(ordered: np.ndarray) -> np.ndarray:
    """Kept sublayers run per coalition, int64 [m], for bool masks [m, n] in trie order, each
    starting from the state at its common prefix with the one before (the first from 0)."""
    shared = shared_prefixes(ordered)
    return np.array([row[d:].sum() for row, d in zip(ordered, shared)], dtype=np.int64)


def restart_cost(ordered: np.ndarray) -> np.ndarray:
    """Extra kept sublayers, int64 [m], if a unit starts at coalition k: the kept part of the
    prefix it shares with coalition k - 1 (0 for k = 0)."""
    shared = shared_prefixes(ordered)
    return np.array([row[:d].sum() for row, d in zip(ordered, shared)], dtype=np.int64)


def branch_depths(ordered: np.ndarray) -> tuple[list[int], list[set[int]]]:
    """For bool masks [m, n] in trie order: each one's branch depth (common prefix with the mask
    before it), and the depths at which each one should keep its state because a later mask
    branches there from this mask's path."""
    m = len(ordered)
    branch = [0] + [common_prefix(ordered[k - 1], ordered[k]) for k in range(1, m)]
    keep_at: list[set[int]] = [set() for _ in range(m)]
    for k in range(m):
        running = ordered.shape[1]
        for j in range(k + 1, m):
            running = min(running, branch[j])  # mask j shares this mask's first `running` steps
            if running == 0:
                break
            keep_at[k].add(running)
    return branch, keep_at


class PrefixExecutor(NaiveExecutor):
    """Evaluates many coalitions per batch, sharing the hidden states of common prefixes; the
    batch loop, ``need`` and ``on_batch`` are :meth:`NaiveExecutor.loglik_many`'s.

    memory_budget: bytes of kept residual states per batch, an int (default 1 GiB, the CPU's;
    ``lf.Game`` resolves "auto" with :mod:`layerfast.evaluation.sizing`); beyond it, states are
    recomputed rather than kept.
    stack_tokens: when a batch's padded tokens fit in it at least twice, run the coalitions in
    groups of ``stack_tokens // tokens`` stacked along the batch dimension (:mod:`.stacking`;
    equal to the unstacked run within rounding). 0 (the default here) never stacks: the results
    are then bit-identical to :class:`NaiveExecutor`'s. "auto" (``lf.Game``'s default): the
    device's value, :func:`~layerfast.evaluation.sizing.stack_tokens_for`.
    """

    name = "prefix"

    def __init__(
        self,
        *args,
        memory_budget: int = CPU_MEMORY_BUDGET,
        stack_tokens: int | str | None = 0,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.memory_budget = int(memory_budget)
        self.stack_tokens = stack_tokens_for(self.model, stack_tokens, self.batch_tokens)
        self.recomputed_steps = 0  # kept steps run again because a state did not fit the budget

    def count(self, members: int, batch: Batch, recomputed: bool = False) -> None:
        """Book one sublayer run for ``members`` coalitions of ``batch``."""
        self.sublayer_evaluations += members
        self.token_sublayer_evaluations += members * batch.n_tokens
        self.recomputed_steps += members * recomputed

    @torch.inference_mode()
    def batch_loglik(
        self,
        batch: Batch,
        masks: np.ndarray,
        tick: Callable[[int], None] | None = None,
        done: Callable[[int, np.ndarray], None] | None = None,
    ) -> np.ndarray:
        """float64 [m, len(batch.request_index)]: one batch for bool masks [m, n_players], the
        coalitions visited in trie order, each from the state at its branch depth (in stacked
        groups when ``stack_tokens`` allows); ``done(i, values)`` as coalition i is scored."""
        masks = (
            np.stack([np.asarray(self.model.keep_mask(mk)) for mk in masks])
            if len(masks)
            else np.zeros((0, self.model.n_players), dtype=bool)
        )
        order = trie_order(masks)
        ordered = masks[order]
        branch, keep_at = branch_depths(ordered)
        n = self.model.n_players
        out = np.zeros((len(masks), len(batch.request_index)), dtype=np.float64)
        inputs = self._prepare(batch)
        stack = StateStack(self.model.initial_state(inputs), self.memory_budget)

        def report(k: int, values: np.ndarray) -> None:
            out[order[k]] = values
            if done is not None:
                done(int(order[k]), values)
            if tick is not None:
                tick(1)

        size = group_size(self.model, batch, self.stack_tokens)
        if size > 1:
            stacked = StackedInputs(self.model, batch, inputs)
            for members in groups(branch, n, size):
                values = run_group(
                    self, batch, stacked, ordered, branch, members, stack, keep_at[members[-1]]
                )
                for k, v in zip(members, values, strict=True):
                    report(k, v)
            return out
        for k, mask in enumerate(ordered):
            if branch[k] == n:  # a duplicate of the previous coalition
                report(k, out[order[k - 1]])
                continue
            depth, state = stack.top(branch[k])
            for d in range(depth, n):
                state = self.model.step(d, state, inputs, bool(mask[d]))
                if mask[d]:
                    self.count(1, batch, recomputed=d < branch[k])
                if d + 1 in keep_at[k] and d + 1 < n:
                    stack.push(d + 1, state)
            report(k, self.score(state, batch))
        return out
