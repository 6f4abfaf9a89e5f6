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
// * a group of up to 64 rows per call (fold_group): the fp32 channel sums start from zero in
//   the first pass after a flush (no clearing, no loads) and the last pass before one adds them
//   into the segment's fp64 sums itself (no separate flush loop); every FLUSH rows.
// * a row's sums in fp32 lanes over a chunk of channels, then in fp64 lanes (one horizontal sum
//   per row, not per chunk).
// * bf16: dot(a, b), |a|^2 and |b|^2 by VDPBF16PS on the raw patterns (no widening): each lane
//   adds the exact fp32 products of two neighbouring channels into an fp32 sum, rounding to
//   nearest even. The instruction treats bf16 subnormal inputs (|x| < 1.2e-38) as 0: a product
//   of such an x with a y above ~1e30 is dropped, none other changes by more than fp32 rounding.
//   The channel moments widen each 32-bit lane's two channels in place (a shift, a mask), so a
//   segment keeps a block of 32 channels' sums even channels first (SumLayout::even_odd). In L1
//   that ran the fold 1.2x faster than widening with VPMOVZXWD; out of cache, no change.
// * the segment's arrays are padded to a multiple of 32 channels (zeros), so the channel sums of
//   a step are loaded and stored whole; a row's last d % 32 channels are one masked load (the
//   padding lanes add 0): no scalar tail.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace simd {
namespace avx512 {

constexpr int ROWS = 4;  // rows folded at once

// One row's sums while it runs: dot(a, b), |a|^2, |b|^2 in fp32 lanes over at most a chunk of
// channels, and #|a| < thr.
struct RowAcc {
  __m512 dot = _mm512_setzero_ps(), ssa = _mm512_setzero_ps(), ssb = _mm512_setzero_ps();
  int64_t small = 0;
};

// v's 16 fp32 lanes as fp64: lanes 0-7 in lo, 8-15 in hi
inline void to_fp64(__m512 v, __m512d& lo, __m512d& hi) {
  lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
  hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1));
}

// A row's dot, |a|^2, |b|^2 over the chunks so far, in fp64 lanes.
struct RowTotal {
  __m512d dot, ssa, ssb;  // set by the first chunk: no zeroing of the array up front

  // the chunk's fp32 lanes into the fp64 ones (First: in place of them), and cleared
  template <bool First>
  void add_chunk(RowAcc& acc) {
    add<First>(dot, acc.dot);
    add<First>(ssa, acc.ssa);
    add<First>(ssb, acc.ssb);
    acc.dot = acc.ssa = acc.ssb = _mm512_setzero_ps();
  }

  void write(double* out, int64_t small) const {
    out[0] = hsum8(dot);
    out[1] = hsum8(ssa);
    out[2] = hsum8(ssb);
    out[3] = double(small);
  }

  template <bool First>
  static void add(__m512d& w, __m512 v) {
    __m512d lo, hi;
    to_fp64(v, lo, hi);
    const __m512d pair = _mm512_add_pd(lo, hi);
    w = First ? pair : _mm512_add_pd(w, pair);
  }

  static double hsum8(__m512d v) {
    const __m256d h = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1));
    const __m128d q = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
    return _mm_cvtsd_f64(_mm_add_sd(q, _mm_unpackhi_pd(q, q)));
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
    // channel 2j of the step in lane j of half 0 (its pattern shifted up), 2j + 1 in lane j of
    // half 1 (its pattern with the low channel's bits cleared): SumLayout::even_odd
    sums.add(0, _mm512_castsi512_ps(_mm512_slli_epi32(ra, 16)));
    sums.add(1, _mm512_castsi512_ps(_mm512_and_si512(ra, _mm512_set1_epi32(int(0xffff0000u)))));
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

// A group's channel sums as its passes see them: the shift, the fp32 sums between passes, and the
// segment's fp64 sums, which the group's last pass adds its fp32 sums into. Every array holds d
// rounded up to 32 entries, the padding zero: a step's sums are read and written whole, and its
// padding lanes add (0 - 0) and (0 - 0)^2.
struct GroupSums {
  const float* shift;
  float *s1f, *s2f;
  double *s1, *s2;
};

// v's 16 lanes added into the fp64 sums p[0..16)
inline void add_wide(double* p, __m512 v) {
  __m512d lo, hi;
  to_fp64(v, lo, hi);
  _mm512_storeu_pd(p, _mm512_add_pd(_mm512_loadu_pd(p), lo));
  _mm512_storeu_pd(p + 8, _mm512_add_pd(_mm512_loadu_pd(p + 8), hi));
}

