"""The Game's progress bar moves as coalitions finish: it advances per (coalition, batch) done,
in fractions of a coalition, not once at the end of a call (issue 19: a proximity sweep's bar
read 0/N throughout)."""

from __future__ import annotations

import numpy as np
import pytest

import layerfast as lf
from layerfast.estimators import shapley
from layerfast.evaluation import game as game_module


class FakeBar:
    """Records the bar's position after each update and the batches finished so far."""

    def __init__(self, log, total, finished):
        self.log, self.total, self.finished, self.n = log, total, finished, 0.0
        log.append(("open", total))

    def update(self, k=1):
        self.n += k
        self.log.append(("update", self.n, len(self.finished)))

    def close(self):
        self.log.append(("close", self.n))


@pytest.mark.parametrize("executor", ["prefix", "naive"])
@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_bar_moves_before_the_last_batch(monkeypatch, tiny_llama, tiny_task, executor, chunk):
    log, finished = [], []
    monkeypatch.setattr(
        game_module, "progress_bar", lambda total, **kw: FakeBar(log, total, finished)
    )
    game = lf.Game(
        tiny_llama, tiny_task, utility="acc", executor=executor, batch_tokens=64, chunk=chunk
    )
    n_batches = len(game.executor.batches)
    assert n_batches >= 3  # several batches, so "before the last one" means something
    original = game.executor.batch_loglik

    def batch_loglik(batch, masks, tick=None, done=None):
        out = original(batch, masks, tick, done)
        finished.append(len(masks))
        return out

    monkeypatch.setattr(game.executor, "batch_loglik", batch_loglik)
    res = shapley(game, method="proximity", window=2)

    opened = [e for e in log if e[0] == "open"]
    assert len(opened) == 1
    total = opened[0][1]
    n_calls = len(finished)  # batch_loglik calls: (chunk, batch) units
    updates = [e for e in log if e[0] == "update" and e[1] > 0]
    # it moved while batches were still to run, in steps of at most one coalition-batch
    assert updates and updates[0][2] < n_calls
    moved_early = [n for n, done in ((e[1], e[2]) for e in updates) if done < n_calls - 1]
    assert moved_early and max(moved_early) > 0
    positions = [e[1] for e in log if e[0] == "update"]
    assert np.all(np.diff(positions) > 0)
    assert np.diff([0.0, *positions]).max() <= 1.0 / n_batches + 1e-9
    assert log[-1] == ("close", pytest.approx(total))
    assert np.isfinite(res.values).all()


def test_no_second_bar_that_waits_for_the_whole_sweep(tiny_llama, tiny_task, monkeypatch):
    """lf.shapley over a Game that draws its own bar opens no "shapley" bar (it would sit at
    0/N until the one call of a proximity sweep returns)."""
    import layerfast as lf
    import layerfast.estimators.budget as budget

    opened = []
    monkeypatch.setattr(budget, "progress_bar", lambda **kw: opened.append(kw) or _NoBar())
    game = lf.Game(tiny_llama, tiny_task, progress=True)
    lf.shapley(game, method="proximity", window=2, progress=True)
    assert not opened
    quiet = lf.Game(tiny_llama, tiny_task, progress=False)
    lf.shapley(quiet, method="proximity", window=2, progress=True)
    assert opened  # a game without its own bar still gets the shapley bar


class _NoBar:
    def update(self, k):
        pass

    def close(self):
        pass
