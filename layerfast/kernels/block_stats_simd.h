// The fold of one row's chunk of channels, included by block_stats.cpp: the scalar one
// (fold_scalar, portable), and the AVX2/FMA one when the compiler targets AVX2, FMA and F16C
// (-march=x86-64-v3). Same arithmetic: fp32 lanes over CHUNK channels, then fp64; the AVX2 fold
// orders the fp32 additions differently (two independent accumulators per sum, eight lanes
// each), so the per-row FMA chains do not wait on each other's latency. fp16 widens with F16C;
// bf16 has its own fold below.
#pragma once

#include <cmath>
#include <cstdint>

// Where a fold keeps channel c's sums in a segment's arrays (block_stats.cpp's stored_at):
//   plain          at c
//   swapped_quads  channels 4-7 and 8-11 of every full block of 16 in each other's places (the
//                  AVX2 bf16 fold, which widens by unpacking within 128-bit halves)
//   even_odd       in every block of 32 (the last one too, in arrays padded to a multiple of 32)
//                  the 16 even channels first, then the 16 odd ones (the AVX-512 bf16 fold,
//                  which widens the two channels of each 32-bit lane with one shift or mask)
enum class SumLayout { plain, swapped_quads, even_odd };

// Channels [c0, c1) of one row, one at a time (L::at loads one channel as fp32): adds dot(a, b),
// |a|^2, |b|^2 into sums[0..2] (fp32) and #|a| < thr into small, and folds the deviations from
// shift into s1 += a - shift, s2 += (a - shift)^2. The portable fold, and the SIMD folds' tails.
template <class L>
inline void fold_scalar(const void* a, const void* b, int64_t c0, int64_t c1, float thr,
                        const float* shift, float* s1, float* s2, float* sums, int32_t& small) {
  float dot = 0.f, ssa = 0.f, ssb = 0.f;
  int32_t count = 0;
#pragma omp simd reduction(+ : dot, ssa, ssb, count)
  for (int64_t c = c0; c < c1; ++c) {
    const float x = L::at(a, c), y = L::at(b, c);
    dot += x * y;
    ssa += x * x;
    ssb += y * y;
    count += (std::fabs(x) < thr);
    const float dx = x - shift[c];
    s1[c] += dx;
    s2[c] += dx * dx;
  }
  sums[0] += dot;
  sums[1] += ssa;
  sums[2] += ssb;
  small += count;
}

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && \
    defined(__AVX512DQ__)
#define LAYERFAST_AVX512 1
#endif

namespace simd {

struct F32 {
  static constexpr SumLayout layout = SumLayout::plain;
  static __m256 load8(const void* p, int64_t c) {
    return _mm256_loadu_ps(static_cast<const float*>(p) + c);
  }
  static float at(const void* p, int64_t c) { return static_cast<const float*>(p)[c]; }
};

struct F16 {
  static constexpr SumLayout layout = SumLayout::plain;
  static __m256 load8(const void* p, int64_t c) {
    return _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + c)));
  }
  static float at(const void* p, int64_t c) {
    return _cvtsh_ss(static_cast<const uint16_t*>(p)[c]);
  }
};


struct BF16 {
#if defined(LAYERFAST_AVX512) && defined(__AVX512BF16__)
  static constexpr SumLayout layout = SumLayout::even_odd;  // see block_stats_avx512.h
#elif defined(LAYERFAST_AVX512)
  static constexpr SumLayout layout = SumLayout::plain;
#else
  static constexpr SumLayout layout = SumLayout::swapped_quads;  // see fold_chunk_bf16
#endif
  static __m256 load8(const void* p, int64_t c) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + c));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static float at(const void* p, int64_t c) {
    const uint32_t u = uint32_t(static_cast<const uint16_t*>(p)[c]) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
};

inline double hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return double(_mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1))));
}

// One row's eight channels into its sums: dot += x * y, ssa += x * x, ssb += y * y (FMA).
inline void add_products(__m256 x, __m256 y, __m256& dot, __m256& ssa, __m256& ssb) {
  dot = _mm256_fmadd_ps(x, y, dot);
  ssa = _mm256_fmadd_ps(x, x, ssa);
  ssb = _mm256_fmadd_ps(y, y, ssb);
}

inline double hsum_i(__m256i v) {
  const __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  const __m128i t = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  return double(_mm_cvtsi128_si32(_mm_add_epi32(t, _mm_shuffle_epi32(t, 1))));
}

