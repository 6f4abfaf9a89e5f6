// Loading one channel or one row of a block's residual stream as fp32, per dtype (fp32, bf16,
// fp16 bit patterns), for block_stats.cpp: the scalar loads its portable fold and the SIMD
// folds' tails use, and the row conversion the tests check on every bit pattern.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__F16C__)
#include <immintrin.h>
#endif
#include "block_stats_simd.h"

namespace {

enum class Dtype { f32, bf16, f16 };

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline float bf16_to_float(uint16_t h) { return bits_to_float(uint32_t(h) << 16); }

// IEEE half to float without F16C (after F. Giesen's half_to_float): exact for normals,
// subnormals, infinities and NaN.
inline float f16_to_float(uint16_t h) {
  const uint32_t shifted_exp = 0x7c00u << 13;
  uint32_t o = uint32_t(h & 0x7fffu) << 13;
  const uint32_t exp = shifted_exp & o;
  o += uint32_t(127 - 15) << 23;
  float f;
  if (exp == shifted_exp) {
    f = bits_to_float(o + (uint32_t(128 - 16) << 23));
  } else if (exp == 0) {
    f = bits_to_float(o + (1u << 23)) - bits_to_float(113u << 23);
  } else {
    f = bits_to_float(o);
  }
  uint32_t r;
  std::memcpy(&r, &f, sizeof r);
  return bits_to_float(r | (uint32_t(h & 0x8000u) << 16));
}

struct LoadF32 {
  static constexpr SumLayout layout = SumLayout::plain;
  static float at(const void* p, int64_t c) { return static_cast<const float*>(p)[c]; }
#ifdef LAYERFAST_SIMD
  using Simd = simd::F32;
#endif
};
struct LoadBF16 {
#ifdef LAYERFAST_SIMD
  static constexpr SumLayout layout = simd::BF16::layout;
#else
  static constexpr SumLayout layout = SumLayout::plain;
#endif
  static float at(const void* p, int64_t c) { return bf16_to_float(static_cast<const uint16_t*>(p)[c]); }
#ifdef LAYERFAST_SIMD
  using Simd = simd::BF16;
#endif
};
struct LoadF16 {
  static constexpr SumLayout layout = SumLayout::plain;
  static float at(const void* p, int64_t c) { return f16_to_float(static_cast<const uint16_t*>(p)[c]); }
#ifdef LAYERFAST_SIMD
  using Simd = simd::F16;
#endif
};

// fp16 row -> fp32 buffer; with F16C, eight at a time (the compiler does not vectorise the
// bit-level conversion above).
inline void f16_row_to_float(const void* src, int64_t d, float* dst) {
  const uint16_t* p = static_cast<const uint16_t*>(src);
  int64_t c = 0;
#if defined(__F16C__)
  for (; c + 8 <= d; c += 8)
    _mm256_storeu_ps(dst + c, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + c))));
#endif
  for (; c < d; ++c) dst[c] = f16_to_float(p[c]);
}

inline void load_row(const void* src, Dtype dtype, int64_t d, float* dst) {
  switch (dtype) {
    case Dtype::f32: std::memcpy(dst, src, size_t(d) * sizeof(float)); break;
    case Dtype::bf16: for (int64_t c = 0; c < d; ++c) dst[c] = LoadBF16::at(src, c); break;
    case Dtype::f16: f16_row_to_float(src, d, dst); break;
  }
}

}  // namespace
