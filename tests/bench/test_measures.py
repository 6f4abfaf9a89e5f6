"""The bench's meters and the kernels/overhead steps on small inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from layerfast.bench import kernels, overhead
from layerfast.bench.bandwidth import ceilings
from layerfast.bench.machine import PeakMemory, describe, times
from layerfast.bench.workload import load_model


def test_describe_names_the_machine():
    info = describe(torch.device("cpu"), torch.float32)
    assert info["cores"] >= 1 and info["dtype"] == "float32" and info["torch"] == torch.__version__
    assert info["commit"]


def test_times_stops_at_the_budget():
    calls = []
    got = times(lambda: calls.append(1), torch.device("cpu"), repeat=5)
    assert len(got) == 5 and len(calls) == 6  # one warm-up
    slow = times(lambda: sum(range(200_000)), torch.device("cpu"), repeat=1000, budget_s=0.0)
    assert len(slow) == 3


@pytest.mark.skipif(
    not __import__("pathlib").Path("/proc/self/clear_refs").exists(), reason="Linux"
)
def test_peak_memory_sees_an_allocation():
    with PeakMemory(torch.device("cpu")) as peak:
        x = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MiB, touched
        del x
    assert peak.mb is not None and peak.mb >= 60


def test_ceilings_are_positive():
    got = ceilings(8 << 20, torch.device("cpu"), repeat=3)
    assert set(got) == {"copy", "read"}
    assert got["copy"]["bytes"] == 2 * (8 << 20) and got["read"]["bytes"] == 8 << 20
    assert all(v["GB/s"] > 0 and len(v["seconds"]) == 3 for v in got.values())


def test_kernel_inputs_hold_the_bytes():
    x_in, x_out, mask = kernels.kernel_inputs(48, torch.bfloat16, 3 << 20, torch.device("cpu"))
    assert x_in.shape == x_out.shape and x_in.shape[1:] == (2048, 48)
    assert 2 * x_in.numel() * 2 >= 3 << 20 and mask.all()


def test_kernels_step_rows_and_ratios():
    summary, rows, lines = kernels.measure(64, torch.float32, torch.device("cpu"), 4 << 20, 3, 5.0)
    assert summary["copy_GB/s"] > 0 and summary["read_GB/s"] > 0
    for entry in summary.values():
        if isinstance(entry, dict):
            assert math.isclose(entry["of_copy"], entry["GB/s"] / summary["copy_GB/s"])
    assert {r["bench"] for r in rows} >= {"bandwidth"} and any("of copy" in ln for ln in lines)


def test_numpy_statistics_match_the_reference():
    from layerfast.activations.reference import block_stats_ref

    g = torch.Generator().manual_seed(0)
    hidden = [torch.randn(2, 5, 7, generator=g) for _ in range(3)]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    got = overhead.numpy_statistics([h.numpy() for h in hidden], mask.numpy(), 1e-5)
    for block in range(2):
        acc = block_stats_ref(hidden[block], hidden[block + 1], mask, 1e-5, False)
        assert got["bi"][block] == pytest.approx(1 - acc["cos_sum"] / acc["n_tokens"], abs=1e-5)
        assert got["norm"][block] == pytest.approx(acc["norm_sum"] / acc["n_tokens"], rel=1e-5)
        assert got["av"][block] == pytest.approx(acc["av_sum"] / acc["n_samples"], rel=1e-5)


def test_overhead_ways_run_the_same_forward():
    model = load_model("random:tiny", "cpu", "fp32")
    ids = torch.randint(3, 500, (2, 9))
    mask = torch.ones_like(ids)
    ways = overhead.ways(model, ids, mask)
    assert len(ways) == 4
    accs = ways[next(w for w in ways if w.startswith("statistics"))]()
    assert len(accs) == model.n_blocks and all(a["n_tokens"] == 18 for a in accs)
    summary, rows, lines = overhead.measure(model, 2, 16, 2, 5.0)
    assert np.isfinite(summary["overhead_vs_hf_forward"]) and len(rows) >= 4
