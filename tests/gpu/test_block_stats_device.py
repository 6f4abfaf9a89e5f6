"""The Triton statistics kernel on the test device against the fp64 reference, and ``lf.stats``
on a tiny model on the device with the Triton backend against the PyTorch one.

Tolerances, by input dtype. The kernel reads the stored values exactly (bf16/fp16 -> fp32 is
exact) and accumulates in fp32, so the dtype changes what is computed, not the error, and one
rule holds for all three (:mod:`tests.activations.kernel_checks`, whose checker this file uses):

==========  ======================================================  ============================
dtype       float accumulators vs ``block_stats_ref`` (fp64)        counts
==========  ======================================================  ============================
float32     <= 2 x max|ref32 - ref64| + 16 fp32 ulps of the scale   exact (relative ``small``: 2)
bfloat16    <= 2 x max|ref32 - ref64| + 16 fp32 ulps of the scale   exact (relative ``small``: 2)
float16     <= 2 x max|ref32 - ref64| + 16 fp32 ulps of the scale   exact (relative ``small``: 2)
==========  ======================================================  ============================

``lf.stats`` metrics, Triton vs the ``torch`` backend on the same model and texts (the forward
passes are identical, so only the kernel's fp32 accumulation differs): :data:`STATS_TOL` below,
per dtype of the pass; token and NaN counts and ``as_zero`` exact, ``as`` exact for an absolute
threshold and within 2 entries per block for a relative one (then AVSS within that share more).

Cases: the CPU suite's shapes (:data:`~tests.activations.kernel_checks.KERNEL_SHAPES`: 1 token,
primes, hidden 1023) plus :data:`DEVICE_SHAPES` (long sequences with small hidden sizes so that
Triton's interpreter stays quick in the dry run, and hidden sizes up to the kernel's 16384).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import layerfast as lf
from layerfast.activations import dispatch
from layerfast.activations.collect import block_streams, stats
from layerfast.activations.reference import block_stats_ref, empty, merge
from layerfast.models import copy_as
from layerfast.models.inputs import pad_right
from tests.activations.kernel_checks import (
    DTYPES,
    KERNEL_SHAPES,
    RELATIVE_SMALL_SLACK,
    assert_matches_reference,
    random_batch,
)
from tests.conftest import TINY_ITEMS
from tests.helpers.tiny_models import tiny_model

pytestmark = pytest.mark.gpu

# lf.stats, Triton vs torch backend, per dtype of the pass: float metrics within
# atol + rtol x |torch|. fp32 accumulation over ~100 tokens of hidden 32 is off by ~1e-7
# relative; these leave a margin of 100x for the device's own reduction order.
STATS_TOL = {  # dtype: (rtol, atol)
    torch.float32: (1e-5, 1e-6),
    torch.bfloat16: (1e-5, 1e-6),
    torch.float16: (1e-5, 1e-6),
}

DEVICE_SHAPES = [(2, 1023, 16), (1, 4099, 8), (4, 509, 31), (1, 3, 4096), (1, 5, 4099)]
DEVICE_SHAPES += [(1, 2, dispatch.TRITON_MAX_HIDDEN)]
FLOAT_METRICS = ("av", "bi", "angular", "angular_last", "norm", "channel_var")
TEXTS = [f"{context} {choice}" for context, choices, _ in TINY_ITEMS for choice in choices]


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def shape_id(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


@pytest.fixture(scope="module")
def triton_ready(device):
    """Skip on a CPU device without the interpreter (possible only on a machine with CUDA)."""
    interpreted = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    if device.type == "cpu" and not interpreted:
        pytest.skip("a CPU test device runs the Triton kernel only with TRITON_INTERPRET=1")
    return device


def triton_on(device, x_in, x_out, mask, eps=0.3, relative=False):
    """``dispatch.block_stats`` with the Triton backend on ``device`` (inputs moved there)."""
    backend = dispatch.resolve("triton", device, x_out.dtype)
    assert backend == "triton"
    return dispatch.block_stats(
        x_in.to(device), x_out.to(device), mask.to(device), eps, relative, backend
    )


@pytest.mark.parametrize("shape", KERNEL_SHAPES + DEVICE_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("relative", [False, True])
def test_triton_matches_reference(triton_ready, shape, dtype, relative):
    x_in, x_out, mask = random_batch(shape, dtype, seed=7 * sum(shape) + relative)
    got = triton_on(triton_ready, x_in, x_out, mask, relative=relative)
    assert_matches_reference(got, x_in, x_out, mask, eps=0.3, relative=relative)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_triton_padding_layouts(triton_ready, dtype):
    """Left padding, holes, a sample with no real token, a batch of padding only, and strided
    views made on the device (strides along B and T only)."""
    x_in, x_out, mask = random_batch((4, 37, 29), dtype, seed=3)
    mask[0] = 0
    mask[1, :5] = 0  # left padding: the last real position is T - 1
    mask[2, ::3] = 0  # holes
    for m in (mask, torch.zeros_like(mask)):
        assert_matches_reference(triton_on(triton_ready, x_in, x_out, m), x_in, x_out, m)
    g = torch.Generator().manual_seed(4)
    big_in, big_out = (torch.randn(4, 74, 40, generator=g).to(dtype) for _ in range(2))
    dev_in, dev_out = big_in.to(triton_ready), big_out.to(triton_ready)
    view_in, view_out = dev_in[:, ::2, 3:32], dev_out[:, 1::2, 5:34]
    assert view_in.stride(-1) == 1 and not view_in.is_contiguous()
    got = triton_on(triton_ready, view_in, view_out, mask)
    assert_matches_reference(got, big_in[:, ::2, 3:32], big_out[:, 1::2, 5:34], mask)


def test_triton_merge_across_batches_equals_one_shot(triton_ready):
    x_in, x_out, mask = random_batch((7, 19, 33), torch.float16, seed=11)
    acc = empty(33)
    for rows in ([0], [1, 2, 3], [4, 5, 6]):
        acc = merge(acc, triton_on(triton_ready, x_in[rows], x_out[rows], mask[rows]))
    assert_matches_reference(acc, x_in, x_out, mask)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_triton_counts_nonfinite(triton_ready, dtype):
    x_in, x_out, mask = random_batch((2, 5, 17), dtype, seed=5)
    x_out = x_out + 10.0  # nothing near zero
    x_out[0, 0, 3], x_out[0, 0, 4], x_out[1, 0, 0] = float("nan"), float("inf"), -float("inf")
    got = triton_on(triton_ready, x_in, x_out, mask, eps=1e-5)
    assert got["nonfinite"] == block_stats_ref(x_in, x_out, mask)["nonfinite"] == 3
    assert got["small"] == 0


def test_auto_backend_on_the_device(device, monkeypatch):
    """``backend="auto"`` picks Triton on CUDA (a broken Triton install would fall back to the
    reference silently), the C++ extension (or the reference) on the CPU."""
    monkeypatch.delenv(dispatch.ENV, raising=False)
    got = dispatch.resolve("auto", device, torch.bfloat16)
    if device.type == "cuda":
        assert got == "triton", dispatch.available()
    else:
        assert got == ("cpp" if not dispatch.available()["cpp"] else "torch")


@pytest.fixture(scope="module")
def stats_model_on_device(device, tiny_tokenizer_fixture):
    """A tiny fp32 Qwen2 on the device (blocks of hidden 32)."""
    hf = tiny_model("qwen2", seed=4, vocab_size=len(tiny_tokenizer_fixture))
    return lf.load(hf.to(device, torch.float32), tokenizer=tiny_tokenizer_fixture)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_triton_on_model_streams(triton_ready, stats_model_on_device, dtype):
    """Each block's real residual streams, produced on the device, through the Triton kernel."""
    model = copy_as(stats_model_on_device, dtype)
    assert model.device.type == triton_ready.type and model.dtype == dtype
    ids, mask = pad_right([list(model.tokenizer.encode(t)) for t in TEXTS[:7]])
    with torch.inference_mode():
        for _, x_in, x_out in block_streams(model, ids, mask):
            assert x_out.device.type == triton_ready.type
            got = triton_on(triton_ready, x_in, x_out, mask, eps=0.05)
            assert_matches_reference(got, x_in.cpu(), x_out.cpu(), mask, eps=0.05)


