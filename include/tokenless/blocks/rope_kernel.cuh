#pragma once
// RoPE's schedule: a warp a token. Each lane takes the pairs lane, lane + 32,
// ... of the rotation (at most kMaxPairsPerLane: rot_dim <= 256), computes
// their cos and sin once, and turns those pairs in every q and k head of the
// token. In place: each element is read and written by one lane.
#include <tokenless/blocks/policy.hpp>
#include <tokenless/core/config.hpp>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/varlen.hpp>

#include <cmath>
#include <cstdint>

namespace tokenless::blocks::detail {

inline constexpr int kRopeMaxPairsPerLane = 4;

// cos and sin of an fp32 angle to about an ulp, without local memory:
// cosf and sinf keep a slow path for huge arguments whose stack frame the
// compile tier refuses. The angle is reduced in double to r half-turns in
// [-1/2, 1/2] (exact enough for any position an int32 holds), then
// sincospif, whose own reduction is exact; an odd count of half-turns flips
// both signs.
TL_DEVICE TL_FORCEINLINE void rope_sincos(float angle, float& s, float& c) {
  const double t = static_cast<double>(angle) * 0.31830988618379067;  // 1 / pi
  const double n = rint(t);
  const float r = static_cast<float>(t - n);
#if defined(__CUDA_ARCH__)
  sincospif(r, &s, &c);
#else
  s = static_cast<float>(std::sin(3.141592653589793 * static_cast<double>(r)));
  c = static_cast<float>(std::cos(3.141592653589793 * static_cast<double>(r)));
#endif
  if (static_cast<long long>(n) & 1) {
    s = -s;
    c = -c;
  }
}
inline constexpr int kRopeMaxRotDim = 2 * 32 * kRopeMaxPairsPerLane;

template <class L, class T>
struct RopeKernel {
  struct Params {
    T* q;  // [tokens, q_heads, head_dim], rows q_stride apart
    std::int64_t q_stride;
    int q_heads;
    T* k;  // optional: [tokens, k_heads, head_dim]
    std::int64_t k_stride;
    int k_heads;
    int head_dim, rot_dim;
    const float* inv_freq;          // [rot_dim / 2]
    const std::int32_t* positions;  // optional: [tokens]
    VarlenBatch batch;              // otherwise: the position in the sequence,
    int seq_len;                    //   (uniform batches: their length)
    const std::int32_t* offset;     //   plus the sequence's offset (optional: a cache's length)
    float sign;                     // +1 forward, -1 backward
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;

  TL_DEVICE static std::int64_t position(const Params& p, std::int64_t t) {
    if (p.positions) return p.positions[t];
    // 32-bit division: positions fit int32 (can_implement checks).
    const std::int64_t b = p.batch.varlen() ? p.batch.seq_of(t) : static_cast<int>(t) / p.seq_len;
    return t - p.batch.start(b) + (p.offset ? p.offset[b] : 0);
  }

  TL_DEVICE void operator()(const Params& p) const {
    const int pairs = p.rot_dim / 2;
    work::warp_items(p.batch.total, [&](std::int64_t t, int lane) {
      const float pos = static_cast<float>(position(p, t));
      float c[kRopeMaxPairsPerLane], s[kRopeMaxPairsPerLane];
TL_UNROLL
      for (int j = 0; j < kRopeMaxPairsPerLane; ++j) {
        const int i = lane + 32 * j;
        const float angle = i < pairs ? pos * p.inv_freq[i] : 0.0f;  // the fp32 product, as transformers'
        rope_sincos(angle, s[j], c[j]);
        s[j] *= p.sign;
      }
      for (int h = 0; h < p.q_heads + p.k_heads; ++h) {
        T* row = h < p.q_heads ? p.q + t * p.q_stride + static_cast<std::int64_t>(h) * p.head_dim
                               : p.k + t * p.k_stride + static_cast<std::int64_t>(h - p.q_heads) * p.head_dim;
TL_UNROLL
        for (int j = 0; j < kRopeMaxPairsPerLane; ++j) {
          const int i = lane + 32 * j;
          if (i >= pairs) break;
          T* pa = row + L::first(i, p.rot_dim);
          T* pb = row + L::second(i, p.rot_dim);
          const float a = to_float(*pa), b = to_float(*pb);
          *pa = from_float<T>(a * c[j] - b * s[j]);
          *pb = from_float<T>(a * s[j] + b * c[j]);
        }
      }
    });
  }
};

}  // namespace tokenless::blocks::detail
