#pragma once
// Patcher schedules. One pass over the logits (a warp per row computes the
// entropy), then per-position start flags from the boundary policy, a
// device-wide scan for patch ids, and CSR outputs. Sequences of a varlen
// batch never see each other: every rule reads only its own sequence.
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/functional.hpp>
#include <tokenless/core/launch.cuh>
#include <tokenless/core/warp.cuh>
#include <tokenless/patcher/policy.hpp>

#include <cstdint>

namespace tokenless::patcher::detail {

inline constexpr int kMaxVocab = 512;
inline constexpr int kEntropyWarps = 8;

// Status codes of the input checks (first error wins).
enum : std::int32_t { kOk = 0, kBadSeqlens = 1, kEmptySequence = 2 };

struct DeviceStatus {
  std::int32_t code;
  std::int32_t index;      // the offending sequence
  std::int64_t required;   // patches needed, when more than the capacity; else 0
};

// H = -sum p log p with p = softmax(x): log S - sum e_i (x_i - m) / S, where
// m = max x, e_i = exp(x_i - m), S = sum e_i. NaN logits give NaN.
template <class T>
__global__ void __launch_bounds__(kEntropyWarps * 32) entropy_kernel(const T* __restrict__ logits, int V,
                                                                     std::int64_t rows, float* __restrict__ out,
                                                                     const DeviceStatus* status) {
  if (status->code != kOk) return;
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kEntropyWarps;
  for (std::int64_t r = static_cast<std::int64_t>(blockIdx.x) * kEntropyWarps + (threadIdx.x >> 5); r < rows;
       r += stride) {
    const T* x = logits + r * V;
    constexpr int kPerLane = kMaxVocab / 32;
    float v[kPerLane];
    float m = -INFINITY;
    bool nan = false;
    TL_UNROLL
    for (int k = 0; k < kPerLane; ++k) {
      const int c = k * 32 + lane;
      v[k] = c < V ? to_float(x[c]) : -INFINITY;
      nan |= v[k] != v[k];
      m = fmaxf(m, v[k]);
    }
    m = warp::reduce(m, Max{});
    float s = 0.0f, t = 0.0f;
    TL_UNROLL
    for (int k = 0; k < kPerLane; ++k) {
      if (k * 32 + lane < V) {
        const float d = v[k] - m;
        const float e = __expf(d);
        s += e;
        t += e * d;
      }
    }
    s = warp::reduce(s, Sum{});
    t = warp::reduce(t, Sum{});
    const bool any_nan = __any_sync(warp::kFullMask, nan);
    if (lane == 0) out[r] = any_nan ? NAN : __logf(s) - t / s;
  }
}

// Sequence b and its first position in the position space, where each
// sequence has n_b (+1 with include_next_token) positions.
struct Layout {
  const std::int32_t* cu;  // [B + 1] byte offsets
  std::int64_t num_seqs;
  int inc;                 // 1 with include_next_token
  TL_DEVICE std::int64_t seq_of_position(std::int64_t pos) const {
    std::int64_t lo = 0, hi = num_seqs;  // first_pos(lo) <= pos < first_pos(hi)
    while (hi - lo > 1) {
      const std::int64_t mid = (lo + hi) / 2;
      if (cu[mid] + mid * inc <= pos) lo = mid;
      else hi = mid;
    }
    return lo;
  }
  TL_DEVICE std::int64_t first_position(std::int64_t b) const { return cu[b] + b * inc; }
};

template <int = 0>  // a template, so that the header may be included by many translation units
__global__ void validate_kernel(Layout layout, std::int64_t n_total, DeviceStatus* status) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t b = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; b <= layout.num_seqs;
       b += stride) {
    const std::int64_t c = layout.cu[b];
    std::int32_t code = kOk;
    if ((b == 0 && c != 0) || (b == layout.num_seqs && c != n_total) || (b > 0 && c < layout.cu[b - 1])) code = kBadSeqlens;
    else if (b > 0 && c == layout.cu[b - 1]) code = kEmptySequence;
    if (code != kOk && atomicCAS(&status->code, kOk, code) == kOk) status->index = static_cast<std::int32_t>(b);
  }
}