@pytest.mark.parametrize("stats_dtype", ["model", "bf16", "fp16"])
@pytest.mark.parametrize("relative", [False, True])
def test_stats_triton_matches_torch(triton_ready, stats_model_on_device, stats_dtype, relative):
    model = stats_model_on_device
    options = dict(eps=0.05, relative=relative, batch_size=8, progress=False)
    tri = stats(model, TEXTS, backend="triton", stats_dtype=stats_dtype, **options)
    ref = stats(model, TEXTS, backend="torch", stats_dtype=stats_dtype, **options)
    assert (tri["backend"], ref["backend"]) == ("triton", "torch")
    assert (
        tri["dtype"]
        == ref["dtype"]
        == {"model": "float32", "bf16": "bfloat16"}.get(stats_dtype, "float16")
    )
    rtol, atol = STATS_TOL[getattr(torch, tri["dtype"])]
    for key in ("n_tokens", "nonfinite", "as_zero"):
        assert np.array_equal(tri[key], ref[key]), key
    n_entries = ref["n_tokens"] * model.config.hidden_size
    as_slack = RELATIVE_SMALL_SLACK / n_entries if relative else 0.0
    assert np.all(np.abs(tri["as"] - ref["as"]) <= as_slack), (tri["as"], ref["as"])
    assert (ref["as"] > 0).all()  # AVSS is defined, so its check below means something
    for key in FLOAT_METRICS:
        np.testing.assert_allclose(tri[key], ref[key], rtol=rtol, atol=atol, err_msg=key)
    # AVSS = AV / AS: AV's tolerance plus AS's share of slack.
    avss_rtol = rtol + as_slack / ref["as"]
    assert np.all(np.abs(tri["avss"] - ref["avss"]) <= avss_rtol * np.abs(ref["avss"]) + atol)
    np.testing.assert_allclose(tri["navss"], ref["navss"], rtol=2 * avss_rtol.max(), atol=atol)
