#pragma once
// Threshold calibration, on the device: the global-entropy threshold θ whose
// patches have a target mean length (BLT's users tune θ by hand).
//
// The number of patches is non-increasing in θ, so a bisection finds the
// smallest θ (to float resolution) whose patches number at most
// positions / target. A grid-wide pass finds the entropies' range, then each
// step is two small kernels that read and update the bisection state in
// device memory: the host launches them and never waits.
#include <tokenless/core/block.cuh>
#include <tokenless/core/launch.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/workspace.hpp>
#include <tokenless/patcher/kernel.cuh>

#include <cmath>
#include <cstdint>

namespace tokenless::patcher {

namespace detail {

struct BisectState {
  float lo, hi;
  unsigned lo_key, hi_key;   // the init pass: min and max entropy as order-preserving bits
  unsigned long long count;  // entropies above mid, in rule positions
  unsigned long long base;   // patches every threshold gives (the first-two rule)
  double target;             // patches wanted
};

inline constexpr int kCalibrateSteps = 40;

// Whether entropy index i (global) feeds a rule position (p = local i + 1 >= 2).
TL_DEVICE TL_FORCEINLINE bool feeds_rule(const Layout& layout, std::int64_t i, std::int64_t n_total) {
  std::int64_t lo = 0, hi = layout.num_seqs;
  while (hi - lo > 1) {
    const std::int64_t mid = (lo + hi) / 2;
    if (layout.cu[mid] <= i) lo = mid;
    else hi = mid;
  }
  const std::int64_t local = i - layout.cu[lo], n = layout.cu[lo + 1] - layout.cu[lo];
  (void)n_total;
  return local >= 1 && local + 1 < n + layout.inc;
}

// Float bits that order as the floats do (NaN excluded by the caller).
TL_DEVICE TL_FORCEINLINE unsigned ordered_bits(float x) {
  const unsigned b = __float_as_uint(x);
  return b & 0x80000000u ? ~b : b | 0x80000000u;
}
TL_DEVICE TL_FORCEINLINE float from_ordered_bits(unsigned k) {
  return __uint_as_float(k & 0x80000000u ? k & 0x7fffffffu : ~k);
}

template <int = 0>
__global__ void calibrate_reset_kernel(BisectState* st) {
  st->lo_key = ~0u;
  st->hi_key = 0u;
  st->count = 0;
  st->base = 0;
}

// The range of the entropies and the patches every threshold gives (the
// first-two rule), over the whole grid: integer atomics, so deterministic.
inline constexpr int kCalibrateThreads = 256;

template <int = 0>
__global__ void __launch_bounds__(kCalibrateThreads) calibrate_init_kernel(Layout layout, const float* h,
                                                                          std::int64_t n_total, BisectState* st) {
  using R = block::Reduce<unsigned, kCalibrateThreads>;
  using RL = block::Reduce<unsigned long long, kCalibrateThreads>;
  __shared__ typename R::TempStorage smem;
  __shared__ typename RL::TempStorage smem_base;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  unsigned lo = ~0u, hi = 0u;
  for (std::int64_t i = first; i < n_total; i += stride) {
    const float x = h[i];
    if (x == x) {
      const unsigned k = ordered_bits(x);
      lo = k < lo ? k : lo;
      hi = k > hi ? k : hi;
    }
  }
  unsigned long long base = 0;
  for (std::int64_t b = first; b < layout.num_seqs; b += stride) {
    const long long m = layout.cu[b + 1] - layout.cu[b] + layout.inc;
    base += static_cast<unsigned long long>(m < 2 ? m : 2);
  }
  lo = R::reduce(lo, Min{}, smem);
  hi = R::reduce(hi, Max{}, smem);
  base = RL::reduce(base, Sum{}, smem_base);
  if (threadIdx.x == 0) {
    if (lo != ~0u) atomicMin(&st->lo_key, lo);
    if (hi != 0u) atomicMax(&st->hi_key, hi);
    if (base) atomicAdd(&st->base, base);
  }
}

template <int = 0>
__global__ void calibrate_bounds_kernel(Layout layout, std::int64_t n_total, float target_size, BisectState* st) {
  const bool any = st->hi_key != 0u;  // some entropy is not NaN
  st->lo = any ? from_ordered_bits(st->lo_key) - 1.0f : 0.0f;  // below every entropy: all fire
  st->hi = any ? from_ordered_bits(st->hi_key) : 0.0f;         // no entropy exceeds the max: none fire
  const double positions = static_cast<double>(n_total + layout.num_seqs * layout.inc);
  st->target = positions / static_cast<double>(target_size);
}

template <int = 0>
__global__ void calibrate_count_kernel(Layout layout, const float* h, std::int64_t n_total, BisectState* st) {
  const float mid = 0.5f * (st->lo + st->hi);
  unsigned long long c = 0;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n_total; i += stride) {
    c += (h[i] > mid && feeds_rule(layout, i, n_total)) ? 1u : 0u;
  }
  using R = block::Reduce<unsigned long long, 256>;
  __shared__ typename R::TempStorage smem;
  c = R::reduce(c, Sum{}, smem);
  if (threadIdx.x == 0 && c) atomicAdd(&st->count, c);
}

template <int = 0>
__global__ void calibrate_step_kernel(BisectState* st, float* threshold) {
  const float mid = 0.5f * (st->lo + st->hi);
  if (static_cast<double>(st->base + st->count) > st->target) st->lo = mid;  // too many patches
  else st->hi = mid;
  st->count = 0;
  *threshold = st->hi;
}

}  // namespace detail

