"""Routing of the statistics op: the backend registry, ``resolve`` (``auto``, the environment
variable, availability) and the input checks, done once in ``dispatch.block_stats``, that raise
:class:`~layerfast.errors.UsageError` for what a kernel does not take."""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest
import torch

from layerfast.activations import dispatch
from layerfast.errors import UsageError
from tests.activations.kernel_checks import BACKEND_PARAMS


def test_backend_registry():
    assert dispatch.BACKENDS == ("auto", "triton", "cpp", "torch")
    assert set(dispatch.available()) == set(dispatch.BACKENDS) - {"auto"}


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_kernel_refuses_what_it_does_not_take(backend):
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    mask = torch.ones(2, 3)
    with pytest.raises(UsageError, match="float32, bfloat16 or float16"):
        dispatch.resolve(backend, x.device, x.dtype)
    with pytest.raises(UsageError, match="float32, bfloat16 or float16"):
        dispatch.block_stats(x, x, mask, backend=backend)
    y = torch.randn(2, 8, 3).transpose(1, 2)  # [2, 3, 8], stride 3 along d
    with pytest.raises(UsageError, match="unit stride"):
        dispatch.block_stats(y, y, mask, backend=backend)
    with pytest.raises(UsageError, match="dtypes differ"):
        dispatch.block_stats(y.float(), y.half(), mask, backend=backend)
    with pytest.raises(UsageError, match=r"\[B, T, d\]"):
        dispatch.block_stats(torch.zeros(3, 8), torch.zeros(3, 8), mask, backend=backend)


def test_block_stats_takes_a_resolved_backend():
    x = torch.zeros(1, 2, 4)
    with pytest.raises(UsageError, match="resolved"):
        dispatch.block_stats(x, x, torch.ones(1, 2), backend="auto")


def test_backend_choice(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("LAYERFAST_BACKEND", raising=False)
    reasons = dispatch.available()
    auto = "cpp" if not reasons["cpp"] else "torch"
    assert dispatch.resolve("auto", cpu, torch.bfloat16) == auto
    assert dispatch.resolve("auto", cpu, torch.float64) == "torch"
    monkeypatch.setenv("LAYERFAST_BACKEND", "torch")
    assert dispatch.resolve("auto", cpu, torch.float32) == "torch"
    monkeypatch.setenv("LAYERFAST_BACKEND", "cuda")
    with pytest.raises(UsageError, match="LAYERFAST_BACKEND"):
        dispatch.resolve("auto", cpu, torch.float32)
    with pytest.raises(UsageError, match="unknown statistics backend"):
        dispatch.resolve("tritton", cpu, torch.float32)
    monkeypatch.setattr(
        dispatch, "available", lambda: {"torch": "", "cpp": "not built", "triton": "no CUDA"}
    )
    monkeypatch.delenv("LAYERFAST_BACKEND")
    assert dispatch.resolve("auto", cpu, torch.float32) == "torch"
    with pytest.raises(UsageError, match="not built"):
        dispatch.resolve("cpp", cpu, torch.float32)


def test_compiled_backends_are_installed():
    """The README's install builds the C++ extension and installs Triton (Linux): a failed build
    must show here rather than as a silent fallback to the slow reference."""
    reasons = dispatch.available()
    if os.environ.get("LAYERFAST_NO_EXT", "0") in ("", "0"):
        assert reasons["cpp"] == "", reasons["cpp"]
    if sys.platform == "linux":
        assert importlib.util.find_spec("triton") is not None, (
            "pip install -e '.[test]' installs triton"
        )
