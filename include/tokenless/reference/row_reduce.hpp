#pragma once
// Host reference of RowReduce: the same semantics in double precision (the
// "truth" tests measure against), plus the naive fp32 loop whose error sets
// the tolerance scale for the kernel.
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/row_reduce/policy.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

namespace tokenless::reference {

template <row_reduce::Policy P, StorageFloat T>
std::vector<double> row_reduce(const T* in, std::int64_t rows, std::int64_t cols, std::int64_t ld) {
  std::vector<double> out(static_cast<std::size_t>(rows));
  for (std::int64_t r = 0; r < rows; ++r) {
    double acc = row_reduce::is_max_policy<P> ? -std::numeric_limits<double>::infinity() : 0.0;
    bool nan = false;
    for (std::int64_t c = 0; c < cols; ++c) {
      double x = to_float(in[r * ld + c]);
      double v = P::transform(static_cast<float>(x));
      if constexpr (std::is_same_v<P, row_reduce::SumSquaresPolicy>) v = x * x;  // exact square in double
      nan |= std::isnan(v);
      acc = row_reduce::is_max_policy<P> ? (v > acc ? v : acc) : acc + v;
    }
    out[static_cast<std::size_t>(r)] = nan ? std::numeric_limits<double>::quiet_NaN() : acc;
  }
  return out;
}

// Sequential fp32 accumulation: what a straightforward implementation at the
// kernel's precision computes.
template <row_reduce::Policy P, StorageFloat T>
std::vector<float> row_reduce_naive(const T* in, std::int64_t rows, std::int64_t cols, std::int64_t ld) {
  std::vector<float> out(static_cast<std::size_t>(rows));
  typename P::Combine combine{};
  for (std::int64_t r = 0; r < rows; ++r) {
    float acc = P::Combine::template identity<float>();
    for (std::int64_t c = 0; c < cols; ++c) acc = combine(acc, P::transform(to_float(in[r * ld + c])));
    out[static_cast<std::size_t>(r)] = acc;
  }
  return out;
}

// Backward: grad_in[r, c] = grad_out[r] * transform'(x); for Max the first
// maximal element (NaN counts as maximal) takes the whole gradient.
template <row_reduce::Policy P, StorageFloat T>
std::vector<float> row_reduce_backward(const T* in, const float* grad_out, std::int64_t rows, std::int64_t cols,
                                       std::int64_t ld) {
  std::vector<float> g(static_cast<std::size_t>(rows * cols), 0.0f);
  for (std::int64_t r = 0; r < rows; ++r) {
    if constexpr (row_reduce::is_max_policy<P>) {
      std::int64_t best = 0;
      float bv = to_float(in[r * ld]);
      for (std::int64_t c = 1; c < cols; ++c) {
        float v = to_float(in[r * ld + c]);
        if (std::isnan(bv)) break;
        if (std::isnan(v) || v > bv) {
          bv = v;
          best = c;
        }
      }
      g[static_cast<std::size_t>(r * cols + best)] = grad_out[r];
    } else {
      for (std::int64_t c = 0; c < cols; ++c) {
        g[static_cast<std::size_t>(r * cols + c)] = grad_out[r] * P::transform_grad(to_float(in[r * ld + c]));
      }
    }
  }
  return g;
}

}  // namespace tokenless::reference
