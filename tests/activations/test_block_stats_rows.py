"""The C++ kernel's fused row sums (``kernels/block_stats_rows.h``): each segment's sums of |out|,
cos, angle, #small and #nonfinite over its real rows, which ``finish`` takes instead of its own
passes over the [5, B, T] rows.

* per row, cos is bit-identical to ``reference.cos_angle``'s operations correctly rounded (two
  roots, two clamps, a product, a quotient, in NumPy; torch's vectorised ones are an ulp off at
  times), NaN where it is NaN, and the angle is within 2 ulp of arccos(cos) / pi taken in
  extended precision (torch's own arccos is too);
* per segment, the fused sums equal those of the rows the kernel wrote, summed here in fp64 with
  the reference's ``cos_angle`` and the mask, to 1e-13 of the segment's row count (two fp64 sums
  in another order), counts exactly; with padding, holes, empty segments and NaN/inf rows;
* ``finish`` gives the same accumulators from the fused sums as from the rows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layerfast.activations.reference import cos_angle
from tests.activations.kernel_checks import DTYPES, NO_EXT, random_batch

pytestmark = pytest.mark.skipif(NO_EXT, reason="LAYERFAST_NO_EXT set")
FP64_RTOL = 1e-13  # fused sums vs sums of the written rows, relative to the terms' count
ANGLE_ULPS = 2


def extended_angle(cos: np.ndarray) -> np.ndarray:
    """arccos(clamp(cos, -1, 1)) / pi rounded once from the platform's long double (80-bit on
    x86-64); where long double is plain fp64 this is the fp64 value, rounded twice."""
    c = np.clip(cos, -1.0, 1.0).astype(np.longdouble)
    return (np.arccos(c) / np.longdouble(np.pi)).astype(np.float64)


def fused_cos_angle(dot, ssa, ssb):
    from layerfast import _block_stats_cpp

    n = dot.shape[0]
    cos, angle = np.empty(n), np.empty(n)
    _block_stats_cpp.row_cos_angle(dot, ssa, ssb, cos, angle)
    return cos, angle


def random_rows(n: int, seed: int):
    """dot, ssa, ssb [n] fp64 of random row pairs of odd sizes: independent, nearly parallel and
    antiparallel (cos a few ulp from +-1, at times past it by rounding), near cos +-1/2 (the
    arccos's branch points), zero rows, and NaN/inf entries."""
    g = torch.Generator().manual_seed(seed)
    d = int(torch.randint(1, 300, (1,), generator=g))
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = torch.randn(n, d, generator=g, dtype=torch.float64)
    kind = torch.arange(n) % 6
    noise = 1e-9 * torch.randn(n, d, generator=g, dtype=torch.float64)
    b = torch.where((kind == 1)[:, None], 3.0 * a + noise, b)  # cos ~ 1
    b = torch.where((kind == 2)[:, None], -0.5 * a + noise, b)  # cos ~ -1
    if d > 1:  # cos ~ +-1/2: b at 60 or 120 degrees from a within their plane
        u = a / a.norm(dim=1, keepdim=True)
        v = b - (b * u).sum(1, keepdim=True) * u
        v = v / v.norm(dim=1, keepdim=True)
        sign = torch.where(torch.arange(n) % 12 == 3, 1.0, -1.0)[:, None]
        b = torch.where((kind == 3)[:, None], sign * 0.5 * u + (0.75**0.5) * v, b)
    a[kind == 4] = 0.0  # |out| = 0: clamped norm, cos 0
    dot, ssa, ssb = (a * b).sum(1), (a * a).sum(1), (b * b).sum(1)
    bad = torch.nonzero(kind == 5)[:, 0]
    dot[bad[::3]] = float("nan")
    ssa[bad[1::3]] = float("inf")
    ssb[bad[2::3]] = float("nan")
    return dot.numpy(), ssa.numpy(), ssb.numpy()


def ieee_cos(dot, ssa, ssb) -> np.ndarray:
    """reference.cos_angle's cos in NumPy, whose roots and quotients are correctly rounded
    (torch's vectorised ones are not always: an ulp apart at times)."""
    with np.errstate(invalid="ignore"):
        norm_a, norm_b = np.sqrt(ssa), np.sqrt(ssb)
        clamped_a = np.where(norm_a < 1e-12, 1e-12, norm_a)
        clamped_b = np.where(norm_b < 1e-12, 1e-12, norm_b)
        return dot / (clamped_a * clamped_b)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_row_cos_is_the_references_and_angle_within_two_ulp(seed):
    dot, ssa, ssb = random_rows(5003, seed)
    cos, angle = fused_cos_angle(dot, ssa, ssb)
    want_cos = ieee_cos(dot, ssa, ssb)
    same = (cos.view(np.uint64) == want_cos.view(np.uint64)) | (np.isnan(cos) & np.isnan(want_cos))
    assert same.all(), (cos[~same][:5], want_cos[~same][:5])
    ref_cos, ref_angle = (x.numpy() for x in cos_angle(*map(torch.from_numpy, (dot, ssa, ssb))))
    np.testing.assert_allclose(cos, ref_cos, rtol=4.5e-16, atol=0)  # torch's: within 2 ulp
    assert np.array_equal(np.isnan(angle), np.isnan(ref_angle))
    ok = ~np.isnan(angle)
    want = extended_angle(cos[ok])
    ulps = np.abs(angle[ok] - want) / np.spacing(want)
    assert ulps.max() <= ANGLE_ULPS, (ulps.max(), cos[ok][ulps.argmax()])
    assert ((cos > 1) | (cos < -1)).any()  # the clamp was exercised


def test_arccos_within_two_ulp_on_a_dense_grid():
    """Uniform over [-1, 1] plus the neighbourhoods of -1, -1/2, 0, 1/2, 1 (ulps around the
    branch points) and the exact points themselves."""
    g = np.random.default_rng(7)
    exact = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, np.nextafter(0.5, 0), np.nextafter(-0.5, 0)])
    near = [p + g.uniform(-1e-6, 1e-6, 20_000) for p in (-0.5, 0.0, 0.5)]
    ends = [1 - g.uniform(0, 1e-6, 20_000), -1 + g.uniform(0, 1e-6, 20_000)]
    c = np.concatenate([g.uniform(-1, 1, 400_000), exact, *near, *ends])
    _, angle = fused_cos_angle(c.copy(), np.ones_like(c), np.ones_like(c))
    want = extended_angle(c)
    ulps = np.abs(angle - want) / np.spacing(want)
    assert ulps.max() <= ANGLE_ULPS, (ulps.max(), c[ulps.argmax()])
    assert angle[c == 1.0].item() == 0.0 and angle[c == 0.0].item() == 0.5


