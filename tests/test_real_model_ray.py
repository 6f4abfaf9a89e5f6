"""``layerfast shapley --workers 2`` on the packaged real model equals ``--workers 1``: the same
Shapley values and bit-identical log-likelihoods for every coalition (both at one torch thread
per process). Marked slow: it needs the packaged model (``layerfast fetch``)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

pytest.importorskip("ray", reason="pip install 'layerfast[ray]'")
pytestmark = pytest.mark.slow


def shapley(out, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "layerfast.cli", "shapley", "--method", "proximity"]
    command += ["--limit", "3", "--threads", "1", "--no-progress", "--out", str(out), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def logliks(path) -> dict[str, bytes]:
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT mask, loglik FROM coalitions").fetchall())


def test_shapley_on_two_workers_equals_one_process(tmp_path):
    one = shapley(tmp_path / "one")
    assert one.returncode == 0, one.stderr[-3000:]
    two = shapley(tmp_path / "two", "--workers", "2")
    assert two.returncode == 0, two.stderr[-3000:]
    a = json.loads((tmp_path / "one" / "shapley.json").read_text())
    b = json.loads((tmp_path / "two" / "shapley.json").read_text())
    assert b["workers"] == 2 and "workers" not in a
    assert a["n_evaluations"] == b["n_evaluations"] == 178
    assert a["values"] == b["values"] and a["stderr"] == b["stderr"]
    la, lb = (
        logliks(tmp_path / "one" / "utilities.sqlite"),
        logliks(tmp_path / "two" / "utilities.sqlite"),
    )
    assert len(la) == 178 and la == lb
