// The per-row part of layerfast/activations/finish.py, fused into the kernel: a segment's row
// scalars and mask -> its number of real rows and the sums over them of |out|, cos(out, in),
// arccos(cos) / pi, #small and #nonfinite. Each row's cos is reference.cos_angle's (norms
// clamped at 1e-12; cos clamped to [-1, 1] for the angle only), correctly rounded, and its angle
// within 2 ulp. Taken per segment
// while its rows are in L2, they cost ~1.3 ms per 1 GiB of bf16 at hidden 576 (466,944 rows),
// where PyTorch's passes over the [B, T] rows in finish took 10-12 ms (one thread).
#pragma once

#include <cmath>
#include <cstdint>

namespace {

// arccos(x) for x in [-1, 1], NaN for NaN, branch-free so that the loops below vectorise: asin's
// rational approximation R(z) = asin(sqrt z) / sqrt(z) - 1 on z in [0, 1/4] (fdlibm's
// coefficients, Remez error below 2^-58.75), with acos(x) = pi/2 - asin(x) for |x| < 1/2 and
// acos(|x|) = 2 asin(sqrt((1 - |x|) / 2)) above. Within 2 ulp of the correctly rounded value
// (tests/activations/test_block_stats_rows.py measures it against an extended-precision arccos).
inline double acos_branchless(double x) {
  constexpr double pio2_hi = 1.57079632679489655800e+00, pio2_lo = 6.12323399573676603587e-17;
  constexpr double p0 = 1.66666666666666657415e-01, p1 = -3.25565818622400915405e-01,
                   p2 = 2.01212532134862925881e-01, p3 = -4.00555345006794114027e-02,
                   p4 = 7.91534994289814532176e-04, p5 = 3.47933107596021167570e-05;
  constexpr double q1 = -2.40339491173441421878e+00, q2 = 2.02094576023350569471e+00,
                   q3 = -6.88283971605453293030e-01, q4 = 7.70381505559019352791e-02;
  const double ax = std::fabs(x);
  // x^2 below |x| = 1/2, (1 - |x|) / 2 above: the smaller of the two
  const double square = x * x, half_gap = (1.0 - ax) * 0.5;
  const double z = square < half_gap ? square : half_gap;
  const double p = z * (p0 + z * (p1 + z * (p2 + z * (p3 + z * (p4 + z * p5)))));
  const double q = 1.0 + z * (q1 + z * (q2 + z * (q3 + z * q4)));
  const double r = p / q;
  const double s = std::sqrt(z);
  const double middle = pio2_hi - (x - (pio2_lo - x * r));  // pi/2 - asin(x)
  const double upper = 2.0 * (s + s * r);                   // acos(|x|), |x| >= 1/2
  const double lower = 2.0 * pio2_hi - 2.0 * (s + (s * r - pio2_lo));  // pi - acos(|x|)
  return ax < 0.5 ? middle : (x > 0.0 ? upper : lower);
}

// One row as reference.cos_angle takes it, from dot(out, in), |out| and |in|^2: cos(out, in) and
// arccos(cos) / pi. A NaN stays NaN (the clamps keep it, as torch.clamp_min does).
inline void cos_angle(double dot, double na, double ssb, double& cos, double& angle) {
  const double nb = std::sqrt(ssb);
  // each clamp as x86's MAXPD/MINPD takes it (a > b ? a : b: b when either is NaN)
  const double norms = (1e-12 > na ? 1e-12 : na) * (1e-12 > nb ? 1e-12 : nb);
  cos = dot / norms;
  const double below = 1.0 < cos ? 1.0 : cos;
  const double clamped = -1.0 > below ? -1.0 : below;
  constexpr double inv_pi = 0.31830988618379067154;  // 1 / pi, rounded to the nearest double
  angle = acos_branchless(clamped) * inv_pi;
}

// n slots of one segment's row outputs (block_stats.cpp's five `rows` fields, each at its own
// pointer), `padding` of which are not real rows and hold zeros -> out[0..6): the number of real
// rows and their sums of |out| (the root of ssa), cos, angle, small and nonfinite. A zero row
// adds 0 to each sum but the angle (1/2 at cos 0), which is taken off afterwards (with the mask
// in the loop, GCC vectorised it 64 rows a step, for the uint8 loads, and ran 2.5x slower).
#if defined(__GNUC__) && !defined(__clang__)
// GCC's jump threading split the vectorised loop at the clamps and the arccos's selects and
// evaluated the rational and the roots once per side: 1.7x slower
__attribute__((optimize("no-thread-jumps")))
#endif
inline void segment_row_sums(const double* dot, const double* ssa, const double* ssb,
                             const double* small, const double* nonfinite, int64_t n,
                             int64_t padding, double* out) {
  double norm_sum = 0, cos_sum = 0, angle_sum = 0, small_sum = 0, nonfinite_sum = 0;
#pragma omp simd reduction(+ : norm_sum, cos_sum, angle_sum, small_sum, nonfinite_sum)
  for (int64_t j = 0; j < n; ++j) {
    const double na = std::sqrt(ssa[j]);
    double cos, angle;
    cos_angle(dot[j], na, ssb[j], cos, angle);
    norm_sum += na;
    cos_sum += cos;
    angle_sum += angle;
    small_sum += small[j];
    nonfinite_sum += nonfinite[j];
  }
  if (padding) {
    double cos, angle;
    cos_angle(0.0, 0.0, 0.0, cos, angle);
    angle_sum -= double(padding) * angle;
  }
  out[0] = double(n - padding);
  out[1] = norm_sum;
  out[2] = cos_sum;
  out[3] = angle_sum;
  out[4] = small_sum;
  out[5] = nonfinite_sum;
}

}  // namespace
