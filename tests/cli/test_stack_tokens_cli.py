"""``--stack-tokens`` reaches the Game: 0 runs the unstacked executor (the values equal the
naive executor's bit for bit), a count stacks the small batch (equal within the packing
tolerance, fewer sublayer calls), "auto" is the device's value."""

from __future__ import annotations

import json

import numpy as np
import pytest

import layerfast as lf
from layerfast import cli


def ablate(model_dir, task_file, out, *extra) -> tuple[dict, list]:
    games = []
    original = lf.Game.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        games.append(self)

    mp = pytest.MonkeyPatch()
    mp.setattr(lf.Game, "__init__", init)
    try:
        argv = ["ablate", "--model", model_dir, "--task", task_file, "--out", out, "--no-progress"]
        assert cli.main([str(a) for a in [*argv, "--utility", "margin", *extra]]) == 0
    finally:
        mp.undo()
    return json.loads((out / "ablation.json").read_text()), games


def test_stack_tokens_flag(model_dir, task_file, tmp_path):
    plain, (g0,) = ablate(model_dir, task_file, tmp_path / "0", "--stack-tokens", "0")
    stacked, (g1,) = ablate(model_dir, task_file, tmp_path / "big", "--stack-tokens", "100000")
    auto, (g2,) = ablate(model_dir, task_file, tmp_path / "auto")
    assert g0.executor.stack_tokens == 0 and g1.executor.stack_tokens == 100000
    assert g2.executor.stack_tokens == min(1024, g2.sizing["batch_tokens"])  # auto on a CPU
    naive = lf.Game(lf.load(model_dir), lf.tasks.load(task_file), utility="margin",
                    executor="naive", progress=False)  # fmt: skip
    masks = np.ones((7, naive.n_players), dtype=bool)
    masks[np.arange(1, 7), np.arange(6)] = False
    np.testing.assert_array_equal(g0.loglik(masks), naive.loglik(masks))
    np.testing.assert_allclose(stacked["values"], plain["values"], rtol=0, atol=2e-5)
    np.testing.assert_allclose(auto["values"], plain["values"], rtol=0, atol=2e-5)
