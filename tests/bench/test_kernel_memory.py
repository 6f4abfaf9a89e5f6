"""``bench --kernel-bytes``: a size whose buffers do not fit in a safe share of the free memory
is refused in one line before anything is allocated, counting every buffer the kernels step
holds at once; the free-memory readings themselves."""

from __future__ import annotations

import pytest
import torch

from layerfast.bench import bandwidth, kernels, memory, runner
from layerfast.bench.machine import PeakMemory
from layerfast.errors import UsageError

CPU = torch.device("cpu")


def no_allocation(*args, **kwargs):
    raise AssertionError("the kernels step allocated before checking the size")


def test_a_huge_size_fails_before_allocating(monkeypatch):
    monkeypatch.setattr(kernels, "ceilings", no_allocation)
    monkeypatch.setattr(kernels, "kernel_inputs", no_allocation)
    with pytest.raises(UsageError) as e:
        kernels.measure(64, torch.bfloat16, CPU, 1 << 40, 3, 5.0)
    text = str(e.value)
    assert "\n" not in text and text.startswith("--kernel-bytes 1 TiB")
    assert "needs about 2" in text and "TiB of cpu memory" in text and "is free" in text


def test_a_small_free_memory_reading_refuses_a_small_size(monkeypatch):
    monkeypatch.setattr(kernels, "free_memory", lambda device: (20 << 20, "a test reading"))
    monkeypatch.setattr(kernels, "ceilings", no_allocation)
    with pytest.raises(UsageError) as e:
        kernels.measure(64, torch.float32, CPU, 16 << 20, 3, 5.0)
    text = str(e.value)
    assert "--kernel-bytes 16 MiB" in text and "needs about 32 MiB" in text
    assert (
        "only 20 MiB is free (a test reading" in text and "use --kernel-bytes 8MiB or less" in text
    )
    fits = 8 << 20
    assert kernels.peak_bytes(64, torch.float32, fits, CPU) <= 0.8 * (20 << 20)
    kernels.check_kernel_bytes(64, torch.float32, fits, CPU)  # the size it names passes
    monkeypatch.setattr(kernels, "free_memory", lambda device: (1 << 20, "a test reading"))
    with pytest.raises(UsageError, match="free some memory first"):
        kernels.check_kernel_bytes(64, torch.float32, 1 << 20, CPU)
    monkeypatch.setattr(kernels, "free_memory", lambda device: None)  # unknown: no check
    kernels.check_kernel_bytes(64, torch.float32, 1 << 40, CPU)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_peak_counts_what_the_step_holds(dtype):
    """Measured on this CPU, phase by phase after a small warm-up run (libraries load and
    thread pools start on first use): the bandwidth buffers, the inputs with their fp32 draw,
    each kernel call beside the inputs: each within the counted peak."""
    n_bytes, hidden = 32 << 20, 64
    kernels.measure(hidden, dtype, CPU, 1 << 20, 1, 0.5)  # warm-up
    counted = kernels.peak_bytes(hidden, dtype, n_bytes, CPU)
    with PeakMemory(CPU) as peak:
        bandwidth.ceilings(n_bytes, CPU, repeat=1)
    if peak.mb is None:
        pytest.skip("no peak memory reading on this system")
    seen = [peak.mb]
    with PeakMemory(CPU) as peak:
        x_in, x_out, mask = kernels.kernel_inputs(hidden, dtype, n_bytes, CPU)
    seen.append(peak.mb)
    held = 2 * x_in.numel() * x_in.element_size() / 2**20
    for call in kernels.providers(x_in, x_out, mask).values():
        with PeakMemory(CPU) as peak:
            call()
        seen.append(held + peak.mb)
    assert max(seen) * 2**20 <= 1.05 * counted, seen
    assert kernels.peak_bytes(hidden, dtype, n_bytes, torch.device("cuda")) > counted  # fp64 ref


def test_the_run_fails_before_its_first_step(tmp_path, monkeypatch):
    monkeypatch.setattr(kernels, "ceilings", no_allocation)
    opts = runner.Options(
        model="random:tiny",
        steps=("kernels",),
        kernel_bytes=1 << 40,
        out=tmp_path / "bench",
        progress=False,
        dtype="fp32",
    )
    with pytest.raises(UsageError, match="--kernel-bytes 1 TiB"):
        runner.run(opts)
    assert not (tmp_path / "bench" / "bench.txt").exists()


def test_free_memory_readings():
    found = memory.free_memory(CPU)
    if found is None:
        pytest.skip("neither /proc/meminfo nor sysconf here")
    free, source = found
    assert free > 0 and source
    assert memory.human(1 << 40) == "1 TiB" and memory.human(1536 << 20) == "1.5 GiB"
    assert memory.human(512) == "512 B"


def test_a_cgroup_limit_caps_the_host_reading(tmp_path, monkeypatch):
    (tmp_path / "memory.max").write_text("1073741824\n")
    (tmp_path / "memory.current").write_text(str(900 << 20) + "\n")
    (tmp_path / "memory.stat").write_text("anon 1\ninactive_file 104857600\n")
    monkeypatch.setattr(memory, "_CGROUP_V2", tmp_path)
    assert memory._cgroup_free() == (1 << 30) - (800 << 20)
    free, source = memory.host_free()
    assert free <= 224 << 20 and "cgroup" in source
    (tmp_path / "memory.max").write_text("max\n")
    assert memory._cgroup_free() is None
