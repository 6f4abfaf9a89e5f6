"""report.plots: every figure is a PNG file; plot_convergence lives here, not in estimators."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from layerfast.report import plots

PNG = b"\x89PNG\r\n\x1a\n"


def test_block_and_sublayer_plots(tmp_path):
    players = ["attn0", "mlp0", "attn1", "mlp1"]
    values = np.array([0.1, np.nan, 0.3, 0.2])
    paths = [
        plots.plot_ablation(players, values, 0.8, 0.25, tmp_path / "a.png", utility="acc"),
        plots.plot_shapley(players, values, np.full(4, np.nan), tmp_path / "s.png"),
        plots.plot_blocks(
            np.array([1.0, np.nan]),
            tmp_path / "b.png",
            ylabel="NAVSS",
            highlight=[1],
            interval=(np.zeros(2), np.full(2, 2.0)),
        ),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == PNG


def test_plot_convergence(tmp_path):
    records = [
        {
            "n_evaluations": n,
            "values": np.arange(3.0) * n,
            "stderr": np.full(3, 0.1),
            "players": ["p0", "p1", "p2"],
            "method": "permutation",
        }
        for n in (10, 20)
    ]
    path = plots.plot_convergence(records, tmp_path / "c.png", players=["p2", 0])
    assert open(path, "rb").read(8) == PNG


def test_estimators_do_not_import_plotting():
    code = (
        "import sys, layerfast.estimators, layerfast.estimators.convergence; "
        "bad = [m for m in sys.modules if m.split('.')[0] == 'matplotlib' "
        "or m.startswith('layerfast.report')]; print(bad); sys.exit(bool(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
