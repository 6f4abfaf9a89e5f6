"""``layerfast shapley --method kernel_ht --target-stderr/--until`` on the tiny random Llama of
the CLI tests: the values equal ``lf.shapley`` with the same rule, the stop record is saved and
printed, and bad flags fail in one line before the model loads."""

from __future__ import annotations

import numpy as np
import pytest

import layerfast as lf
from tests.cli.test_cli import direct_game, run, strict_json, sweep


def test_target_stderr_and_until(capsys, model_dir, task_file, tmp_path):
    out = tmp_path / "settled"
    flags = ("--method", "kernel_ht", "--utility", "logprob", "--budget", 48)
    rule = ("--target-stderr", 1e-6, "--until", "top2", "--item-bootstrap", 0)
    rc, stdout, err = run(capsys, *sweep("shapley", model_dir, task_file, out, *flags, *rule))
    assert rc == 0, err
    data = strict_json(out / "shapley.json")
    stop = data["info"]["stop"]
    assert stop["target_stderr"] == 1e-6 and stop["until"] == "top2" and stop["max_budget"] == 48
    assert stop["coalitions_evaluated"] <= 48 and stop["reason"] in ("both", "budget")
    expected = lf.shapley(
        direct_game(model_dir, task_file, "logprob"),
        method="kernel_ht",
        budget=48,
        target_stderr=1e-6,
        until="top2",
    )
    np.testing.assert_allclose(data["values"], expected.values, atol=1e-9)
    assert len(stop["steps"]) == len(expected.info["stop"]["steps"])
    for got, want in zip(stop["steps"], expected.info["stop"]["steps"]):
        assert got == pytest.approx(want)
    assert "step: budget" in stdout and stop["message"] in stdout


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--method", "exact", "--target-stderr", 0.1), "sampling method"),
        (("--method", "kernel_ht", "--until", "best2"), "until must be 'topK'"),
        (("--method", "kernel_ht", "--until", "top2", "--confidence", 0), "confidence"),
        (("--method", "kernel_ht", "--target-stderr", -1), "--target-stderr"),
        (
            ("--method", "kernel", "--target-stderr", 0.1, "--budget-compute", 1e6),
            "cannot be combined",
        ),
    ],
)
def test_bad_stopping_flags_fail_before_loading(capsys, task_file, tmp_path, extra, message):
    rc, _, err = run(capsys, *sweep("shapley", tmp_path / "nomodel", task_file, tmp_path, *extra))
    assert rc == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1
