// Streaming per-block activation statistics on the CPU: one read of a block's input and output
// residual streams, folded into per-row scalars and per-segment channel moments.
//
// Built as the optional extension layerfast._block_stats_cpp; its host wrapper is
// layerfast/activations/cpp_block_stats.py. The contract (shared with the Triton kernel in
// kernels/block_stats.py; layerfast/activations/finish.py turns both into the accumulators of
// layerfast/activations/reference.py):
//
//   x_in, x_out : [B, T, d] fp32 | bf16 | fp16 buffers (bf16/fp16 passed as 16-bit integers),
//                 any strides for B and T, unit stride for d
//   mask        : [B, T] uint8, contiguous; rows with 0 are skipped and their outputs set to 0
//   rows        : [5, B, T] float64 out: dot(in, out), |out|^2, |in|^2, #|out| < threshold, #nonfinite
//   seg_mean    : [B, S, d] float64 out: per-channel mean of the real rows of segment s of sample b
//   seg_m2      : [B, S, d] float64 out: per-channel sum of squared deviations (Welford)
//
// A segment is seg_len consecutive positions of one sample (S = ceil(T / seg_len)); segments are
// the unit of OpenMP parallelism. Loads upcast to fp32; every fp32 sum is kept to a few dozen
// terms before it is added into fp64 (see CHUNK and FLUSH), and channel moments are shifted sums
// (shift = the segment's first real row). No PyTorch headers: the ABI is pybind11's.
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
#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace py = pybind11;

namespace {

enum class Dtype { f32, bf16, f16 };

Dtype parse_dtype(const std::string& name) {
  if (name == "float32") return Dtype::f32;
  if (name == "bfloat16") return Dtype::bf16;
  if (name == "float16") return Dtype::f16;
  throw py::type_error("layerfast C++ statistics take float32, bfloat16 or float16, got " + name);
}

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
  static float at(const void* p, int64_t c) { return static_cast<const float*>(p)[c]; }
};
struct LoadBF16 {
  static float at(const void* p, int64_t c) { return bf16_to_float(static_cast<const uint16_t*>(p)[c]); }
};

// fp16 row -> fp32 buffer; with F16C, eight at a time (the compiler does not vectorise the
// bit-level conversion above).
void f16_row_to_float(const void* src, int64_t d, float* dst) {
  const uint16_t* p = static_cast<const uint16_t*>(src);
  int64_t c = 0;
#if defined(__F16C__)
  for (; c + 8 <= d; c += 8)
    _mm256_storeu_ps(dst + c, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + c))));
#endif
  for (; c < d; ++c) dst[c] = f16_to_float(p[c]);
}

void load_row(const void* src, Dtype dtype, int64_t d, float* dst) {
  switch (dtype) {
    case Dtype::f32: std::memcpy(dst, src, size_t(d) * sizeof(float)); break;
    case Dtype::bf16: for (int64_t c = 0; c < d; ++c) dst[c] = LoadBF16::at(src, c); break;
    case Dtype::f16: f16_row_to_float(src, d, dst); break;
  }
}

// Per-row sums run in fp32 vector lanes over CHUNK channels, then add into fp64; channel sums run
// in fp32 over FLUSH rows, then add into fp64. That bounds every fp32 sum to a few dozen terms.
constexpr int64_t CHUNK = 256;
constexpr int FLUSH = 16;

struct RowStats {
  double dot, ssa, ssb, small, nonfinite;
};

// A segment's channel moments as shifted sums: shift = its first real row, s1 = sum(x - shift),
// s2 = sum((x - shift)^2); fp32 partials s1f/s2f are flushed into s1/s2 every FLUSH rows.
struct Segment {
  int64_t d;
  std::vector<float> shift, s1f, s2f;
  std::vector<double> s1, s2;
  std::vector<float> row_a, row_b;  // fp16 rows converted to fp32
  double n = 0;
  int pending = 0;

  explicit Segment(int64_t d_)
      : d(d_), shift(d_), s1f(d_), s2f(d_), s1(d_), s2(d_), row_a(d_), row_b(d_) {}

  void reset() {
    std::fill(s1f.begin(), s1f.end(), 0.f);
    std::fill(s2f.begin(), s2f.end(), 0.f);
    std::fill(s1.begin(), s1.end(), 0.0);
    std::fill(s2.begin(), s2.end(), 0.0);
    n = 0;
    pending = 0;
  }

  void flush() {
    for (int64_t c = 0; c < d; ++c) {
      s1[c] += s1f[c];
      s2[c] += s2f[c];
      s1f[c] = s2f[c] = 0.f;
    }
    pending = 0;
  }

  // mean = shift + s1 / n, M2 = s2 - s1^2 / n
  void write(double* mean, double* m2) {
    flush();
    for (int64_t c = 0; c < d; ++c) {
      if (n == 0) {
        mean[c] = m2[c] = 0.0;
        continue;
      }
      mean[c] = double(shift[c]) + s1[c] / n;
      m2[c] = std::max(0.0, s2[c] - s1[c] * s1[c] / n);
    }
  }
};

// The smallest float t with (float x < t) == (double(x) < threshold) for every float x.
float float_threshold(double threshold) {
  float t = static_cast<float>(threshold);
  if (double(t) < threshold) t = std::nextafter(t, INFINITY);
  return t;
}

