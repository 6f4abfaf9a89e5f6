"""The prefix executor's stack of kept residual states, within a byte budget."""

from __future__ import annotations

from ..models.adapter import ParallelState


def state_bytes(state) -> int:
    """Bytes of a residual state's tensors."""
    tensors = [state.x, state.attn_out] if isinstance(state, ParallelState) else [state]
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


class StateStack:
    """(depth, state) pairs with increasing depths, the first the state before sublayer 0; states
    pushed beyond ``budget`` bytes in all are dropped (a later coalition recomputes from the
    deepest state kept below its branch point)."""

    def __init__(self, initial, budget: int):
        self.items = [(0, initial)]
        self.budget = int(budget)
        self.kept = 0  # bytes of the pushed states held

    def top(self, depth: int):
        """Pop to the deepest state at or before ``depth``; returns (its depth, state)."""
        while self.items[-1][0] > depth:
            self.kept -= state_bytes(self.items.pop()[1])
        return self.items[-1]

    def fits(self, n_bytes: int) -> bool:
        return self.kept + n_bytes <= self.budget

    def push(self, depth: int, state) -> None:
        """Keep ``state`` at ``depth`` if it fits the budget."""
        size = state_bytes(state)
        if self.fits(size):
            self.items.append((depth, state))
            self.kept += size
