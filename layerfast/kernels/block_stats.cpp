// Streaming per-block activation statistics on the CPU: one read of a block's input and output
// residual streams, folded into per-row scalars and per-segment channel moments.
//
// Built as the optional extension layerfast._block_stats_cpp; its host wrapper is
// layerfast/activations/block_stats_cpp.py. The contract (shared with the Triton kernel in
// kernels/block_stats.py; layerfast/activations/finish.py turns both into the accumulators of
// layerfast/activations/reference.py):
//
//   x_in, x_out : [B, T, d] fp32 | bf16 | fp16 buffers (bf16/fp16 passed as 16-bit integers),
//                 any strides for B and T, unit stride for d
//   mask        : [B, T] uint8, contiguous; rows with 0 are skipped and their outputs set to 0
//   rows        : [5, B, T] float64 out: dot(in, out), |out|^2, |in|^2, #|out| < threshold, #nonfinite
//                 (optional: size 0, when seg_sums and seg_last are given)
//   seg_mean    : [B, S, d] float64 out: per-channel mean of the real rows of segment s of sample b
//   seg_m2      : [B, S, d] float64 out: per-channel sum of squared deviations (Welford)
//   seg_sums    : [B, S, 6] float64 out: sums over the segment's real rows of 1, |out|, cos(out, in),
//                 arccos(cos) / pi, #small, #nonfinite (block_stats_rows.h; optional: size 0)
//   seg_last    : [B, S, 3] float64 out: dot(in, out), |out|^2, |in|^2 of the segment's last real
//                 row, 0 if it has none (optional: size 0)
//
// A segment is seg_len consecutive positions of one sample (S = ceil(T / seg_len)); segments are
// the unit of OpenMP parallelism. Loads upcast to fp32; every fp32 sum is kept to a few dozen
// terms before it is added into fp64 (see CHUNK and FLUSH), and channel moments are shifted sums
// (shift = the segment's first real row). No PyTorch headers: the ABI is pybind11's.
// GCC before 13 warns that the _mm512_undefined_* operands inside its own AVX-512 headers are
// uninitialised (GCC bug 105593) at every use; those diagnostics are raised after inlining, so
// they can only be silenced for the whole file.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13 && defined(__AVX512F__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#include "block_stats_load.h"  // block_stats_simd.h with it
#include "block_stats_rows.h"
#include "block_stats_segment.h"

namespace py = pybind11;