template <class L>
inline __attribute__((always_inline)) RowStats fold_row_impl(const void* a, const void* b,
                                                             int64_t d, double eps, bool relative,
                                                             Segment& seg) {
  double threshold = eps;
  if (relative) {
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
    threshold = eps * std::sqrt(ssa / double(d));
  }
  const float thr = float_threshold(threshold);
  float* shift = seg.shift.data();
  float* s1 = seg.s1f.data();
  float* s2 = seg.s2f.data();
  if (seg.n == 0)
    for (int64_t c = 0; c < d; ++c) shift[c] = L::at(a, c);
  RowStats r{0, 0, 0, 0, 0};
  for (int64_t c0 = 0; c0 < d; c0 += CHUNK) {
    const int64_t c1 = std::min(d, c0 + CHUNK);
    float dot = 0.f, ssa = 0.f, ssb = 0.f;
    int32_t small = 0;
#pragma omp simd reduction(+ : dot, ssa, ssb, small)
    for (int64_t c = c0; c < c1; ++c) {
      const float x = L::at(a, c), y = L::at(b, c);
      dot += x * y;
      ssa += x * x;
      ssb += y * y;
      small += (std::fabs(x) < thr);
      const float dx = x - shift[c];
      s1[c] += dx;
      s2[c] += dx * dx;
    }
    r.dot += dot;
    r.ssa += ssa;
    r.ssb += ssb;
    r.small += small;
  }
  // NaN/inf entries make |a|^2 non-finite, so the loop above need not look for them; only such
  // rows (or rows whose x * x overflows) are counted here.
  if (!std::isfinite(r.ssa)) {
    int64_t nonfinite = 0;
    for (int64_t c = 0; c < d; ++c) nonfinite += !std::isfinite(L::at(a, c));
    r.nonfinite = double(nonfinite);
  }
  seg.n += 1;
  if (++seg.pending == FLUSH) seg.flush();
  return r;
}

// One real row: its scalars, and its fold into the segment's channel sums.
RowStats fold_row(const void* a,  // [d] block output
                  const void* b,  // [d] block input
                  Dtype dtype, int64_t d, double eps, bool relative, Segment& seg) {
  switch (dtype) {
    case Dtype::bf16: return fold_row_impl<LoadBF16>(a, b, d, eps, relative, seg);
    case Dtype::f16:
      f16_row_to_float(a, d, seg.row_a.data());
      f16_row_to_float(b, d, seg.row_b.data());
      return fold_row_impl<LoadF32>(seg.row_a.data(), seg.row_b.data(), d, eps, relative, seg);
    default: return fold_row_impl<LoadF32>(a, b, d, eps, relative, seg);
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
                 py::buffer seg_m2, int n_threads) {
  const Dtype dtype = parse_dtype(dtype_name);
  const View3 vin = activation_view(x_in.request(), dtype, "x_in");
  const View3 vout = activation_view(x_out.request(), dtype, "x_out");
  for (int i = 0; i < 3; ++i)
    if (vin.shape[i] != vout.shape[i]) throw py::value_error("x_in and x_out shapes differ");
  const int64_t B = vout.shape[0], T = vout.shape[1], d = vout.shape[2];
  if (seg_len < 1) throw py::value_error("seg_len must be positive");
  const int64_t S = (T + seg_len - 1) / seg_len;
  const uint8_t* m = contiguous_out<uint8_t>(mask.request(), {B, T}, "B", "mask");
  double* r = contiguous_out<double>(rows.request(true), {5, B, T}, "d", "rows");
  double* mean_out = contiguous_out<double>(seg_mean.request(true), {B, S, d}, "d", "seg_mean");
  double* m2_out = contiguous_out<double>(seg_m2.request(true), {B, S, d}, "d", "seg_m2");
  const int64_t n_rows = B * T;

  py::gil_scoped_release release;
#ifdef _OPENMP
  if (n_threads < 1) n_threads = omp_get_max_threads();
#pragma omp parallel num_threads(n_threads)
#endif
  {
    Segment state(d);
#ifdef _OPENMP
#pragma omp for schedule(dynamic)
#endif
    for (int64_t seg = 0; seg < B * S; ++seg) {
      const int64_t bi = seg / S, t0 = (seg % S) * seg_len, t1 = std::min(T, t0 + seg_len);
      state.reset();
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t row = bi * T + t;
        RowStats s{0, 0, 0, 0, 0};
        if (m[row])
          s = fold_row(vout.ptr + bi * vout.stride[0] + t * vout.stride[1],
                       vin.ptr + bi * vin.stride[0] + t * vin.stride[1], dtype, d, eps, relative,
                       state);
        r[0 * n_rows + row] = s.dot;
        r[1 * n_rows + row] = s.ssa;
        r[2 * n_rows + row] = s.ssb;
        r[3 * n_rows + row] = s.small;
        r[4 * n_rows + row] = s.nonfinite;
      }
      state.write(mean_out + seg * d, m2_out + seg * d);
    }
  }
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
          py::arg("seg_mean"), py::arg("seg_m2"), py::arg("n_threads") = 0);
  mod.def("to_float32", &to_float32, py::arg("src"), py::arg("dtype"), py::arg("dst"));
}
