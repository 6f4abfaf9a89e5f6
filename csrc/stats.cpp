// Streaming per-block activation statistics on the CPU: one read of a block's input and output
// residual streams, folded into per-row scalars and per-segment channel moments.
//
// The contract (shared with the Triton kernel in kernels/stats.py; layerfast/stats_dispatch.py
// finishes both into the accumulators of layerfast/stats_ref.py):
//
//   x_in, x_out : [B, T, d] fp32 | bf16 | fp16 buffers (bf16/fp16 passed as 16-bit integers),
//                 any strides for B and T, unit stride for d
//   mask        : [B, T] uint8, contiguous; rows with 0 are skipped and their outputs set to 0
//   rows        : [5, B, T] float64 out: dot(in, out), |out|^2, |in|^2, #|out| < threshold, #nonfinite
//   seg_mean    : [B, S, d] float64 out: per-channel mean of the real rows of segment s of sample b
//   seg_m2      : [B, S, d] float64 out: per-channel sum of squared deviations (Welford)
//
// A segment is seg_len consecutive positions of one sample (S = ceil(T / seg_len)); segments are
// the unit of OpenMP parallelism. All arithmetic after the load is in double, so the result
// matches the fp64 reference up to summation order. No PyTorch headers: the ABI is pybind11's.
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace py = pybind11;

namespace {

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define LF_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define LF_CLONES
#endif

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

LF_CLONES void load_row(const char* src, Dtype dtype, int64_t d, float* dst) {
  switch (dtype) {
    case Dtype::f32:
      std::memcpy(dst, src, size_t(d) * sizeof(float));
      break;
    case Dtype::bf16: {
      const uint16_t* p = reinterpret_cast<const uint16_t*>(src);
      for (int64_t c = 0; c < d; ++c) dst[c] = bf16_to_float(p[c]);
      break;
    }
    case Dtype::f16: {
      const uint16_t* p = reinterpret_cast<const uint16_t*>(src);
      for (int64_t c = 0; c < d; ++c) dst[c] = f16_to_float(p[c]);
      break;
    }
  }
}

struct RowStats {
  double dot, ssa, ssb, small, nonfinite;
};

// One real row: dot products, |a| < threshold count and the Welford update of the segment's
// channel moments (n = rows folded so far, this one included).
LF_CLONES RowStats fold_row(const float* a,  // [d] block output
                            const float* b,  // [d] block input
                            int64_t d, double eps, bool relative, double n,
                            double* mean,  // [d] in/out
                            double* m2) {  // [d] in/out
  double dot = 0, ssa = 0, ssb = 0;
  int64_t nonfinite = 0;
#pragma omp simd reduction(+ : dot, ssa, ssb, nonfinite)
  for (int64_t c = 0; c < d; ++c) {
    const double x = a[c], y = b[c];
    dot += x * y;
    ssa += x * x;
    ssb += y * y;
    nonfinite += (x - x != 0.0);  // NaN - NaN and inf - inf are NaN; finite x gives 0
  }
  const double threshold = relative ? eps * std::sqrt(ssa / double(d)) : eps;
  int64_t small = 0;
  const double inv_n = 1.0 / n;
#pragma omp simd reduction(+ : small)
  for (int64_t c = 0; c < d; ++c) {
    const double x = a[c];
    small += (std::fabs(x) < threshold);
    const double delta = x - mean[c];
    mean[c] += delta * inv_n;
    m2[c] += delta * (x - mean[c]);
  }
  return {dot, ssa, ssb, double(small), double(nonfinite)};
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
    std::vector<float> a(d), b(d);
#ifdef _OPENMP
#pragma omp for schedule(dynamic)
#endif
    for (int64_t seg = 0; seg < B * S; ++seg) {
      const int64_t bi = seg / S, t0 = (seg % S) * seg_len, t1 = std::min(T, t0 + seg_len);
      double* mean = mean_out + seg * d;
      double* m2 = m2_out + seg * d;
      std::fill(mean, mean + d, 0.0);
      std::fill(m2, m2 + d, 0.0);
      double n = 0;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t row = bi * T + t;
        RowStats s{0, 0, 0, 0, 0};
        if (m[row]) {
          load_row(vout.ptr + bi * vout.stride[0] + t * vout.stride[1], dtype, d, a.data());
          load_row(vin.ptr + bi * vin.stride[0] + t * vin.stride[1], dtype, d, b.data());
          n += 1;
          s = fold_row(a.data(), b.data(), d, eps, relative, n, mean, m2);
        }
        r[0 * n_rows + row] = s.dot;
        r[1 * n_rows + row] = s.ssa;
        r[2 * n_rows + row] = s.ssb;
        r[3 * n_rows + row] = s.small;
        r[4 * n_rows + row] = s.nonfinite;
      }
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
  load_row(static_cast<const char*>(s.ptr), dtype, n, out);
}

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace

PYBIND11_MODULE(_stats_cpp, mod) {
  mod.doc() = "layerfast streaming activation statistics (C++/OpenMP CPU kernels)";
  mod.def("block_stats", &block_stats, py::arg("x_in"), py::arg("x_out"), py::arg("dtype"),
          py::arg("mask"), py::arg("eps"), py::arg("relative"), py::arg("seg_len"), py::arg("rows"),
          py::arg("seg_mean"), py::arg("seg_m2"), py::arg("n_threads") = 0);
  mod.def("to_float32", &to_float32, py::arg("src"), py::arg("dtype"), py::arg("dst"));
  mod.def("max_threads", &max_threads);
#ifdef _OPENMP
  mod.attr("openmp") = true;
#else
  mod.attr("openmp") = false;
#endif
}