def segment_sums_from_rows(rows: torch.Tensor, mask: torch.Tensor, seg_len: int) -> torch.Tensor:
    """[B, S, 6] sums of 1, |out|, cos, angle, small, nonfinite over each segment's real rows,
    from the kernel's rows [5, B, T] with the reference's cos_angle."""
    dot, ssa, ssb, small, nonfinite = rows  # [B, T] each
    keep = mask.bool()
    cos, angle = cos_angle(dot, ssa, ssb)
    fields = [keep.double(), ssa.sqrt(), cos, angle.masked_fill(~keep, 0), small, nonfinite]
    per_row = torch.stack(fields, -1)  # [B, T, 6]
    B, T, _ = per_row.shape
    S = -(-T // seg_len)
    padded = torch.nn.functional.pad(per_row, (0, 0, 0, S * seg_len - T))  # [B, S * seg_len, 6]
    return padded.view(B, S, seg_len, 6).sum(2)


def segment_last_rows(rows: torch.Tensor, mask: torch.Tensor, seg_len: int) -> torch.Tensor:
    """[B, S, 3] dot, ssa, ssb of each segment's last real row (0 without one), from the rows."""
    B, T = mask.shape
    S = -(-T // seg_len)
    out = torch.zeros(B, S, 3, dtype=torch.float64)
    for b in range(B):
        for s in range(S):
            real = torch.nonzero(mask[b, s * seg_len : (s + 1) * seg_len])[:, 0]
            if len(real):
                out[b, s] = rows[:3, b, s * seg_len + int(real[-1])]
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seg_len", [1, 3, 128, 2048])
@pytest.mark.parametrize("shape", [(3, 300, 67), (2, 1, 5), (4, 1023, 31)])
def test_fused_segment_sums_are_those_of_the_rows(dtype, seg_len, shape):
    from layerfast.activations.block_stats_cpp import cpp_block_stats

    x_in, x_out, mask = random_batch(shape, dtype, seed=seg_len + shape[1])
    B, T, _ = shape
    if T > 10:
        mask[0, 5 : T - 4] = 0  # a hole across segments (whole segments of padding)
        x_out[B - 1, 2, 0] = float("nan")
        x_out[B - 1, 3, 1] = float("inf")
        x_in[B - 1, 4] *= -1e30 if dtype != torch.float16 else -1e4  # inf or huge |in|
    mask[B - 1, T - 1] = 0
    for threads in (1, 2):
        mask8 = mask.to(torch.uint8)
        p = cpp_block_stats(x_in, x_out, mask8, 0.3, False, seg_len, threads, with_rows=True)
        assert cpp_block_stats(x_in, x_out, mask8, 0.3, False, seg_len, threads).rows is None
        want = segment_sums_from_rows(p.rows, mask, p.seg_len)
        got = p.seg_sums
        assert got.shape == want.shape
        scale = torch.full_like(want, float(p.seg_len))
        close = ((got - want).abs() <= FP64_RTOL * scale) | (got == want)  # == for inf
        same_nan = got.isnan() & want.isnan()
        assert (close | same_nan).all(), (got[~(close | same_nan)], want[~(close | same_nan)])
        counts = [0, 4, 5]  # real rows, #small, #nonfinite: exactly
        assert torch.equal(got[..., counts], want[..., counts])
        last = segment_last_rows(p.rows, mask, p.seg_len)
        torch.testing.assert_close(p.seg_last, last, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_finish_takes_the_fused_sums_as_it_takes_the_rows(dtype):
    from layerfast.activations.block_stats_cpp import cpp_block_stats
    from layerfast.activations.finish import finish

    x_in, x_out, mask = random_batch((5, 517, 43), dtype, seed=3)
    mask[2] = 0  # a sample of padding only
    mask[3, 200:] = 0  # a sample whose last real row is inside a segment
    p = cpp_block_stats(x_in, x_out, mask.to(torch.uint8), 0.3, False, seg_len=128, with_rows=True)
    fused = finish(p._replace(rows=None), mask)
    plain = finish(p._replace(seg_sums=None, seg_last=None), mask)
    assert list(fused) == list(plain)
    for key in ("small", "nonfinite", "n_tokens", "n_entries", "n_samples"):
        assert fused[key] == plain[key]
    for key in ("last_cos_sum", "last_angle_sum"):
        assert fused[key] == plain[key]
    for key in ("norm_sum", "cos_sum", "angle_sum"):
        assert fused[key] == pytest.approx(plain[key], rel=1e-13, abs=1e-13 * fused["n_tokens"])
    for key in ("ch_mean", "ch_m2"):
        assert torch.equal(fused[key], plain[key])