struct Calibrate {
  struct Arguments {
    const float* entropies = nullptr;         // [n_total]
    std::int64_t n_total = 0;
    const std::int32_t* cu_seqlens = nullptr; // [num_seqs + 1]
    std::int64_t num_seqs = 0;
    bool include_next_token = false;
    float target_patch_size = 4.5f;           // mean bytes per patch wanted
    float* threshold = nullptr;               // out, on the device
  };

  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::not_null("entropies", a.entropies));
    TL_RETURN_IF_ERROR(check::not_null("cu_seqlens", a.cu_seqlens));
    TL_RETURN_IF_ERROR(check::not_null("threshold", a.threshold));
    TL_RETURN_IF_ERROR(check::positive("n_total", a.n_total));
    TL_RETURN_IF_ERROR(check::positive("num_seqs", a.num_seqs));
    if (!(a.target_patch_size >= 1.0f) || !std::isfinite(a.target_patch_size)) {
      return Status::argument(StatusCode::invalid_argument, "target_patch_size", "a finite size >= 1", "%g",
                              static_cast<double>(a.target_patch_size));
    }
    return Status::ok();
  }

  static std::size_t workspace_size(const Arguments&) { return align_up(sizeof(detail::BisectState), kWorkspaceAlignment); }

  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    TL_RETURN_IF_ERROR(check_workspace(ws, workspace_size(a)));
    auto* st = ws.at<detail::BisectState>(0);
    const detail::Layout lay{a.cu_seqlens, a.num_seqs, a.include_next_token ? 1 : 0};
    const dim3 grid(static_cast<unsigned>(std::max<std::int64_t>(1, std::min<std::int64_t>((a.n_total + 255) / 256, 1024))));
    TL_RETURN_IF_ERROR(launch(detail::calibrate_reset_kernel<>, {dim3(1), dim3(1), 0, stream}, st));
    TL_RETURN_IF_ERROR(launch(detail::calibrate_init_kernel<>, {grid, dim3(detail::kCalibrateThreads), 0, stream}, lay,
                              a.entropies, a.n_total, st));
    TL_RETURN_IF_ERROR(launch(detail::calibrate_bounds_kernel<>, {dim3(1), dim3(1), 0, stream}, lay, a.n_total,
                              a.target_patch_size, st));
    for (int s = 0; s < detail::kCalibrateSteps; ++s) {
      TL_RETURN_IF_ERROR(launch(detail::calibrate_count_kernel<>, {grid, dim3(256), 0, stream}, lay, a.entropies,
                                a.n_total, st));
      TL_RETURN_IF_ERROR(launch(detail::calibrate_step_kernel<>, {dim3(1), dim3(1), 0, stream}, st, a.threshold));
    }
    return Status::ok();
  }
};

}  // namespace tokenless::patcher
