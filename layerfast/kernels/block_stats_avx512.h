// The fold on CPUs with AVX-512 (F, BW, VL, DQ) and AVX512-BF16 (Zen 4, Sapphire Rapids and
// later), included by block_stats_simd.h when the compiler targets them (setup.py adds
// -march=x86-64-v4 -mavx512bf16 where the building CPU has them). Same contract as the AVX2
// folds there, with two differences in how the work is laid out:
//
// * up to ROWS rows are folded at once, 32 channels a step: each channel sum (shift, s1, s2) is
//   loaded and stored once per step for all of them. One row at a time, those stores (8 bytes a
//   channel, twice the bytes a bf16 row brings in) bound the fold at a third of the read
//   bandwidth; four at a time it runs at the read bandwidth out of cache (hidden 576, bf16).
// * bf16: dot(a, b), |a|^2 and |b|^2 by VDPBF16PS on the raw patterns (no widening): each lane
//   adds the exact fp32 products of two neighbouring channels into an fp32 sum, rounding to
//   nearest even. The instruction treats bf16 subnormal inputs (|x| < 1.2e-38) as 0: a product
//   of such an x with a y above ~1e30 is dropped, none other changes by more than fp32 rounding.
//   The channel moments use the channels widened in order (one VPERMW with zero-masking per 16),
//   so channel c's sums stay at c.
// * a row's last d % 32 channels run as one masked step: no scalar tail.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace simd {
namespace avx512 {

constexpr int ROWS = 4;  // rows folded at once where a row fills a 4 KiB page (ROW_BYTES)
constexpr int64_t ROW_BYTES = 4096;

// One row's sums while it runs: dot(a, b), |a|^2, |b|^2 (fp32 lanes) and #|a| < thr.
struct RowAcc {
  __m512 dot = _mm512_setzero_ps(), ssa = _mm512_setzero_ps(), ssb = _mm512_setzero_ps();
  int64_t small = 0;

  void write(double* out) const {
    out[0] = double(_mm512_reduce_add_ps(dot));
    out[1] = double(_mm512_reduce_add_ps(ssa));
    out[2] = double(_mm512_reduce_add_ps(ssb));
    out[3] = double(small);
  }
};

// A step of 32 channels of one row, per dtype: its scalars into acc (channels selected by m),
// its block output widened to fp32 in channel order (x[0]: channels 0-15, x[1]: 16-31; zero
// where m is clear).
struct BF16Rows {
  using T = uint16_t;
  struct Bound {
    __m512i v;  // |a| < thr exactly when (bits & 0x7fff) < v (see bf16_count_bound)
    Bound() = default;
    explicit Bound(float thr) : v(_mm512_set1_epi16(bf16_count_bound(thr))) {}
  };

  static __m512 widen(int first, __m512i r) {
    const __m512i index = _mm512_add_epi16(
        _mm512_set1_epi16(int16_t(first)),
        _mm512_set_epi16(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8, 7, 7, 6, 6, 5,
                         5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0));
    // word j of the result: word index[j] of r where j is odd (the float's high half), else 0
    return _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xAAAAAAAAu, index, r));
  }

  // |a|^2, the count and a widened
  template <bool Full>
  static void step_a(const T* a, __mmask32 m, const Bound& bound, RowAcc& acc, __m512 (&x)[2]) {
    const __m512i ra = Full ? _mm512_loadu_si512(a) : _mm512_maskz_loadu_epi16(m, a);
    acc.ssa = _mm512_dpbf16_ps(acc.ssa, (__m512bh)ra, (__m512bh)ra);
    const __m512i magnitude = _mm512_and_si512(ra, _mm512_set1_epi16(0x7fff));
    acc.small += _mm_popcnt_u32(_mm512_mask_cmplt_epu16_mask(m, magnitude, bound.v));
    x[0] = widen(0, ra);
    x[1] = widen(16, ra);
  }

  // dot(a, b) and |b|^2
  template <bool Full>
  static void step_b(const T* a, const T* b, __mmask32 m, RowAcc& acc) {
    const __m512i ra = Full ? _mm512_loadu_si512(a) : _mm512_maskz_loadu_epi16(m, a);
    const __m512i rb = Full ? _mm512_loadu_si512(b) : _mm512_maskz_loadu_epi16(m, b);
    acc.dot = _mm512_dpbf16_ps(acc.dot, (__m512bh)ra, (__m512bh)rb);
    acc.ssb = _mm512_dpbf16_ps(acc.ssb, (__m512bh)rb, (__m512bh)rb);
  }
};

// fp32 and fp16 rows: widened first, then FMA.
template <class Load>
struct WideRows {
  using T = typename Load::T;
  struct Bound {
    __m512 v;
    Bound() = default;
    explicit Bound(float thr) : v(_mm512_set1_ps(thr)) {}
  };

  template <bool Full>
  static void step_a(const T* a, __mmask32 m, const Bound& bound, RowAcc& acc, __m512 (&x)[2]) {
    for (int h = 0; h < 2; ++h) {
      const __mmask16 mh = __mmask16(m >> (16 * h));
      const __m512 xh = Load::template load16<Full>(a + 16 * h, mh);
      acc.ssa = _mm512_fmadd_ps(xh, xh, acc.ssa);
      acc.small += _mm_popcnt_u32(_mm512_mask_cmp_ps_mask(mh, _mm512_abs_ps(xh), bound.v, _CMP_LT_OQ));
      x[h] = xh;
    }
  }