// sum over channels of a[c]^2, fp32 per CHUNK then fp64 (the relative threshold's row RMS)
template <class L>
inline double sum_squares(const void* a, int64_t d, int64_t chunk) {
  double total = 0;
  for (int64_t c0 = 0; c0 < d; c0 += chunk) {
    const int64_t c1 = std::min(d, c0 + chunk);
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t c = c0;
    for (; c + 16 <= c1; c += 16) {
      const __m256 x0 = L::load8(a, c), x1 = L::load8(a, c + 8);
      s0 = _mm256_fmadd_ps(x0, x0, s0);
      s1 = _mm256_fmadd_ps(x1, x1, s1);
    }
    for (; c + 8 <= c1; c += 8) {
      const __m256 x0 = L::load8(a, c);
      s0 = _mm256_fmadd_ps(x0, x0, s0);
    }
    float tail = 0.f;
    for (; c < c1; ++c) tail += L::at(a, c) * L::at(a, c);
    total += hsum(_mm256_add_ps(s0, s1)) + double(tail);
  }
  return total;
}

// Channels [c0, c1) of one row: dot(a, b), |a|^2, |b|^2 and #|a| < thr into out[0..3] (fp64 of
// fp32 lane sums), and the deviations from shift folded into the channel sums
// s1 += a - shift, s2 += (a - shift)^2 (fp32, indexed by channel).
template <class L>
inline void fold_chunk(const void* a, const void* b, int64_t c0, int64_t c1, float thr,
                       const float* shift, float* s1, float* s2, double* out) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 vthr = _mm256_set1_ps(thr);
  __m256 dot0 = _mm256_setzero_ps(), dot1 = dot0, ssa0 = dot0, ssa1 = dot0, ssb0 = dot0,
         ssb1 = dot0;
  __m256i sm0 = _mm256_setzero_si256(), sm1 = sm0;
  int64_t c = c0;
#define LF_FOLD8(X, Y, OFF, DOT, SSA, SSB, SM)                                                 \
  do {                                                                                         \
    add_products(X, Y, DOT, SSA, SSB);                                                         \
    SM = _mm256_sub_epi32(                                                                     \
        SM, _mm256_castps_si256(_mm256_cmp_ps(_mm256_and_ps(X, absmask), vthr, _CMP_LT_OQ)));  \
    const __m256 dx = _mm256_sub_ps(X, _mm256_loadu_ps(shift + (OFF)));                        \
    _mm256_storeu_ps(s1 + (OFF), _mm256_add_ps(_mm256_loadu_ps(s1 + (OFF)), dx));             \
    _mm256_storeu_ps(s2 + (OFF), _mm256_fmadd_ps(dx, dx, _mm256_loadu_ps(s2 + (OFF))));       \
  } while (0)
  for (; c + 16 <= c1; c += 16) {
    const __m256 x0 = L::load8(a, c), y0 = L::load8(b, c);
    const __m256 x1 = L::load8(a, c + 8), y1 = L::load8(b, c + 8);
    LF_FOLD8(x0, y0, c, dot0, ssa0, ssb0, sm0);
    LF_FOLD8(x1, y1, c + 8, dot1, ssa1, ssb1, sm1);
  }
  for (; c + 8 <= c1; c += 8) {
    const __m256 x0 = L::load8(a, c), y0 = L::load8(b, c);
    LF_FOLD8(x0, y0, c, dot0, ssa0, ssb0, sm0);
  }
#undef LF_FOLD8
  float tail[3] = {0.f, 0.f, 0.f};
  int32_t tsmall = 0;
  fold_scalar<L>(a, b, c, c1, thr, shift, s1, s2, tail, tsmall);  // the last d % 8 channels
  out[0] = hsum(_mm256_add_ps(dot0, dot1)) + double(tail[0]);
  out[1] = hsum(_mm256_add_ps(ssa0, ssa1)) + double(tail[1]);
  out[2] = hsum(_mm256_add_ps(ssb0, ssb1)) + double(tail[2]);
  out[3] = hsum_i(_mm256_add_epi32(sm0, sm1)) + double(tsmall);
}