namespace {

Dtype parse_dtype(const std::string& name) {
  if (name == "float32") return Dtype::f32;
  if (name == "bfloat16") return Dtype::bf16;
  if (name == "float16") return Dtype::f16;
  throw py::type_error("layerfast C++ statistics take float32, bfloat16 or float16, got " + name);
}

// Per-row sums run in fp32 vector lanes over CHUNK channels (32 terms a lane), then add into
// fp64; channel sums run in fp32 over at most FLUSH rows, then add into fp64. That bounds every
// fp32 sum to a few dozen terms. Rows are read whole, a few side by side (sequential streams;
// walking a group of rows chunk by chunk kept the channel sums in L1 but ran at half the speed
// out of cache). (CHUNK 256 -> 512 ran the AVX-512 fold 3-5% faster at hidden 576, one thread.)
constexpr int64_t CHUNK = 512;
constexpr int FLUSH = 16;
// Rows handed to the fold at once: the AVX-512 folds take 64 (and add their channel sums into
// fp64 after every FLUSH of them: fewer breaks in the input streams), the others FLUSH.
#ifdef LAYERFAST_AVX512
constexpr int GROUP = 64;
#else
constexpr int GROUP = FLUSH;
#endif
struct RowStats {
  double dot, ssa, ssb, small, nonfinite;
};

// The smallest float t with (float x < t) == (double(x) < threshold) for every float x.
float float_threshold(double threshold) {
  float t = static_cast<float>(threshold);
  if (double(t) < threshold) t = std::nextafter(t, INFINITY);
  return t;
}

// sum over channels of a[c]^2 (the relative threshold's row RMS): fp32 per CHUNK, then fp64
template <class L>
double row_sum_squares(const void* a, int64_t d) {
#ifdef LAYERFAST_SIMD
  return simd::sum_squares<typename L::Simd>(a, d, CHUNK);
#else
  double ssa = 0;
  for (int64_t c0 = 0; c0 < d; c0 += CHUNK) {
    const int64_t c1 = std::min(d, c0 + CHUNK);
    float part = 0.f;
#pragma omp simd reduction(+ : part)
    for (int64_t c = c0; c < c1; ++c) {
      const float x = L::at(a, c);
      part += x * x;
    }
    ssa += part;
  }
  return ssa;
#endif
}

#ifndef LAYERFAST_AVX512
// Rows [0, k) of a group over channels [c0, c1): dot(a, b), |a|^2, |b|^2, #|a| < thr added into
// r[i], and the deviations from shift folded into s1 += a - shift, s2 += (a - shift)^2. The AVX2
// folds take up to simd::rows_at_once rows at once; the portable one, one row. (The AVX-512
// folds take a whole group: see fold_group.)
template <class L>
inline void fold_rows(const char* const* a, const char* const* b, int k, int64_t c0, int64_t c1,
                      const float* thr, const float* shift, float* s1, float* s2, RowStats* r) {
#ifdef LAYERFAST_SIMD
  double sums[4 * FLUSH];
  simd::fold_block<typename L::Simd>(reinterpret_cast<const void* const*>(a),
                                     reinterpret_cast<const void* const*>(b), k, c0, c1, thr,
                                     shift, s1, s2, sums);
  for (int i = 0; i < k; ++i) {
    r[i].dot += sums[4 * i];
    r[i].ssa += sums[4 * i + 1];
    r[i].ssb += sums[4 * i + 2];
    r[i].small += sums[4 * i + 3];
  }
#else
  float sums[3] = {0.f, 0.f, 0.f};
  int32_t small = 0;
  fold_scalar<L>(a[0], b[0], c0, c1, thr[0], shift, s1, s2, sums, small);
  r[0].dot += sums[0];
  r[0].ssa += sums[1];
  r[0].ssb += sums[2];
  r[0].small += small;
#endif
}
#endif  // LAYERFAST_AVX512

#ifdef LAYERFAST_SIMD
using simd::rows_at_once;
#else
inline int rows_at_once(int64_t) { return 1; }
#endif

// A group of n <= GROUP real rows of one segment: their scalars into out[0..n), their fold into
// the segment's channel sums, rows_at_once(d) rows at a time (block_stats orders the rows for it).
template <class L>
void fold_group(const char* const* a,  // n block-output rows, [d] each
                const char* const* b,  // n block-input rows, [d] each
                int n, int64_t d, double eps, bool relative, Segment& seg, RowStats* out) {
  float thr[GROUP];
  const float absolute = relative ? 0.f : float_threshold(eps);
  for (int i = 0; i < n; ++i) {
    out[i] = RowStats{0, 0, 0, 0, 0};
    thr[i] = relative ? float_threshold(eps * std::sqrt(row_sum_squares<L>(a[i], d) / double(d)))
                      : absolute;
  }
  float* shift = seg.shift;
  if (seg.n == 0)
    for (int64_t c = 0; c < d; ++c) shift[stored_at(c, d, L::layout)] = L::at(a[0], c);
#ifdef LAYERFAST_AVX512
  // whole rows, and the group's channel sums into the segment's fp64 ones (no flush below)
  double sums[4 * GROUP];
  simd::fold_group<typename L::Simd>(reinterpret_cast<const void* const*>(a),
                                     reinterpret_cast<const void* const*>(b), n, d, CHUNK,
                                     FLUSH, thr,
                                     {shift, seg.s1f, seg.s2f, seg.s1.data(), seg.s2.data()},
                                     sums);
  for (int i = 0; i < n; ++i)
    out[i] = RowStats{sums[4 * i], sums[4 * i + 1], sums[4 * i + 2], sums[4 * i + 3], 0};
#else
  const int step = rows_at_once(d);
  for (int i = 0; i < n; i += step) {
    const int k = std::min(step, n - i);
    for (int64_t c0 = 0; c0 < d; c0 += CHUNK)
      fold_rows<L>(a + i, b + i, k, c0, std::min(d, c0 + CHUNK), thr + i, shift, seg.s1f,
                   seg.s2f, out + i);
  }
#endif
  // NaN/inf entries make |a|^2 non-finite, so the loop above need not look for them; only such
  // rows (or rows whose x * x overflows) are counted here.
  for (int i = 0; i < n; ++i) {
    if (std::isfinite(out[i].ssa)) continue;
    int64_t nonfinite = 0;
    for (int64_t c = 0; c < d; ++c) nonfinite += !std::isfinite(L::at(a[i], c));
    out[i].nonfinite = double(nonfinite);
  }
  seg.n += n;
#ifndef LAYERFAST_AVX512
  seg.flush();
#endif
}

void fold_group(const char* const* a, const char* const* b, int n, Dtype dtype, int64_t d,
                double eps, bool relative, Segment& seg, RowStats* out) {
  switch (dtype) {
    case Dtype::bf16: return fold_group<LoadBF16>(a, b, n, d, eps, relative, seg, out);
    case Dtype::f16: return fold_group<LoadF16>(a, b, n, d, eps, relative, seg, out);
    default: return fold_group<LoadF32>(a, b, n, d, eps, relative, seg, out);
  }
}

struct View3 {
  const char* ptr;
  int64_t shape[3];
  int64_t stride[3];  // bytes
};

View3 activation_view(const py::buffer_info& info, Dtype dtype, const char* name) {
  const int64_t want = dtype == Dtype::f32 ? 4 : 2;
  if (info.ndim != 3) throw py::value_error(std::string(name) + " must be [B, T, d]");
  if (info.itemsize != want)
    throw py::type_error(std::string(name) + ": item size " + std::to_string(info.itemsize) +
                         " does not match the declared dtype");
  if (info.shape[2] > 1 && info.strides[2] != want)
    throw py::value_error(std::string(name) + " needs unit stride along d");
  View3 v{static_cast<const char*>(info.ptr), {info.shape[0], info.shape[1], info.shape[2]},
          {info.strides[0], info.strides[1], info.strides[2]}};
  return v;
}

template <typename T>
T* contiguous_out(const py::buffer_info& info, const std::vector<int64_t>& shape, const char* fmt,
                  const char* name) {
  if (info.format != fmt || info.ndim != int64_t(shape.size()))
    throw py::type_error(std::string(name) + " has the wrong dtype or rank");
  int64_t stride = sizeof(T);
  for (int64_t i = int64_t(shape.size()) - 1; i >= 0; --i) {
    if (info.shape[i] != shape[i]) throw py::value_error(std::string(name) + " has the wrong shape");
    if (shape[i] > 1 && info.strides[i] != stride)
      throw py::value_error(std::string(name) + " must be C-contiguous");
    stride *= shape[i];
  }
  return static_cast<T*>(info.ptr);
}

void block_stats(py::buffer x_in, py::buffer x_out, const std::string& dtype_name, py::buffer mask,
                 double eps, bool relative, int64_t seg_len, py::buffer rows, py::buffer seg_mean,
                 py::buffer seg_m2, py::buffer seg_sums, py::buffer seg_last, int n_threads) {
  const Dtype dtype = parse_dtype(dtype_name);
  const View3 vin = activation_view(x_in.request(), dtype, "x_in");
  const View3 vout = activation_view(x_out.request(), dtype, "x_out");
  for (int i = 0; i < 3; ++i)
    if (vin.shape[i] != vout.shape[i]) throw py::value_error("x_in and x_out shapes differ");
  const int64_t B = vout.shape[0], T = vout.shape[1], d = vout.shape[2];
  if (seg_len < 1) throw py::value_error("seg_len must be positive");
  const int64_t S = (T + seg_len - 1) / seg_len;
  const uint8_t* m = contiguous_out<uint8_t>(mask.request(), {B, T}, "B", "mask");
  // the optional outputs: none when their buffer is empty
  auto optional_out = [](py::buffer& buf, const std::vector<int64_t>& shape, const char* name) {
    const py::buffer_info info = buf.request(true);
    return info.size == 0 ? nullptr : contiguous_out<double>(info, shape, "d", name);
  };
  double* r = optional_out(rows, {5, B, T}, "rows");
  double* mean_out = contiguous_out<double>(seg_mean.request(true), {B, S, d}, "d", "seg_mean");
  double* m2_out = contiguous_out<double>(seg_m2.request(true), {B, S, d}, "d", "seg_m2");
  double* sums_out = optional_out(seg_sums, {B, S, 6}, "seg_sums");
  double* last_out = optional_out(seg_last, {B, S, 3}, "seg_last");
  const int64_t n_rows = B * T;
  const int side = rows_at_once(d);
  // a relative threshold reads each row once before the fold (its RMS): groups of FLUSH rows
  // keep those rows in L2 for the fold (64 rows of 8192 bf16 channels are 1 MiB)
  const int group = relative ? FLUSH : GROUP;

  py::gil_scoped_release release;
#ifdef _OPENMP
  if (n_threads < 1) n_threads = omp_get_max_threads();
#pragma omp parallel num_threads(n_threads)
#endif
  {
    Segment state(d);
    const char* a_rows[GROUP];
    const char* b_rows[GROUP];
    int64_t at_rows[GROUP];  // their steps k within the segment
    RowStats stats[GROUP];
    // A segment's five row outputs in the order its rows are visited ([5, steps], step k at k),
    // put in place once it is done. Each group's outputs are then five short sequential writes;
    // written at their positions, they scattered over 5 x side lines, and those stores, missing
    // L1 while the inputs stream, cost the kernel 10% at hidden 576 (bf16, one thread).
    std::vector<double> seg_rows(5 * (std::min(seg_len, T) + side));
#ifdef _OPENMP
#pragma omp for schedule(dynamic)
#endif
    for (int64_t seg = 0; seg < B * S; ++seg) {
      const int64_t bi = seg / S, t0 = (seg % S) * seg_len, t1 = std::min(T, t0 + seg_len);
      const int64_t len = t1 - t0;
      state.reset();
      // The fold takes `side` rows side by side: the segment is cut into that many runs, and
      // step k visits position k / side of run k % side, so every run is read as one continuous
      // stream. (Four neighbouring rows side by side restart the hardware prefetcher's streams
      // every row, and out of cache ran at half the speed of one row at a time.)
      const int64_t run = (len + side - 1) / side, steps = run * side;
      double* const visited = seg_rows.data();  // [5, steps]
      int n = 0;
      // k = side * pos + in_run, without a division per row
      for (int64_t k = 0, pos = 0, in_run = 0; k < steps; ++k) {
        const int64_t j = in_run * run + pos, t = t0 + j;
        if (++in_run == side) in_run = 0, ++pos;
        if (j >= len || !m[bi * T + t]) {
          // past the segment's end (the last run is shorter), or padding: zeros
          for (int f = 0; f < 5; ++f) visited[f * steps + k] = 0.0;
        } else {
          a_rows[n] = vout.ptr + bi * vout.stride[0] + t * vout.stride[1];
          b_rows[n] = vin.ptr + bi * vin.stride[0] + t * vin.stride[1];
          at_rows[n++] = k;
        }
        if (n == group || (k + 1 == steps && n > 0)) {
          fold_group(a_rows, b_rows, n, dtype, d, eps, relative, state, stats);
          for (int i = 0; i < n; ++i) {
            const RowStats& s = stats[i];
            double* out = visited + at_rows[i];
            out[0 * steps] = s.dot;
            out[1 * steps] = s.ssa;
            out[2 * steps] = s.ssb;
            out[3 * steps] = s.small;
            out[4 * steps] = s.nonfinite;
          }
          n = 0;
        }
      }
      // position j = in_run * run + pos was visited at step k = pos * side + in_run
      for (int f = 0; r && f < 5; ++f) {
        double* dst = r + f * n_rows + bi * T + t0;
        const double* src = visited + f * steps;
        for (int64_t in_run = 0; in_run < side; ++in_run)
          for (int64_t pos = 0, j = in_run * run; pos < run && j < len; ++pos, ++j)
            dst[j] = src[pos * side + in_run];
      }
      // every slot that is not a real row (padding, past the end) holds zeros
      if (sums_out)
        segment_row_sums(visited, visited + steps, visited + 2 * steps, visited + 3 * steps,
                         visited + 4 * steps, steps, steps - state.n, sums_out + 6 * seg);
      if (last_out) {
        int64_t j = len - 1;
        while (j >= 0 && !m[bi * T + t0 + j]) --j;
        const int64_t k = j < 0 ? 0 : (j % run) * side + j / run;
        for (int f = 0; f < 3; ++f) last_out[3 * seg + f] = j < 0 ? 0.0 : visited[f * steps + k];
      }
      state.write(mean_out + seg * d, m2_out + seg * d,
                  dtype == Dtype::bf16 ? LoadBF16::layout : SumLayout::plain);
    }
  }
}

// Tests use this to check each row's cos and angle (block_stats_rows.h) against the reference's.
void row_cos_angle(py::buffer dot, py::buffer ssa, py::buffer ssb, py::buffer cos, py::buffer angle) {
  const py::buffer_info info = dot.request();
  const int64_t n = info.size;
  const double* in[3];
  int k = 0;
  for (py::buffer* b : {&dot, &ssa, &ssb})
    in[k++] = contiguous_out<double>(b->request(), {n}, "d", "dot, ssa and ssb");
  double* c = contiguous_out<double>(cos.request(true), {n}, "d", "cos");
  double* a = contiguous_out<double>(angle.request(true), {n}, "d", "angle");
  for (int64_t i = 0; i < n; ++i) cos_angle(in[0][i], std::sqrt(in[1][i]), in[2][i], c[i], a[i]);
}

// Tests use this to check the bf16/fp16 conversions on every bit pattern.
void to_float32(py::buffer src, const std::string& dtype_name, py::buffer dst) {
  const Dtype dtype = parse_dtype(dtype_name);
  py::buffer_info s = src.request();
  const int64_t n = s.size;
  if (s.ndim != 1 || s.itemsize != (dtype == Dtype::f32 ? 4 : 2) ||
      (n > 1 && s.strides[0] != s.itemsize))
    throw py::value_error("src must be a contiguous 1-D buffer of the declared dtype");
  float* out = contiguous_out<float>(dst.request(true), {n}, "f", "dst");
  load_row(s.ptr, dtype, n, out);
}

}  // namespace

PYBIND11_MODULE(_block_stats_cpp, mod) {
  mod.doc() = "layerfast streaming activation statistics (C++/OpenMP CPU kernels)";
  mod.def("block_stats", &block_stats, py::arg("x_in"), py::arg("x_out"), py::arg("dtype"),
          py::arg("mask"), py::arg("eps"), py::arg("relative"), py::arg("seg_len"), py::arg("rows"),
          py::arg("seg_mean"), py::arg("seg_m2"), py::arg("seg_sums"), py::arg("seg_last"),
          py::arg("n_threads") = 0);
  mod.def("row_cos_angle", &row_cos_angle, py::arg("dot"), py::arg("ssa"), py::arg("ssb"),
          py::arg("cos"), py::arg("angle"));
  mod.def("to_float32", &to_float32, py::arg("src"), py::arg("dtype"), py::arg("dst"));
}
