"""The device suite's device: ``LAYERFAST_TEST_DEVICE`` (``cuda``, ``cuda:1``, ``cpu``) when set,
else ``cuda`` when torch sees a GPU.

On a GPU machine: ``pytest -m gpu tests/gpu``. The dry run on the CPU, which keeps the suite
from rotting where no GPU is: ``LAYERFAST_TEST_DEVICE=cpu TRITON_INTERPRET=1 pytest -m gpu
tests/gpu`` (the Triton kernel then runs in Triton's interpreter). Without CUDA and without the
variable, every test marked ``gpu`` is skipped at collection (``tests/conftest.py``).
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.conftest import GPU_SKIP_REASON, TEST_DEVICE_ENV

# A CPU test device on a machine with CUDA still needs the interpreter for the Triton kernel;
# it has to be chosen before the kernel module is imported, so here, before any test module.
if os.environ.get(TEST_DEVICE_ENV, "").strip().lower().startswith("cpu"):
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device every test of this folder runs on (see the module docstring)."""
    name = os.environ.get(TEST_DEVICE_ENV, "").strip()
    if not name:
        if not torch.cuda.is_available():
            pytest.skip(GPU_SKIP_REASON)
        name = "cuda"
    try:
        dev = torch.device(name)
        torch.empty(1, device=dev)  # the one test that works for every backend
    except Exception as exc:  # noqa: BLE001  (torch raises Runtime/Assertion/ValueError)
        pytest.fail(f"{TEST_DEVICE_ENV}={name!r} is not a device this torch can use: {exc}")
    return dev