// Two rows at once over channels [c0, c1) (row 0 into out[0..3], row 1 into out[4..7]): the
// channel sums are loaded and stored once per pair of rows. Used where they do not fit in L1.
template <class L>
inline void fold_chunk2(const void* a0, const void* b0, const void* a1, const void* b1, int64_t c0,
                        int64_t c1, float thr0, float thr1, const float* shift, float* s1,
                        float* s2, double* out) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 vthr0 = _mm256_set1_ps(thr0), vthr1 = _mm256_set1_ps(thr1);
  __m256 dot0 = _mm256_setzero_ps(), dot1 = dot0, ssa0 = dot0, ssa1 = dot0, ssb0 = dot0,
         ssb1 = dot0;
  __m256i sm0 = _mm256_setzero_si256(), sm1 = sm0;
  int64_t c = c0;
  for (; c + 8 <= c1; c += 8) {
    const __m256 x0 = L::load8(a0, c), y0 = L::load8(b0, c);
    const __m256 x1 = L::load8(a1, c), y1 = L::load8(b1, c);
    add_products(x0, y0, dot0, ssa0, ssb0);
    add_products(x1, y1, dot1, ssa1, ssb1);
    sm0 = _mm256_sub_epi32(
        sm0, _mm256_castps_si256(_mm256_cmp_ps(_mm256_and_ps(x0, absmask), vthr0, _CMP_LT_OQ)));
    sm1 = _mm256_sub_epi32(
        sm1, _mm256_castps_si256(_mm256_cmp_ps(_mm256_and_ps(x1, absmask), vthr1, _CMP_LT_OQ)));
    const __m256 sh = _mm256_loadu_ps(shift + c);
    const __m256 dx0 = _mm256_sub_ps(x0, sh), dx1 = _mm256_sub_ps(x1, sh);
    _mm256_storeu_ps(s1 + c, _mm256_add_ps(_mm256_loadu_ps(s1 + c), _mm256_add_ps(dx0, dx1)));
    _mm256_storeu_ps(
        s2 + c, _mm256_fmadd_ps(dx1, dx1, _mm256_fmadd_ps(dx0, dx0, _mm256_loadu_ps(s2 + c))));
  }
  out[0] = hsum(dot0);
  out[1] = hsum(ssa0);
  out[2] = hsum(ssb0);
  out[3] = hsum_i(sm0);
  out[4] = hsum(dot1);
  out[5] = hsum(ssa1);
  out[6] = hsum(ssb1);
  out[7] = hsum_i(sm1);
  if (c < c1) {  // the rows' last d % 8 channels
    double tail[4];
    fold_chunk<L>(a0, b0, c, c1, thr0, shift, s1, s2, tail);
    for (int k = 0; k < 4; ++k) out[k] += tail[k];
    fold_chunk<L>(a1, b1, c, c1, thr1, shift, s1, s2, tail);
    for (int k = 0; k < 4; ++k) out[4 + k] += tail[k];
  }
}

// bf16 rows, 16 channels per step (BF16::fold_chunk): one 32-byte load per input, widened by
// interleaving with zeros. Unpacking works within 128-bit halves, so the two fp32 vectors hold
// channels {0-3, 8-11} and {4-7, 12-15} of the block: the channel sums of every full block of 16
// are kept in that order (channels 4-7 and 8-11 swap places; see block_stats.cpp's stored_at).
// The |a| < thr count runs on the 16-bit patterns: |a| < thr exactly when (bits & 0x7fff) < U,
// U the smallest bf16 pattern not below thr (NaN patterns exceed every U).
inline int16_t bf16_count_bound(float thr) {
  if (!(thr > 0.f)) return 0;  // nothing is below 0, and nothing below NaN
  uint32_t u;
  std::memcpy(&u, &thr, sizeof u);
  return int16_t(std::min<uint32_t>((u + 0xffffu) >> 16, 0x7f80u));
}

