// A segment's channel moments while block_stats.cpp folds its rows: the shift, the fp32 sums
// between flushes and the fp64 sums, with the layout each fold keeps them in.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "block_stats_simd.h"  // SumLayout

namespace {

// Where a segment keeps channel c's sums (see SumLayout in block_stats_simd.h): in a block of 16
// with quads 1 and 2 swapped; in a block of 32 with the even channels first (c at 16 * (c % 2) +
// c / 2 within the block).
inline int64_t stored_at(int64_t c, int64_t d, SumLayout layout) {
  switch (layout) {
    case SumLayout::swapped_quads: {
      const int64_t j = c & 15;
      return c < (d & ~int64_t(15)) && j >= 4 && j < 12 ? c ^ 12 : c;
    }
    case SumLayout::even_odd: {
      const int64_t j = c & 31;
      return (c - j) + 16 * (j & 1) + j / 2;
    }
    default:
      return c;
  }
}

// A segment's channel moments as shifted sums: shift = its first real row, s1 = sum(x - shift),
// s2 = sum((x - shift)^2); fp32 partials s1f/s2f are added into s1/s2 every FLUSH rows (by
// flush() after each group, or by the AVX-512 fold itself).
//
// shift, s1f and s2f share one buffer, each on a 64-byte boundary (a vector of 16 floats never
// straddles two cache lines) and apart by a stride that is not near a multiple of 4 KiB: as
// separate allocations of 4 KiB multiples their entries for one channel had the same address
// bits 0-11, and each store to s1f stalled the following loads of s2f and shift (4K aliasing).
struct Segment {
  int64_t d, padded;  // padded: d rounded up to 32 (the AVX-512 folds' sums run in blocks of 32)
  std::vector<float> buf;
  float *shift, *s1f, *s2f;
  std::vector<double> s1, s2;
  double n = 0;

  static int64_t padded_for(int64_t d) { return (d + 31) / 32 * 32; }

  // floats from one array to the next: d rounded up to 32, plus 48 or more
  static int64_t stride_for(int64_t d) {
    int64_t stride = padded_for(d) + 48;
    while (stride % 1024 < 48 || stride % 1024 > 1024 - 48) stride += 16;
    return stride;
  }

  explicit Segment(int64_t d_)
      : d(d_), padded(padded_for(d_)), buf(3 * stride_for(d_) + 16), s1(padded), s2(padded) {
    const int64_t stride = stride_for(d_);
    const uintptr_t at = reinterpret_cast<uintptr_t>(buf.data());
    shift = buf.data() + ((64 - at % 64) % 64) / sizeof(float);
    s1f = shift + stride;
    s2f = s1f + stride;
  }

  // every entry zero, the padding's too (a fold's padding lanes then add 0 - 0)
  void reset() {
    std::fill(shift, shift + padded, 0.f);
    std::fill(s1f, s1f + padded, 0.f);
    std::fill(s2f, s2f + padded, 0.f);
    std::fill(s1.begin(), s1.end(), 0.0);
    std::fill(s2.begin(), s2.end(), 0.0);
    n = 0;
  }

  void flush() {
    for (int64_t c = 0; c < d; ++c) {
      s1[c] += s1f[c];
      s2[c] += s2f[c];
      s1f[c] = s2f[c] = 0.f;
    }
  }

  // mean = shift + s1 / n, M2 = s2 - s1^2 / n, channel c from index stored_at(c)
  void write(double* mean, double* m2, SumLayout layout) {
    for (int64_t c = 0; c < d; ++c) {
      if (n == 0) {
        mean[c] = m2[c] = 0.0;
        continue;
      }
      const int64_t k = stored_at(c, d, layout);
      mean[c] = double(shift[k]) + s1[k] / n;
      m2[c] = std::max(0.0, s2[k] - s1[k] * s1[k] / n);
    }
  }
};

}  // namespace
