"""``finish``: the kernels' partials -> the reference's fp64 accumulators, on the partials' device.

Three checks, each on the CPU and, with a GPU, on CUDA (``gpu`` mark):

* finish adds no error of its own: exact fp64 partials (built here from the inputs with plain
  torch) give the fp64 reference's accumulators to 1e-10 of each field's scale (both are fp64
  sums in another order, about n x 2**-53 apart: 1e-13 here);
* on each compiled kernel's own partials (fp64 from the C++ kernel, fp32 from Triton, moved to
  the device under test), fresh random inputs of odd shapes (B = 1, T = 1, T = 37 and 1023,
  d = 1, primes), padding layouts down to a batch of padding, fp32/bf16/fp16 input, within the
  project rule ``|k - ref64| <= 2 |ref32 - ref64| + atol`` (:mod:`tests.activations.kernel_checks`);
* the result is the accumulator dict of ``reference.empty``: Python floats and fp64 CPU channel
  vectors whatever the partials' device, so ``merge`` and ``summarize`` take it; on CUDA one
  device synchronisation per call.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from layerfast.activations.collect import summarize
from layerfast.activations.finish import Partials, finish
from layerfast.activations.reference import FIELDS, block_stats_ref, empty, merge
from tests.activations.kernel_checks import (
    BACKEND_PARAMS,
    COUNTS,
    DTYPES,
    assert_matches_reference,
    field_scale,
    random_batch,
)

CUDA = torch.cuda.is_available()
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs CUDA")]
    ),
]
SHAPES = [(1, 1, 1), (3, 1, 5), (1, 37, 1), (2, 37, 31), (2, 1023, 13), (1, 257, 97), (5, 7, 31)]
LAYOUTS = ("full", "right", "left", "holes", "empty_sample", "all_padding")
EPS = 0.3
FP64_RTOL = 1e-10  # finish vs the reference on exact partials, relative to the field's scale


def padding_mask(layout: str, b: int, t: int, seed: int) -> torch.Tensor:
    """A long mask [b, t] (1 = real token) of the named padding layout."""
    mask = torch.ones((b, t), dtype=torch.long)
    lengths = torch.randint(1, t + 1, (b,), generator=torch.Generator().manual_seed(seed))
    for row, length in enumerate(lengths.tolist()):
        if layout == "right":
            mask[row, length:] = 0
        elif layout == "left":
            mask[row, : t - length] = 0
    if layout == "holes":
        mask[:, 1::3] = 0
    elif layout == "empty_sample":
        mask[0] = 0
        mask[1:, t // 2 :] = 0
    elif layout == "all_padding":
        mask[:] = 0
    return mask


def kernel_partials(backend, x_in, x_out, mask, eps=EPS, relative=False) -> Partials:
    """A kernel's raw partials: C++ on the CPU; Triton on CUDA when there is a GPU, else in the
    interpreter on the CPU."""
    mask8 = mask.to(torch.uint8).contiguous()
    if backend == "cpp":
        from layerfast.activations.block_stats_cpp import cpp_block_stats

        return cpp_block_stats(x_in, x_out, mask8, eps, relative)
    from layerfast.activations.block_stats_triton import triton_block_stats

    if CUDA:
        x_in, x_out, mask8 = x_in.cuda(), x_out.cuda(), mask8.cuda()
    return triton_block_stats(x_in, x_out, mask8, eps, relative)


def exact_partials(x_in, x_out, mask, seg_len: int, eps=EPS) -> Partials:
    """The partials of the kernels' contract computed in fp64 with plain torch (absolute
    threshold): per-row scalars (0 on padding) and two-pass channel moments per segment."""
    a, b = x_out.double(), x_in.double()  # [B, T, d]
    B, T, d = a.shape
    keep = mask.bool()
    rows = (
        torch.stack(
            [
                (a * b).sum(-1),
                (a * a).sum(-1),
                (b * b).sum(-1),
                (a.abs() < eps).sum(-1).double(),
                (~torch.isfinite(a)).sum(-1).double(),
            ]
        )
        * keep
    )  # [5, B, T]
    S = -(-T // seg_len)

    def segments(x):  # [B, T, d] -> [B, S, seg_len, d], zero past T
        return torch.nn.functional.pad(x, (0, 0, 0, S * seg_len - T)).view(B, S, seg_len, d)

    k = segments(keep[..., None].double().expand(B, T, d))
    n = k.sum(2)  # [B, S, d]
    seg_mean = (segments(a) * k).sum(2) / n.clamp_min(1)
    seg_m2 = ((segments(a) - seg_mean[:, :, None]) * k).square().sum(2)
    return Partials(rows, seg_mean, seg_m2, seg_len)


def on(partials: Partials, device: str) -> Partials:
    """``partials`` with every tensor on ``device`` (the optional ones that are None stay so)."""
    fields = partials._asdict().items()
    return partials._replace(**{k: v.to(device) for k, v in fields if isinstance(v, torch.Tensor)})


# ---- finish adds no error of its own -------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seg_len", [1, 5, 64, 2048])
@pytest.mark.parametrize("offset", [0.0, 100.0])
def test_finish_of_exact_partials_is_the_reference(device, shape, seg_len, offset):
    x_in, x_out, mask = random_batch(shape, torch.float32, seed=sum(shape) + seg_len)
    x_out = x_out + offset  # a large channel mean: the segments' spread is a small difference
    got = finish(on(exact_partials(x_in, x_out, mask, seg_len), device), mask.to(device))
    want = block_stats_ref(x_in, x_out, mask, EPS)
    assert list(got) == list(want)
    for key, value in want.items():
        g, w = np.asarray(got[key], float), np.asarray(value, float)
        if key in COUNTS:
            assert np.array_equal(g, w), (key, g, w)
            continue
        atol = FP64_RTOL * max(field_scale(key, want), 1.0)
        np.testing.assert_allclose(g, w, rtol=FP64_RTOL, atol=atol, err_msg=key)


# ---- on the kernels' own partials, against the reference's own error ----------------------------


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_finish_of_kernel_partials_matches_reference(backend, device, shape, dtype):
    x_in, x_out, mask = random_batch(shape, dtype, seed=3 * sum(shape))
    partials = on(kernel_partials(backend, x_in, x_out, mask), device)
    got = finish(partials, mask.to(device))
    assert_matches_reference(got, x_in, x_out, mask, eps=EPS)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(4, 37, 29), (3, 1023, 13)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_finish_padding_layouts(backend, device, shape, layout):
    x_in, x_out, _ = random_batch(shape, torch.bfloat16, seed=5)
    mask = padding_mask(layout, shape[0], shape[1], seed=len(layout))
    partials = on(kernel_partials(backend, x_in, x_out, mask, relative=True), device)
    got = finish(partials, mask.to(device))
    assert_matches_reference(got, x_in, x_out, mask, eps=EPS, relative=True)
    if layout == "all_padding":
        assert got["n_tokens"] == 0 and not got["ch_m2"].any()


# ---- the accumulator contract ------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_finish_returns_cpu_accumulators_that_merge(device):
    """The fields of ``empty(d)``: floats, and fp64 CPU [d] channel vectors, as the reference's
    on the same device; so every backend's accumulators merge and summarise."""
    d = 6
    x_in, x_out, mask = random_batch((3, 11, d), torch.float32, seed=2)
    ref = block_stats_ref(x_in.to(device), x_out.to(device), mask.to(device))
    no_rows = Partials(torch.zeros(5, 3, 0), torch.zeros(3, 0, d), torch.zeros(3, 0, d), 4)
    results = [
        finish(on(exact_partials(x_in, x_out, m, seg_len=4), device), m.to(device))
        for m in (mask, torch.zeros_like(mask))
    ] + [finish(on(no_rows, device), torch.zeros(3, 0, device=device))]
    for acc in [ref, *results]:
        assert list(acc) == list(empty(d))
        assert all(type(acc[key]) is float for key in FIELDS)
        for key in ("ch_mean", "ch_m2"):
            vec = acc[key]
            assert (vec.dtype, vec.device.type, tuple(vec.shape)) == (torch.float64, "cpu", (d,))
    for got in results:
        for acc in (merge(merge(empty(d), got), ref), merge(ref, got)):
            res = summarize([acc], eps=EPS, relative=False, dtype="float32")
            assert res["n_tokens"][0] == ref["n_tokens"] + got["n_tokens"]
            assert np.isfinite(res["channel_var"]).all()


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_finish_synchronises_once_on_cuda():
    x_in, x_out, mask = random_batch((4, 300, 64), torch.float32, seed=4)
    partials, device_mask = on(exact_partials(x_in, x_out, mask, seg_len=64), "cuda"), mask.cuda()
    finish(partials, device_mask)  # warm-up: cuBLAS handles, first launches
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            finish(partials, device_mask)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    syncs = [str(w.message) for w in caught if "synchronizing" in str(w.message)]
    assert len(syncs) == 1, syncs
