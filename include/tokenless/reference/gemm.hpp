#pragma once
// Host reference of the cuBLASLt GEMM helper (row-major, optional transposes,
// bias, tanh-approximated GELU as cuBLASLt's epilogue computes it).
#include <tokenless/core/dtype.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

namespace tokenless::reference {

inline double gelu_tanh(double x) {
  constexpr double k = 0.7978845608028654;  // sqrt(2 / pi)
  return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}

// D = alpha * op(A) op(B) + beta * D0 (+ bias) (then GELU), in double.
// A is [m, k] (or [k, m] if trans_a), B is [k, n] (or [n, k] if trans_b).
template <class T>
std::vector<double> gemm(const T* a, std::int64_t lda, bool trans_a, const T* b, std::int64_t ldb, bool trans_b,
                         const T* d0, std::int64_t ldd, const T* bias, bool gelu, std::int64_t m, std::int64_t n,
                         std::int64_t k, double alpha, double beta) {
  std::vector<double> out(static_cast<std::size_t>(m * n));
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (std::int64_t p = 0; p < k; ++p) {
        const double av = to_float(trans_a ? a[p * lda + i] : a[i * lda + p]);
        const double bv = to_float(trans_b ? b[j * ldb + p] : b[p * ldb + j]);
        acc += av * bv;
      }
      double v = alpha * acc;
      if (beta != 0.0 && d0) v += beta * to_float(d0[i * ldd + j]);
      if (bias) v += to_float(bias[j]);
      if (gelu) v = gelu_tanh(v);
      out[static_cast<std::size_t>(i * n + j)] = v;
    }
  }
  return out;
}

// The same computation as a naive kernel would do it: fp32 accumulation,
// result rounded to T.
template <class T>
std::vector<float> gemm_naive(const T* a, std::int64_t lda, bool trans_a, const T* b, std::int64_t ldb, bool trans_b,
                              const T* bias, bool gelu, std::int64_t m, std::int64_t n, std::int64_t k) {
  std::vector<float> out(static_cast<std::size_t>(m * n));
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      float acc = 0;
      for (std::int64_t p = 0; p < k; ++p) {
        acc += to_float(trans_a ? a[p * lda + i] : a[i * lda + p]) * to_float(trans_b ? b[j * ldb + p] : b[p * ldb + j]);
      }
      if (bias) acc += to_float(bias[j]);
      if (gelu) acc = static_cast<float>(gelu_tanh(acc));
      out[static_cast<std::size_t>(i * n + j)] = round_trip<T>(acc);
    }
  }
  return out;
}

}  // namespace tokenless::reference
