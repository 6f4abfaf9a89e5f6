// The fold on CPUs with AVX-512 (F, BW, VL, DQ) and AVX512-BF16 (Zen 4, Sapphire Rapids and
// later), included by block_stats_simd.h when the compiler targets them (setup.py adds
// -march=x86-64-v4 -mavx512bf16 where the building CPU has them). Same contract as the AVX2
// folds there; how the work is laid out:
//
// * ROWS rows are folded side by side, 32 channels a step: each channel sum (s1, s2) is loaded
//   and stored once per step for all of them, and every row's fold goes into those registers.
//   block_stats.cpp hands over rows from ROWS runs of a segment, so each run stays one
//   continuous stream. Measured out of cache, 1 GiB, one thread (bench_block_stats_builds.py):
//   bf16 at hidden 4096 1.7x the AVX2 fold, at hidden 576 1.3x.
// * bf16: dot(a, b), |a|^2 and |b|^2 by VDPBF16PS on the raw patterns (no widening): each lane
//   adds the exact fp32 products of two neighbouring channels into an fp32 sum, rounding to
//   nearest even. The instruction treats bf16 subnormal inputs (|x| < 1.2e-38) as 0: a product
//   of such an x with a y above ~1e30 is dropped, none other changes by more than fp32 rounding.
//   The channel moments use the channels widened in order (VPMOVZXWD from L1, then a shift), so
//   channel c's sums stay at c.
// * a row's last d % 32 channels run as one masked step: no scalar tail.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace simd {
namespace avx512 {

constexpr int ROWS = 4;  // rows folded at once

// One row's sums while it runs: dot(a, b), |a|^2, |b|^2 (fp32 lanes) and #|a| < thr.
struct RowAcc {
  __m512 dot = _mm512_setzero_ps(), ssa = _mm512_setzero_ps(), ssb = _mm512_setzero_ps();
  int64_t small = 0;

  void write(double* out) const {
    out[0] = hsum16(dot);
    out[1] = hsum16(ssa);
    out[2] = hsum16(ssb);
    out[3] = double(small);
  }

  // the 16 lanes' sum: halves added, then the AVX2 hsum (GCC 12's _mm512_reduce_add_ps warns
  // about an uninitialised operand inside its own header)
  static double hsum16(__m512 v) {
    const __m512 halves = _mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E));
    return hsum(_mm512_castps512_ps256(halves));
  }
};

// One step's channel sums (32 channels, two halves of 16): the shift, and s1, s2 as they run.
struct StepSums {
  __m512 sh[2], t1[2], t2[2];

  // the row's widened block output x (one half) folded in: s1 += x - shift, s2 += (x - shift)^2
  void add(int h, __m512 x) {
    const __m512 dx = _mm512_sub_ps(x, sh[h]);
    t1[h] = _mm512_add_ps(t1[h], dx);
    t2[h] = _mm512_fmadd_ps(dx, dx, t2[h]);
  }
};

