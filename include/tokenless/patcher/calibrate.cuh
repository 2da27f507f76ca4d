#pragma once
// Threshold calibration, on the device: the global-entropy threshold θ whose
// patches have a target mean length (BLT's users tune θ by hand).
//
// The smallest θ whose patches number at most positions / target, found
// exactly by a radix select (detail::ThresholdState): nine small kernels that
// read and update the selection state in device memory. The host launches
// them and never waits.
#include <tokenless/core/block.cuh>
#include <tokenless/core/launch.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/workspace.hpp>
#include <tokenless/core/device.hpp>
#include <tokenless/patcher/kernel.cuh>
#include <tokenless/patcher/select.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace tokenless::patcher {

namespace detail {

// With the global rule, the patches of threshold θ are `base` (the first-two
// rule: min(2, positions) per sequence) plus the rule entropies above θ. So
// the smallest θ with at most `target` patches is the (c + 1)-th largest rule
// entropy, c = floor(target - base): exactly c entropies lie above it (fewer
// on ties). A radix select over the entropies' order-preserving bits finds it
// in four passes of eight bits, on the device.
struct ThresholdState {
  unsigned prefix;              // the key bits decided so far
  unsigned rank;                // 1-based rank of the wanted key among those matching the prefix
  int all_fire;                 // target allows every rule entropy: θ = (smallest) - 1
  int none;                     // no rule entropy: θ = 0
  unsigned long long base;      // patches every threshold gives
  unsigned long long hist[256];
};

inline constexpr int kCalibrateThreads = 256;
inline constexpr int kCalibratePasses = 4;

// Whether entropy index i (global) feeds a rule position (p = local i + 1 >= 2).
TL_DEVICE TL_FORCEINLINE bool feeds_rule(const Layout& layout, std::int64_t i) {
  std::int64_t lo = 0, hi = layout.num_seqs;
  while (hi - lo > 1) {
    const std::int64_t mid = (lo + hi) / 2;
    if (layout.cu[mid] <= i) lo = mid;
    else hi = mid;
  }
  const std::int64_t local = i - layout.cu[lo], n = layout.cu[lo + 1] - layout.cu[lo];
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
__global__ void calibrate_reset_kernel(ThresholdState* st) {
  for (int i = static_cast<int>(threadIdx.x); i < 256; i += blockDim.x) st->hist[i] = 0;
  if (threadIdx.x == 0) {
    st->prefix = 0;
    st->rank = 0;
    st->all_fire = 0;
    st->none = 0;
    st->base = 0;
  }
}

// Counts digit `shift` of the rule entropies that match the prefix; the
// first pass also counts the base patches. Shared counts per block, with the
// warp's lanes that share a bin added by one atomic (entropies share their
// top bits), then one global add per bin.
template <int = 0>
__global__ void __launch_bounds__(kCalibrateThreads) calibrate_count_kernel(Layout layout, const float* h,
                                                                           std::int64_t n_total, int shift,
                                                                           ThresholdState* st) {
  __shared__ std::uint32_t local[256];
  for (int i = static_cast<int>(threadIdx.x); i < 256; i += blockDim.x) local[i] = 0;
  __syncthreads();
  const unsigned prefix = st->prefix;
  const bool first = shift == 24;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t thread = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (std::int64_t i0 = static_cast<std::int64_t>(blockIdx.x) * blockDim.x; i0 < n_total; i0 += stride) {
    const std::int64_t i = i0 + threadIdx.x;  // block-uniform trips: count_bins votes
    std::int64_t bin = -1;
    if (i < n_total) {
      const float x = h[i];
      if (x == x && feeds_rule(layout, i)) {
        const unsigned key = ordered_bits(x);
        if (first || (key ^ prefix) >> (shift + 8) == 0) bin = static_cast<std::int64_t>((key >> shift) & 255u);
      }
    }
    count_bins(bin, local, nullptr);
  }
  unsigned long long base = 0;
  if (first) {
    for (std::int64_t b = thread; b < layout.num_seqs; b += stride) {
      const long long m = layout.cu[b + 1] - layout.cu[b] + layout.inc;
      base += static_cast<unsigned long long>(m < 2 ? m : 2);
    }
  }
  __syncthreads();
  for (int i = static_cast<int>(threadIdx.x); i < 256; i += blockDim.x)
    if (local[i]) atomicAdd(&st->hist[i], static_cast<unsigned long long>(local[i]));
  if (first) {
    using R = block::Reduce<unsigned long long, kCalibrateThreads>;
    __shared__ typename R::TempStorage smem;
    base = R::reduce(base, Sum{}, smem);
    if (threadIdx.x == 0 && base) atomicAdd(&st->base, base);
  }
}

// One block of 256 threads, a thread per bin: picks the digit that holds the
// wanted rank (the first pass also fixes the rank from the target), clears
// the counts, and after the last pass writes θ.
template <int = 0>
__global__ void __launch_bounds__(kCalibrateThreads) calibrate_pick_kernel(Layout layout, std::int64_t n_total,
                                                                          float target_size, int shift,
                                                                          ThresholdState* st, float* threshold) {
  using Scan = block::Scan<unsigned long long, kCalibrateThreads>;
  __shared__ typename Scan::TempStorage scan_ts;
  __shared__ unsigned long long wanted;
  const int digit = 255 - static_cast<int>(threadIdx.x);  // thread 0 holds the top digit
  const unsigned long long count = st->hist[digit];
  unsigned long long total = 0;
  const unsigned long long above = Scan::exclusive(count, Sum{}, 0ull, total, scan_ts);
  if (shift == 24 && threadIdx.x == 0) {
    // Rank of the wanted entropy among all M = total rule entropies.
    const double positions = static_cast<double>(n_total + layout.num_seqs * layout.inc);
    const double room = positions / static_cast<double>(target_size) - static_cast<double>(st->base);
    const double c = room < 0 ? 0.0 : floor(room);
    if (total == 0) {
      st->none = 1;
    } else if (c >= static_cast<double>(total)) {
      st->all_fire = 1;  // every rule entropy may fire: select the smallest
      st->rank = static_cast<unsigned>(total);
    } else {
      st->rank = static_cast<unsigned>(c) + 1;
    }
    wanted = st->rank;
  }
  __syncthreads();
  const unsigned long long rank = shift == 24 ? wanted : st->rank;
  __syncthreads();  // every thread has read the rank before it changes
  if (!st->none && rank > above && rank <= above + count) {
    st->prefix |= static_cast<unsigned>(digit) << shift;
    st->rank = static_cast<unsigned>(rank - above);
  }
  st->hist[digit] = 0;
  if (shift == 0) {
    __syncthreads();
    if (threadIdx.x == 0) {
      const float v = from_ordered_bits(st->prefix);
      *threshold = st->none ? 0.0f : st->all_fire ? v - 1.0f : v;
    }
  }
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

  static std::size_t workspace_size(const Arguments&) {
    return align_up(sizeof(detail::ThresholdState), kWorkspaceAlignment);
  }

  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(can_implement(a));
    TL_RETURN_IF_ERROR(check_workspace(ws, workspace_size(a)));
    auto* st = ws.at<detail::ThresholdState>(0);
    const detail::Layout lay{a.cu_seqlens, a.num_seqs, a.include_next_token ? 1 : 0};
    DeviceProperties p;
    const std::int64_t sms = device_properties(p).is_ok() ? p.sm_count : 132;
    const dim3 grid(static_cast<unsigned>(std::max<std::int64_t>(
        1, std::min<std::int64_t>((a.n_total + detail::kCalibrateThreads - 1) / detail::kCalibrateThreads, sms * 8))));
    const dim3 block(detail::kCalibrateThreads);
    TL_RETURN_IF_ERROR(launch(detail::calibrate_reset_kernel<>, {dim3(1), block, 0, stream}, st));
    for (int pass = 0; pass < detail::kCalibratePasses; ++pass) {
      const int shift = 24 - 8 * pass;
      TL_RETURN_IF_ERROR(launch(detail::calibrate_count_kernel<>, {grid, block, 0, stream}, lay, a.entropies, a.n_total,
                                shift, st));
      TL_RETURN_IF_ERROR(launch(detail::calibrate_pick_kernel<>, {dim3(1), block, 0, stream}, lay, a.n_total,
                                a.target_patch_size, shift, st, a.threshold));
    }
    return Status::ok();
  }
};

}  // namespace tokenless::patcher