// Channels [c, c + 32) of N rows (m selects the rows' channels): the channel sums taken once
// (from zero in a group's first pass), every row's step, the sums left once (added into fp64 in
// its last pass).
template <class R, int N, bool First, bool Last, bool Full>
inline void fold_step(const typename R::T* const (&pa)[N], const typename R::T* const (&pb)[N],
                      int64_t c, __mmask32 m, const decltype(R::bound(0.f)) (&bound)[N],
                      RowAcc (&acc)[N], const GroupSums g) {
  StepSums sums;
  for (int h = 0; h < 2; ++h) {
    const int64_t at = c + 16 * h;
    sums.sh[h] = _mm512_loadu_ps(g.shift + at);
    sums.t1[h] = First ? _mm512_setzero_ps() : _mm512_loadu_ps(g.s1f + at);
    sums.t2[h] = First ? _mm512_setzero_ps() : _mm512_loadu_ps(g.s2f + at);
  }
  for (int i = 0; i < N; ++i)
    R::template step<Full>(pa[i] + c, pb[i] + c, m, bound[i], acc[i], sums);
  for (int h = 0; h < 2; ++h) {
    const int64_t at = c + 16 * h;
    if (Last) {
      add_wide(g.s1 + at, sums.t1[h]);
      add_wide(g.s2 + at, sums.t2[h]);
    } else {
      _mm512_storeu_ps(g.s1f + at, sums.t1[h]);
      _mm512_storeu_ps(g.s2f + at, sums.t2[h]);
    }
  }
}

// One pass: N whole rows of d channels, row i's sums into out[4i..4i+3] (fp32 lanes over chunks
// of `chunk` channels, a multiple of 32, then fp64), their moments into the group's sums.
template <class R, int N, bool First, bool Last>
inline void fold_rows(const void* const* a, const void* const* b, int64_t d, int64_t chunk,
                      const float* thr, const GroupSums g, double* out) {
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
  RowTotal total[N];
  for (int64_t c0 = 0; c0 < d; c0 += chunk) {
    const int64_t c1 = c0 + chunk < d ? c0 + chunk : d;
    int64_t c = c0;
    for (; c + 32 <= c1; c += 32)
      fold_step<R, N, First, Last, true>(pa, pb, c, ~__mmask32(0), bound, acc, g);
    if (c < c1)  // the row's last d % 32 channels
      fold_step<R, N, First, Last, false>(pa, pb, c, (__mmask32(1) << (c1 - c)) - 1, bound, acc,
                                          g);
    for (int i = 0; i < N; ++i) {
      if (c0 == 0)
        total[i].template add_chunk<true>(acc[i]);
      else
        total[i].template add_chunk<false>(acc[i]);
    }
  }
  for (int i = 0; i < N; ++i) total[i].write(out + 4 * i, acc[i].small);
}

template <class R, int N>
inline void fold_pass(const void* const* a, const void* const* b, bool first, bool last,
                      int64_t d, int64_t chunk, const float* thr, const GroupSums& g, double* out) {
  if (first && last) return fold_rows<R, N, true, true>(a, b, d, chunk, thr, g, out);
  if (first) return fold_rows<R, N, true, false>(a, b, d, chunk, thr, g, out);
  if (last) return fold_rows<R, N, false, true>(a, b, d, chunk, thr, g, out);
  fold_rows<R, N, false, false>(a, b, d, chunk, thr, g, out);
}

// A group of n whole rows of type R, ROWS at a time (one at a time for the last n % ROWS): row
// i's sums into out[4i..4i+3]; their moments into the segment's fp64 sums g.s1, g.s2, through
// the fp32 sums g.s1f, g.s2f between passes (no separate flush, nothing to clear).
template <class R>
inline void fold_group(const void* const* a, const void* const* b, int n, int64_t d,
                       int64_t chunk, int flush, const float* thr, const GroupSums& g,
                       double* out) {
  for (int i = 0; i < n;) {
    const int k = n - i >= ROWS ? ROWS : 1;
    const bool first = i % flush == 0, last = (i + k) % flush == 0 || i + k == n;
    if (k == ROWS)
      fold_pass<R, ROWS>(a + i, b + i, first, last, d, chunk, thr + i, g, out + 4 * i);
    else
      fold_pass<R, 1>(a + i, b + i, first, last, d, chunk, thr + i, g, out + 4 * i);
    i += k;
  }
}

}  // namespace avx512
}  // namespace simd
