#pragma once
// RowReduce schedule: one block per row, fp32 accumulation, fixed reduction
// order (run-to-run deterministic, no atomics).
#include <tokenless/core/block.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/row_reduce/policy.hpp>
#include <tokenless/core/vec.hpp>

#include <cstdint>

namespace tokenless::row_reduce {

template <class P, class T, int kBlock, int kVec>
struct ForwardKernel {
  struct Params {
    const T* in;
    float* out;
    std::int64_t cols, ld;
  };
  using Reduce = block::Reduce<float, kBlock>;
  using SharedStorage = typename Reduce::TempStorage;
  static constexpr int kThreads = kBlock;

  TL_DEVICE void operator()(const Params& p, SharedStorage& smem) const {
    using C = typename P::Combine;
    const T* __restrict__ row = p.in + static_cast<std::int64_t>(blockIdx.x) * p.ld;
    const int n = static_cast<int>(p.cols);
    float acc = C::template identity<float>();
    const C combine{};
    for (int c = static_cast<int>(threadIdx.x) * kVec; c < n; c += kBlock * kVec) {
      Vec<T, kVec> x = *reinterpret_cast<const Vec<T, kVec>*>(row + c);
      TL_UNROLL
      for (int i = 0; i < kVec; ++i) acc = combine(acc, P::transform(to_float(x.v[i])));
    }
    acc = Reduce::reduce(acc, combine, smem);
    if (threadIdx.x == 0) p.out[blockIdx.x] = acc;
  }
};

// grad_in[r, c] = grad_out[r] * transform'(x[r, c]); for Max, only the first
// maximal element of the row receives grad_out[r].
template <class P, class T, int kBlock>
struct BackwardKernel {
  struct Params {
    const T* in;
    const float* grad_out;
    T* grad_in;
    std::int64_t cols, ld, ld_grad;
  };
  using ArgMaxR = block::ArgMaxReduce<float, kBlock>;
  using SharedStorage = typename ArgMaxR::TempStorage;
  static constexpr int kThreads = kBlock;

  TL_DEVICE void operator()(const Params& p, SharedStorage& smem) const {
    const std::int64_t r = blockIdx.x;
    const T* row = p.in + r * p.ld;
    T* grow = p.grad_in + r * p.ld_grad;
    const int n = static_cast<int>(p.cols);
    const float g = p.grad_out[r];
    if constexpr (is_max_policy<P>) {
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
};

}  // namespace tokenless::row_reduce
