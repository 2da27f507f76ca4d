#pragma once
// Threshold calibration, on the device: the global-entropy threshold θ whose
// patches have a target mean length (BLT's users tune θ by hand).
//
// The number of patches is non-increasing in θ, so a bisection finds the
// smallest θ (to float resolution) whose patches number at most
// positions / target. Each step is two small kernels that read and update the
// bisection state in device memory: the host launches them and never waits.
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
  unsigned long long count;  // entropies above mid, in rule positions
  long long base;            // patches every threshold gives (the first-two rule)
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

template <int = 0>
__global__ void __launch_bounds__(1024) calibrate_init_kernel(Layout layout, const float* h, std::int64_t n_total,
                                                             float target_size, BisectState* st) {
  using R = block::Reduce<float, 1024>;
  __shared__ typename R::TempStorage smem;
  float lo = INFINITY, hi = -INFINITY;
  for (std::int64_t i = threadIdx.x; i < n_total; i += 1024) {
    if (h[i] == h[i]) {
      lo = fminf(lo, h[i]);
      hi = fmaxf(hi, h[i]);
    }
  }
  lo = R::reduce(lo, Min{}, smem);
  hi = R::reduce(hi, Max{}, smem);
  if (threadIdx.x == 0) {
    long long base = 0;
    for (std::int64_t b = 0; b < layout.num_seqs; ++b) {
      const long long m = layout.cu[b + 1] - layout.cu[b] + layout.inc;
      base += m < 2 ? m : 2;
    }
    const double positions = static_cast<double>(n_total + layout.num_seqs * layout.inc);
    st->lo = lo == INFINITY ? 0.0f : lo - 1.0f;  // below every entropy: all fire
    st->hi = hi == -INFINITY ? 0.0f : hi;        // no entropy exceeds the max: none fire
    st->count = 0;
    st->base = base;
    st->target = positions / static_cast<double>(target_size);
  }
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
  if (static_cast<double>(st->base + static_cast<long long>(st->count)) > st->target) st->lo = mid;  // too many patches
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
    TL_RETURN_IF_ERROR(launch(detail::calibrate_init_kernel<>, {dim3(1), dim3(1024), 0, stream}, lay, a.entropies,
                              a.n_total, a.target_patch_size, st));
    const dim3 grid(static_cast<unsigned>(std::max<std::int64_t>(1, std::min<std::int64_t>((a.n_total + 255) / 256, 1024))));
    for (int s = 0; s < detail::kCalibrateSteps; ++s) {
      TL_RETURN_IF_ERROR(launch(detail::calibrate_count_kernel<>, {grid, dim3(256), 0, stream}, lay, a.entropies,
                                a.n_total, st));
      TL_RETURN_IF_ERROR(launch(detail::calibrate_step_kernel<>, {dim3(1), dim3(1), 0, stream}, st, a.threshold));
    }
    return Status::ok();
  }
};

}  // namespace tokenless::patcher
