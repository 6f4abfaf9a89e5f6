"""The GPU suite cannot rot: ``benchmarks/gpu/run.sh --dry-run`` runs its three steps on the CPU
(tiny model, Triton's interpreter, the packages the GPU image lacks hidden) and must pass."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = {"machine.txt", "pytest.txt", "bench.txt", "bench.json", "bench.csv", "summary.txt"}


def test_dry_run_passes(tmp_path):
    out = tmp_path / "gpu"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAYERFAST_", "TRITON_"))}
    env["PYTHON"] = sys.executable
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks/gpu/run.sh"), "--dry-run", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    files = {p.name for p in out.iterdir()}
    assert FILES | {"suite.log"} == files, files
    assert len(files) <= 8
    pytest_txt = (out / "pytest.txt").read_text()
    assert " passed" in pytest_txt and "failed" not in pytest_txt and "error" not in pytest_txt
    record = json.loads((out / "bench.json").read_text())
    assert set(record["steps"]) == {"kernels", "overhead", "sweep", "stacking"}
    assert record["model"]["name"] == "random:tiny"
    summary = (out / "summary.txt").read_text()
    assert summary.count("MET") + summary.count("MISSED") >= 3, summary
    assert sum(p.stat().st_size for p in out.iterdir()) < 4 << 20


def test_summary_judges_the_goals(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks/gpu"))
    try:
        import summary
    finally:
        sys.path.pop(0)
    bench = {
        "options": {"project_items": None},
        "steps": {
            "kernels": {
                "copy_GB/s": 3000.0,
                "read_GB/s": 3300.0,
                "triton kernel": {"GB/s": 2500.0, "of_copy": 2500 / 3000, "of_read": 0.82},
                "triton + finish": {"of_copy": 0.7, "of_read": 0.72},
            },
            "overhead": {"overhead_vs_hf_forward": 0.05, "overhead_vs_forward_loop": 0.04},
            "sweep": {
                "proximity": {
                    "n_coalitions_full": 190,
                    "seed_over_fast": 9.0,
                    **{
                        p: {"projected_full_s": s}
                        for p, s in (("fast", 420.0), ("naive", 900.0), ("seed", 3000.0))
                    },
                }
            },
        },
    }
    bench["steps"]["stacking"] = {
        "dtype": "bfloat16",
        "items": 12,
        "batches_padded_tokens": [2000],
        "group": [4],
        "prefix_over_stacked": 1.8,
        "max_abs_diff": 0.01,
    }
    verdicts = [met for _, met, _ in summary.goals(bench)]
    assert verdicts == [True, False, True, True]
    bench["steps"]["sweep"]["proximity"]["fast"]["projected_full_s"] = 601.0
    assert summary.goals(bench)[2][1] is False
    bench["steps"]["kernels"]["triton + finish"]["of_read"] = 0.65  # the kernel alone passes
    assert summary.goals(bench)[0][1] is False
    bench["steps"]["stacking"]["max_abs_diff"] = 0.2  # faster, but outside the tolerance
    assert summary.goals(bench)[3][1] is False
    assert summary.main(str(tmp_path)) == 1  # no bench.json
