"""``layerfast report --interactions`` on the tiny random Llama of the CLI tests: the files, the
values equal to ``lf.interactions`` on the same game, the heatmap and the report.md section."""

from __future__ import annotations

import csv

import numpy as np

import layerfast as lf
from layerfast.cli.sweeps import INTERACTIONS_EXACT
from tests.cli.test_cli import N, direct_game, run, strict_json, sweep


def test_report_interactions(capsys, model_dir, task_file, tmp_path):
    out = tmp_path / "report"
    rc, stdout, err = run(
        capsys,
        *sweep("report", model_dir, task_file, out, "--interactions", "--item-bootstrap", 30),
    )
    assert rc == 0, err
    for name in ("interactions.json", "interactions.csv", "interactions.png", "interactions.svg"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "interactions.png").read_bytes()[:4] == b"\x89PNG"
    data = strict_json(out / "interactions.json")
    assert N <= INTERACTIONS_EXACT and data["method"] == "exact" and data["n_evaluations"] == 2**N
    assert data["model"] == "tiny-llama" and data["players"][0] == "attn0"
    expected = lf.interactions(direct_game(model_dir, task_file), method="exact")
    got = np.array([[np.nan if x is None else x for x in row] for row in data["values"]])
    np.testing.assert_allclose(got, expected.values, atol=1e-12, equal_nan=True)
    assert data["info"]["item_bootstrap"]["replicates"] == 30
    assert len(data["stderr_items"]) == N
    with open(out / "interactions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N * (N - 1) // 2 and "stderr_total" in rows[0]
    md = (out / "report.md").read_text()
    assert "## Layer interactions" in md and "![interactions](interactions.png)" in md
    assert "exact pairwise Shapley interaction index" in md
    assert "Layer interactions" in (out / "report.html").read_text()
    assert "layer interactions: exact" in stdout and "top redundant pairs" in stdout


def test_many_players_use_the_removal_interaction(
    capsys, model_dir, task_file, tmp_path, monkeypatch
):
    monkeypatch.setattr("layerfast.cli.sweeps.INTERACTIONS_EXACT", 4)
    out = tmp_path / "many"
    argv = sweep("report", model_dir, task_file, out, "--interactions", "--item-bootstrap", 0)
    rc, stdout, err = run(capsys, *argv)
    assert rc == 0, err
    data = strict_json(out / "interactions.json")
    assert data["method"] == "removal" and data["n_evaluations"] == 1 + N + N * (N - 1) // 2
    expected = lf.interactions(direct_game(model_dir, task_file), method="removal")
    got = np.array([[np.nan if x is None else x for x in row] for row in data["values"]])
    np.testing.assert_allclose(got, expected.values, atol=1e-12, equal_nan=True)
    assert "removal interaction" in stdout and "6 players > 4" in stdout
    assert "6 players > 4" in (out / "report.md").read_text()


def test_report_without_the_flag_writes_no_interactions(capsys, model_dir, task_file, tmp_path):
    out = tmp_path / "plain"
    rc, _, err = run(capsys, *sweep("report", model_dir, task_file, out, "--item-bootstrap", 0))
    assert rc == 0, err
    assert not (out / "interactions.json").exists()
    assert "Layer interactions" not in (out / "report.md").read_text()