// 16 channels of a bf16 row widened to fp32 in order (m selects them; 0 elsewhere)
template <bool Full>
inline __m512 widen_bf16(const uint16_t* p, __mmask16 m) {
  const __m256i h = Full ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                         : _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// A step of 32 channels of one row, per dtype (m selects the channels): its scalars into acc,
// its block output's moments into sums.
#ifdef __AVX512BF16__
struct BF16Rows {
  using T = uint16_t;
  // |a| < thr exactly when (bits & 0x7fff) < bf16_count_bound(thr), as 32 16-bit lanes
  static __m512i bound(float thr) { return _mm512_set1_epi16(bf16_count_bound(thr)); }

  template <bool Full>
  static void step(const T* a, const T* b, __mmask32 m, const __m512i& bound, RowAcc& acc,
                   StepSums& sums) {
    const __m512i ra = Full ? _mm512_loadu_si512(a) : _mm512_maskz_loadu_epi16(m, a);
    const __m512i rb = Full ? _mm512_loadu_si512(b) : _mm512_maskz_loadu_epi16(m, b);
    acc.dot = _mm512_dpbf16_ps(acc.dot, (__m512bh)ra, (__m512bh)rb);
    acc.ssa = _mm512_dpbf16_ps(acc.ssa, (__m512bh)ra, (__m512bh)ra);
    acc.ssb = _mm512_dpbf16_ps(acc.ssb, (__m512bh)rb, (__m512bh)rb);
    const __m512i magnitude = _mm512_and_si512(ra, _mm512_set1_epi16(0x7fff));
    acc.small += _mm_popcnt_u32(_mm512_mask_cmplt_epu16_mask(m, magnitude, bound));
    // widened from the row again (an L1 hit) rather than shuffled out of ra
    sums.add(0, widen_bf16<Full>(a, __mmask16(m)));
    sums.add(1, widen_bf16<Full>(a + 16, __mmask16(m >> 16)));
  }
};

#endif  // __AVX512BF16__

// fp32, fp16 (and bf16 without AVX512-BF16) rows: widened first, then FMA.
template <class Load>
struct WideRows {
  using T = typename Load::T;
  static __m512 bound(float thr) { return _mm512_set1_ps(thr); }

  template <bool Full>
  static void step(const T* a, const T* b, __mmask32 m, const __m512& bound, RowAcc& acc,
                   StepSums& sums) {
    for (int h = 0; h < 2; ++h) {
      const __mmask16 mh = __mmask16(m >> (16 * h));
      const __m512 x = Load::template load16<Full>(a + 16 * h, mh);
      const __m512 y = Load::template load16<Full>(b + 16 * h, mh);
      acc.dot = _mm512_fmadd_ps(x, y, acc.dot);
      acc.ssa = _mm512_fmadd_ps(x, x, acc.ssa);
      acc.ssb = _mm512_fmadd_ps(y, y, acc.ssb);
      acc.small += _mm_popcnt_u32(_mm512_mask_cmp_ps_mask(mh, _mm512_abs_ps(x), bound, _CMP_LT_OQ));
      sums.add(h, x);
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

struct LoadBF16 {
  using T = uint16_t;
  template <bool Full>
  static __m512 load16(const uint16_t* p, __mmask16 m) {
    return widen_bf16<Full>(p, m);
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

// Channels [c, c + 32) of N rows (m selects them): the channel sums loaded once, every row's
// step, the sums stored once.
template <class R, int N, bool Full>
inline void fold_step(const typename R::T* const (&pa)[N], const typename R::T* const (&pb)[N],
                      int64_t c, __mmask32 m, const decltype(R::bound(0.f)) (&bound)[N],
                      RowAcc (&acc)[N], const float* shift, float* s1, float* s2) {
  StepSums sums;
  for (int h = 0; h < 2; ++h) {
    const __mmask16 mh = __mmask16(m >> (16 * h));
    const int64_t at = c + 16 * h;
    sums.sh[h] = Full ? _mm512_loadu_ps(shift + at) : _mm512_maskz_loadu_ps(mh, shift + at);
    sums.t1[h] = Full ? _mm512_loadu_ps(s1 + at) : _mm512_maskz_loadu_ps(mh, s1 + at);
    sums.t2[h] = Full ? _mm512_loadu_ps(s2 + at) : _mm512_maskz_loadu_ps(mh, s2 + at);
  }
  for (int i = 0; i < N; ++i) R::template step<Full>(pa[i] + c, pb[i] + c, m, bound[i], acc[i], sums);
  for (int h = 0; h < 2; ++h) {
    const __mmask16 mh = __mmask16(m >> (16 * h));
    const int64_t at = c + 16 * h;
    if (Full) {
      _mm512_storeu_ps(s1 + at, sums.t1[h]);
      _mm512_storeu_ps(s2 + at, sums.t2[h]);
    } else {
      _mm512_mask_storeu_ps(s1 + at, mh, sums.t1[h]);
      _mm512_mask_storeu_ps(s2 + at, mh, sums.t2[h]);
    }
  }
}

// N rows over channels [c0, c1): row i's sums into out[4i..4i+3], the rows' moments into the
// channel sums, which are loaded and stored once per step for all N.
template <class R, int N>
inline void fold_rows(const void* const* a, const void* const* b, int64_t c0, int64_t c1,
                      const float* thr, const float* shift, float* s1, float* s2, double* out) {
  using T = typename R::T;
  const T* pa[N];
  const T* pb[N];
  decltype(R::bound(0.f)) bound[N];
  RowAcc acc[N];
  for (int i = 0; i < N; ++i) {
    pa[i] = static_cast<const T*>(a[i]);
    pb[i] = static_cast<const T*>(b[i]);
    bound[i] = R::bound(thr[i]);
  }
  int64_t c = c0;
  for (; c + 32 <= c1; c += 32)
    fold_step<R, N, true>(pa, pb, c, ~__mmask32(0), bound, acc, shift, s1, s2);
  if (c < c1)  // the last (c1 - c) < 32 channels
    fold_step<R, N, false>(pa, pb, c, (__mmask32(1) << (c1 - c)) - 1, bound, acc, shift, s1, s2);
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
