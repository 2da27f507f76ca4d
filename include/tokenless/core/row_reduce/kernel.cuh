#pragma once
// RowReduce schedule: one block per row, fp32 accumulation, fixed reduction
// order (run-to-run deterministic, no atomics).
#include <tokenless/core/block.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/row_reduce/policy.hpp>
#include <tokenless/core/vec.hpp>

#include <cstdint>

namespace tokenless::row_reduce {

template <class P, class T, int kBlock, int kVec>
__global__ void __launch_bounds__(kBlock) forward_kernel(const T* __restrict__ in, float* __restrict__ out,
                                                         std::int64_t cols, std::int64_t ld) {
  using Reduce = block::Reduce<float, kBlock>;
  __shared__ typename Reduce::TempStorage smem;
  using C = typename P::Combine;
  const T* row = in + static_cast<std::int64_t>(blockIdx.x) * ld;
  const int n = static_cast<int>(cols);
  float acc = C::template identity<float>();
  const C combine{};
  for (int c = static_cast<int>(threadIdx.x) * kVec; c < n; c += kBlock * kVec) {
    Vec<T, kVec> x = *reinterpret_cast<const Vec<T, kVec>*>(row + c);
TL_UNROLL
    for (int i = 0; i < kVec; ++i) acc = combine(acc, P::transform(to_float(x.v[i])));
  }
  acc = Reduce::reduce(acc, combine, smem);
  if (threadIdx.x == 0) out[blockIdx.x] = acc;
}

// grad_in[r, c] = grad_out[r] * transform'(x[r, c]); for Max, only the first
// maximal element of the row receives grad_out[r].
template <class P, class T, int kBlock>
__global__ void __launch_bounds__(kBlock) backward_kernel(const T* __restrict__ in, const float* __restrict__ grad_out,
                                                          T* __restrict__ grad_in, std::int64_t cols, std::int64_t ld,
                                                          std::int64_t ld_grad) {
  const std::int64_t r = blockIdx.x;
  const T* row = in + r * ld;
  T* grow = grad_in + r * ld_grad;
  const int n = static_cast<int>(cols);
  const float g = grad_out[r];
  if constexpr (is_max_policy<P>) {
    using ArgMaxR = block::ArgMaxReduce<float, kBlock>;
    __shared__ typename ArgMaxR::TempStorage smem;
    ValueIndex<float> best = ArgMax::identity<ValueIndex<float>>();
    for (int c = static_cast<int>(threadIdx.x); c < n; c += kBlock) best = ArgMax{}(best, {to_float(row[c]), c});
    best = ArgMaxR::reduce(best, smem);
    for (int c = static_cast<int>(threadIdx.x); c < n; c += kBlock) grow[c] = from_float<T>(c == best.index ? g : 0.0f);
  } else {
    for (int c = static_cast<int>(threadIdx.x); c < n; c += kBlock) {
      grow[c] = from_float<T>(g * P::transform_grad(to_float(row[c])));
    }
  }
}

}  // namespace tokenless::row_reduce