  template <bool Full>
  static void step_b(const T* a, const T* b, __mmask32 m, RowAcc& acc) {
    for (int h = 0; h < 2; ++h) {
      const __mmask16 mh = __mmask16(m >> (16 * h));
      const __m512 xh = Load::template load16<Full>(a + 16 * h, mh);
      const __m512 yh = Load::template load16<Full>(b + 16 * h, mh);
      acc.dot = _mm512_fmadd_ps(xh, yh, acc.dot);
      acc.ssb = _mm512_fmadd_ps(yh, yh, acc.ssb);
    }
  }
};

struct LoadF32 {
  using T = float;
  template <bool Full>
  static __m512 load16(const float* p, __mmask16 m) {
    return Full ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
  }
};

struct LoadF16 {
  using T = uint16_t;
  template <bool Full>
  static __m512 load16(const uint16_t* p, __mmask16 m) {
    const __m256i h = Full ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                           : _mm256_maskz_loadu_epi16(m, p);
    return _mm512_cvtph_ps(h);
  }
};

// Sixteen channels' sums s1 += sum_i (x_i - shift), s2 += sum_i (x_i - shift)^2 over N rows'
// widened values x[i][h]; m selects the channels.
template <bool Full, int N>
inline void fold_moments(const __m512 (&x)[N][2], int h, const float* shift, float* s1, float* s2,
                         __mmask16 m) {
  const __m512 sh = Full ? _mm512_loadu_ps(shift) : _mm512_maskz_loadu_ps(m, shift);
  __m512 t1 = Full ? _mm512_loadu_ps(s1) : _mm512_maskz_loadu_ps(m, s1);
  __m512 t2 = Full ? _mm512_loadu_ps(s2) : _mm512_maskz_loadu_ps(m, s2);
  __m512 sum = _mm512_setzero_ps();
  for (int i = 0; i < N; ++i) {
    const __m512 dx = _mm512_sub_ps(x[i][h], sh);
    sum = _mm512_add_ps(sum, dx);
    t2 = _mm512_fmadd_ps(dx, dx, t2);
  }
  t1 = _mm512_add_ps(t1, sum);
  if (Full) {
    _mm512_storeu_ps(s1, t1);
    _mm512_storeu_ps(s2, t2);
  } else {
    _mm512_mask_storeu_ps(s1, m, t1);
    _mm512_mask_storeu_ps(s2, m, t2);
  }
}

// N rows over channels [c0, c1): row i's sums into out[4i..4i+3], the rows' moments into the
// channel sums, which are loaded and stored once per step for all N. (step_b reloads the block
// outputs step_a loaded: from L1, and the compiler may merge the two loads.)
template <class R, int N>
inline void fold_rows(const void* const* a, const void* const* b, int64_t c0, int64_t c1,
                      const float* thr, const float* shift, float* s1, float* s2, double* out) {
  using T = typename R::T;
  const T* pa[N];
  const T* pb[N];
  RowAcc acc[N];
  typename R::Bound bound[N];
  for (int i = 0; i < N; ++i) {
    pa[i] = static_cast<const T*>(a[i]);
    pb[i] = static_cast<const T*>(b[i]);
    bound[i] = typename R::Bound(thr[i]);
  }
  __m512 x[N][2];
  int64_t c = c0;
  for (; c + 32 <= c1; c += 32) {
    for (int i = 0; i < N; ++i) {
      R::template step_a<true>(pa[i] + c, ~__mmask32(0), bound[i], acc[i], x[i]);
      R::template step_b<true>(pa[i] + c, pb[i] + c, ~__mmask32(0), acc[i]);
    }
    fold_moments<true, N>(x, 0, shift + c, s1 + c, s2 + c, 0xffff);
    fold_moments<true, N>(x, 1, shift + c + 16, s1 + c + 16, s2 + c + 16, 0xffff);
  }
  if (c < c1) {  // the last (c1 - c) < 32 channels
    const int n = int(c1 - c);
    const __mmask32 m = (__mmask32(1) << n) - 1;
    for (int i = 0; i < N; ++i) {
      R::template step_a<false>(pa[i] + c, m, bound[i], acc[i], x[i]);
      R::template step_b<false>(pa[i] + c, pb[i] + c, m, acc[i]);
    }
    fold_moments<false, N>(x, 0, shift + c, s1 + c, s2 + c, __mmask16(m));
    if (n > 16) fold_moments<false, N>(x, 1, shift + c + 16, s1 + c + 16, s2 + c + 16, __mmask16(m >> 16));
  }
  for (int i = 0; i < N; ++i) acc[i].write(out + 4 * i);
}

// k <= ROWS rows (see fold_rows) of type R.
template <class R>
inline void fold_block(const void* const* a, const void* const* b, int k, int64_t c0, int64_t c1,
                       const float* thr, const float* shift, float* s1, float* s2, double* out) {
  switch (k) {
    case 4: return fold_rows<R, 4>(a, b, c0, c1, thr, shift, s1, s2, out);
    case 3: return fold_rows<R, 3>(a, b, c0, c1, thr, shift, s1, s2, out);
    case 2: return fold_rows<R, 2>(a, b, c0, c1, thr, shift, s1, s2, out);
    default: return fold_rows<R, 1>(a, b, c0, c1, thr, shift, s1, s2, out);
  }
}

}  // namespace avx512
}  // namespace simd