inline void fold_chunk_bf16(const uint16_t* a, const uint16_t* b, int64_t c0, int64_t c1,
                            float thr, const float* shift, float* s1, float* s2, double* out) {
  const __m256i zero = _mm256_setzero_si256();
  const __m256i magnitude = _mm256_set1_epi16(0x7fff);
  const __m256i bound = _mm256_set1_epi16(bf16_count_bound(thr));
  __m256 dot0 = _mm256_setzero_ps(), dot1 = dot0, ssa0 = dot0, ssa1 = dot0, ssb0 = dot0,
         ssb1 = dot0;
  __m256i small = zero;  // 16-bit counts: at most CHUNK / 16 per lane
  int64_t c = c0;
  for (; c + 16 <= c1; c += 16) {
    const __m256i ra = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + c));
    const __m256i rb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + c));
    const __m256 x0 = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, ra));
    const __m256 x1 = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, ra));
    const __m256 y0 = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, rb));
    const __m256 y1 = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, rb));
    add_products(x0, y0, dot0, ssa0, ssb0);
    add_products(x1, y1, dot1, ssa1, ssb1);
    small = _mm256_sub_epi16(small, _mm256_cmpgt_epi16(bound, _mm256_and_si256(ra, magnitude)));
    const __m256 dx0 = _mm256_sub_ps(x0, _mm256_loadu_ps(shift + c));
    const __m256 dx1 = _mm256_sub_ps(x1, _mm256_loadu_ps(shift + c + 8));
    _mm256_storeu_ps(s1 + c, _mm256_add_ps(_mm256_loadu_ps(s1 + c), dx0));
    _mm256_storeu_ps(s1 + c + 8, _mm256_add_ps(_mm256_loadu_ps(s1 + c + 8), dx1));
    _mm256_storeu_ps(s2 + c, _mm256_fmadd_ps(dx0, dx0, _mm256_loadu_ps(s2 + c)));
    _mm256_storeu_ps(s2 + c + 8, _mm256_fmadd_ps(dx1, dx1, _mm256_loadu_ps(s2 + c + 8)));
  }
  float tail[3] = {0.f, 0.f, 0.f};
  int32_t tsmall = 0;
  fold_scalar<BF16>(a, b, c, c1, thr, shift, s1, s2, tail, tsmall);  // the last d % 16, in order
  out[0] = hsum(_mm256_add_ps(dot0, dot1)) + double(tail[0]);
  out[1] = hsum(_mm256_add_ps(ssa0, ssa1)) + double(tail[1]);
  out[2] = hsum(_mm256_add_ps(ssb0, ssb1)) + double(tail[2]);
  out[3] = hsum_i(_mm256_madd_epi16(small, _mm256_set1_epi16(1))) + double(tsmall);
}

// fold_chunk2 for bf16 rows, 16 channels per step as in fold_chunk_bf16.
inline void fold_chunk2_bf16(const uint16_t* a0, const uint16_t* b0, const uint16_t* a1,
                             const uint16_t* b1, int64_t c0, int64_t c1, float thr0, float thr1,
                             const float* shift, float* s1, float* s2, double* out) {
  const __m256i zero = _mm256_setzero_si256();
  const __m256i magnitude = _mm256_set1_epi16(0x7fff);
  const __m256i bound0 = _mm256_set1_epi16(bf16_count_bound(thr0));
  const __m256i bound1 = _mm256_set1_epi16(bf16_count_bound(thr1));
  __m256 dot0 = _mm256_setzero_ps(), dot1 = dot0, ssa0 = dot0, ssa1 = dot0, ssb0 = dot0,
         ssb1 = dot0;
  __m256i small0 = zero, small1 = zero;
  int64_t c = c0;
  for (; c + 16 <= c1; c += 16) {
    const __m256i ra0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a0 + c));
    const __m256i rb0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + c));
    const __m256i ra1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a1 + c));
    const __m256i rb1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b1 + c));
    const __m256 x00 = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, ra0));
    const __m256 x01 = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, ra0));
    const __m256 x10 = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, ra1));
    const __m256 x11 = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, ra1));
    const __m256 y00 = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, rb0));
    const __m256 y01 = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, rb0));
    const __m256 y10 = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, rb1));
    const __m256 y11 = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, rb1));
    add_products(x00, y00, dot0, ssa0, ssb0);  // row 0: channels 0-3, 8-11, then 4-7, 12-15
    add_products(x01, y01, dot0, ssa0, ssb0);
    add_products(x10, y10, dot1, ssa1, ssb1);  // row 1
    add_products(x11, y11, dot1, ssa1, ssb1);
    small0 = _mm256_sub_epi16(small0, _mm256_cmpgt_epi16(bound0, _mm256_and_si256(ra0, magnitude)));
    small1 = _mm256_sub_epi16(small1, _mm256_cmpgt_epi16(bound1, _mm256_and_si256(ra1, magnitude)));
    const __m256 sh0 = _mm256_loadu_ps(shift + c), sh1 = _mm256_loadu_ps(shift + c + 8);
    const __m256 d00 = _mm256_sub_ps(x00, sh0), d01 = _mm256_sub_ps(x01, sh1);
    const __m256 d10 = _mm256_sub_ps(x10, sh0), d11 = _mm256_sub_ps(x11, sh1);
    _mm256_storeu_ps(s1 + c, _mm256_add_ps(_mm256_loadu_ps(s1 + c), _mm256_add_ps(d00, d10)));
    _mm256_storeu_ps(s1 + c + 8,
                     _mm256_add_ps(_mm256_loadu_ps(s1 + c + 8), _mm256_add_ps(d01, d11)));
    _mm256_storeu_ps(s2 + c, _mm256_fmadd_ps(d10, d10, _mm256_fmadd_ps(d00, d00, _mm256_loadu_ps(s2 + c))));
    _mm256_storeu_ps(s2 + c + 8,
                     _mm256_fmadd_ps(d11, d11, _mm256_fmadd_ps(d01, d01, _mm256_loadu_ps(s2 + c + 8))));
  }
  const __m256i ones = _mm256_set1_epi16(1);
  out[0] = hsum(dot0);
  out[1] = hsum(ssa0);
  out[2] = hsum(ssb0);
  out[3] = hsum_i(_mm256_madd_epi16(small0, ones));
  out[4] = hsum(dot1);
  out[5] = hsum(ssa1);
  out[6] = hsum(ssb1);
  out[7] = hsum_i(_mm256_madd_epi16(small1, ones));
  if (c < c1) {  // the rows' last d % 16 channels
    double tail[4];
    fold_chunk_bf16(a0, b0, c, c1, thr0, shift, s1, s2, tail);
    for (int k = 0; k < 4; ++k) out[k] += tail[k];
    fold_chunk_bf16(a1, b1, c, c1, thr1, shift, s1, s2, tail);
    for (int k = 0; k < 4; ++k) out[4 + k] += tail[k];
  }
}

