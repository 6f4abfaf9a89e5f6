"""The in-process runner hands finished coalition-batches to ``store`` in bounded groups (every
few coalitions or seconds), each pair exactly once, and the results equal one executor call."""

from __future__ import annotations

import numpy as np
import pytest

import layerfast as lf
from layerfast.estimators.proximity import proximity_masks
from layerfast.evaluation.runner import LocalRunner


class Clock:
    def __init__(self, step: float):
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


@pytest.mark.parametrize(
    "every, seconds, step, largest",
    [(3, 1e9, 0.0, 3), (100, 2.0, 0.75, 3), (100, 2.0, 5.0, 1), (1, 1e9, 0.0, 1)],
)
def test_store_gets_every_pair_once_in_bounded_groups(
    tiny_llama, tiny_task, every, seconds, step, largest
):
    game = lf.Game(tiny_llama, tiny_task, utility="acc", batch_tokens=64, progress=False)
    ex = game.executor
    masks = proximity_masks(game.n_players, 3)[0]
    need = np.ones((len(masks), len(ex.batches)), dtype=bool)
    runner = LocalRunner(ex, chunk=16, flush_coalitions=every, flush_seconds=seconds)
    runner.clock = Clock(step)
    calls: list[tuple[int, np.ndarray, np.ndarray]] = []
    runner.run(masks, need, lambda b, rows, values: calls.append((b, rows.copy(), values)))
    assert max(len(rows) for _, rows, _ in calls) == largest
    seen = [(b, int(r)) for b, rows, _ in calls for r in rows]
    assert len(seen) == len(set(seen)) == need.sum()  # every pair, once
    want = ex.loglik_many(masks)
    for b, rows, values in calls:
        np.testing.assert_array_equal(values, want[np.ix_(rows, ex.batches[b].request_index)])