// Start flag of every position, and the marker the scans consume: 1 / 0 for
// the patch-id sum, or the position / -1 for the max-length scan.
template <BoundaryPolicy Rule>
__global__ void flags_kernel(Rule rule, Layout layout, const float* entropies, const std::int32_t* tokens,
                             std::int64_t n_pos, int max_len, std::uint8_t* flags, std::int32_t* marker,
                             const DeviceStatus* status) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  if (status->code != kOk) {
    // Bad input: leave the outputs alone, but give the scans defined input.
    for (std::int64_t pos = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; pos < n_pos; pos += stride)
      marker[pos] = 0;
    return;
  }
  for (std::int64_t pos = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; pos < n_pos; pos += stride) {
    const std::int64_t b = layout.seq_of_position(pos);
    const std::int64_t begin = layout.cu[b];
    const std::int64_t p = pos - layout.first_position(b);
    const PositionView view{entropies ? entropies + begin : nullptr, tokens ? tokens + begin : nullptr,
                            layout.cu[b + 1] - begin};
    const bool start = is_patch_start(rule, view, p);
    flags[pos] = start;
    marker[pos] = max_len > 0 ? (start ? static_cast<std::int32_t>(pos) : -1) : start;
  }
}

// With a max-length cap: last_start[pos] is the last rule start at or before
// pos (sequence starts always are one, so the scan never crosses sequences).
template <int = 0>
__global__ void max_length_kernel(std::int64_t n_pos, int max_len, const std::int32_t* last_start, std::uint8_t* flags,
                                  std::int32_t* marker, const DeviceStatus* status) {
  if (status->code != kOk) return;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t pos = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; pos < n_pos; pos += stride) {
    const bool start = flags[pos] || max_length_start(pos, last_start[pos], max_len);
    flags[pos] = start;
    marker[pos] = start;
  }
}

// Checks the capacity, then writes patch ids, offsets and starts. On overflow
// it writes nothing and records how many patches were needed, in a field no
// kernel reads (the code word is written only by validate_kernel, before).
template <int = 0>
__global__ void finalize_kernel(Layout layout, std::int64_t n_pos, const std::uint8_t* flags,
                                const std::int32_t* inclusive, std::int64_t capacity, std::int32_t* patch_ids,
                                std::int32_t* patch_offsets, std::int32_t* patch_starts, DeviceStatus* status) {
  if (status->code != kOk) return;
  const std::int64_t total = inclusive[n_pos - 1];
  if (total > capacity) {
    if (blockIdx.x == 0 && threadIdx.x == 0) status->required = total;
    return;
  }
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (std::int64_t pos = first; pos < n_pos; pos += stride) {
    const std::int32_t pid = inclusive[pos] - 1;
    patch_ids[pos] = pid;
    if (flags[pos]) {
      const std::int64_t b = layout.seq_of_position(pos);
      patch_starts[pid] = static_cast<std::int32_t>(pos - layout.first_position(b));
    }
  }
  for (std::int64_t b = first; b <= layout.num_seqs; b += stride) {
    const std::int64_t fp = layout.first_position(b);
    patch_offsets[b] = fp == 0 ? 0 : inclusive[fp - 1];
  }
}

template <int = 0>
__global__ void lengths_kernel(Layout layout, std::int64_t n_pos, const std::int32_t* inclusive, std::int64_t capacity,
                               const std::int32_t* patch_offsets, const std::int32_t* patch_starts,
                               std::int32_t* patch_lengths, const DeviceStatus* status) {
  if (status->code != kOk) return;
  const std::int64_t total = inclusive[n_pos - 1];
  if (total > capacity) return;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t pid = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; pid < total; pid += stride) {
    std::int64_t lo = 0, hi = layout.num_seqs;  // patch_offsets[lo] <= pid < patch_offsets[hi]
    while (hi - lo > 1) {
      const std::int64_t mid = (lo + hi) / 2;
      if (patch_offsets[mid] <= pid) lo = mid;
      else hi = mid;
    }
    const std::int64_t n_next = layout.cu[lo + 1] - layout.cu[lo] + layout.inc;
    const std::int64_t end = pid + 1 < patch_offsets[lo + 1] ? patch_starts[pid + 1] : n_next;
    patch_lengths[pid] = static_cast<std::int32_t>(end - patch_starts[pid]);
  }
}

}  // namespace tokenless::patcher::detail