template <>
inline void fold_chunk2<BF16>(const void* a0, const void* b0, const void* a1, const void* b1,
                              int64_t c0, int64_t c1, float thr0, float thr1, const float* shift,
                              float* s1, float* s2, double* out) {
  fold_chunk2_bf16(static_cast<const uint16_t*>(a0), static_cast<const uint16_t*>(b0),
                   static_cast<const uint16_t*>(a1), static_cast<const uint16_t*>(b1), c0, c1,
                   thr0, thr1, shift, s1, s2, out);
}

template <>
inline void fold_chunk<BF16>(const void* a, const void* b, int64_t c0, int64_t c1, float thr,
                             const float* shift, float* s1, float* s2, double* out) {
  fold_chunk_bf16(static_cast<const uint16_t*>(a), static_cast<const uint16_t*>(b), c0, c1, thr,
                  shift, s1, s2, out);
}

// The folds' one entry point for block_stats.cpp: k <= rows_at_once(d) rows over
// channels [c0, c1), row i's dot, |a|^2, |b|^2 and count into out[4i..4i+3].
#ifdef LAYERFAST_AVX512
}  // namespace simd
#include "block_stats_avx512.h"
namespace simd {

template <class S> struct Avx512Rows;
template <> struct Avx512Rows<F32> { using type = avx512::WideRows<avx512::LoadF32>; };
template <> struct Avx512Rows<F16> { using type = avx512::WideRows<avx512::LoadF16>; };
#ifdef __AVX512BF16__
template <> struct Avx512Rows<BF16> { using type = avx512::BF16Rows; };
#else  // AVX-512 without BF16 (Skylake-X, Ice Lake): bf16 widened, then FMA
template <> struct Avx512Rows<BF16> { using type = avx512::WideRows<avx512::LoadBF16>; };
#endif

inline int rows_at_once(int64_t) { return avx512::ROWS; }

// The AVX-512 folds take a whole group of rows (avx512::fold_group), which adds its channel
// sums into the segment's fp64 ones itself.
using avx512::GroupSums;

template <class S>
inline void fold_group(const void* const* a, const void* const* b, int n, int64_t d,
                       int64_t chunk, int flush, const float* thr, const GroupSums& g,
                       double* out) {
  avx512::fold_group<typename Avx512Rows<S>::type>(a, b, n, d, chunk, flush, thr, g, out);
}
#else
// From this width on a segment's channel sums (12 bytes a channel) no longer fit in a 32 KiB
// L1, and rows are folded in pairs, halving the sums' traffic to L2.
constexpr int64_t PAIRS_FROM_D = 2048;
inline int rows_at_once(int64_t d) { return d >= PAIRS_FROM_D ? 2 : 1; }

template <class S>
inline void fold_block(const void* const* a, const void* const* b, int k, int64_t c0, int64_t c1,
                       const float* thr, const float* shift, float* s1, float* s2, double* out) {
  if (k == 2)
    fold_chunk2<S>(a[0], b[0], a[1], b[1], c0, c1, thr[0], thr[1], shift, s1, s2, out);
  else
    fold_chunk<S>(a[0], b[0], c0, c1, thr[0], shift, s1, s2, out);
}
#endif

}  // namespace simd

#define LAYERFAST_SIMD 1
#endif
