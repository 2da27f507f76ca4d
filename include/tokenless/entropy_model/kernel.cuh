#pragma once
// The n-gram model's schedules: counting with integer atomics (exact, so
// deterministic), then a warp per position over the 256 byte values.
#include <tokenless/core/functional.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/warp.cuh>
#include <tokenless/entropy_model/policy.hpp>

#include <cstdint>

namespace tokenless::entropy_model::detail {

struct CountKernel {
  struct Params {
    const std::uint8_t* text;
    std::int64_t n;
    int order;
    std::int64_t buckets;
    std::uint32_t* ck;
    std::uint32_t* c1;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.n - 1, [&](std::int64_t i) {
      const unsigned next = p.text[i + 1];
      atomicAdd(&p.c1[static_cast<std::int64_t>(p.text[i]) * 256 + next], 1u);
      for (int k = 2; k <= p.order; ++k)
        atomicAdd(&p.ck[static_cast<std::int64_t>(context_hash(p.text, i, k, p.buckets)) * 256 + next], 1u);
    });
  }
};

// A warp per position; lanes cover the 256 byte values, 8 each.
struct EntropyKernel {
  struct Params {
    const std::uint8_t* text;
    std::int64_t n;
    NGramModelConfig cfg;
    const std::uint32_t* ck;
    const std::uint32_t* c1;
    bool leave_one_out;
    float* out;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    const NGramModelConfig& cfg = p.cfg;
    work::warp_items(p.n, [&](std::int64_t i, int lane) {
      const int own = p.leave_one_out && i + 1 < p.n ? p.text[i + 1] : -1;  // this occurrence was counted
      // A row of counts: each lane's 8 of the 256 (this occurrence left out), and their total.
      float c[8], q[8];
      auto load = [&](const std::uint32_t* row) {
        float total = 0;
        TL_UNROLL
        for (int e = 0; e < 8; ++e) {
          const int v = e * 32 + lane;
          c[e] = static_cast<float>(row[v]) - (v == own ? 1.0f : 0.0f);
          total += c[e];
        }
        return warp::reduce(total, Sum{});
      };
      const float total1 = load(p.c1 + static_cast<std::int64_t>(p.text[i]) * 256);
      TL_UNROLL
      for (int e = 0; e < 8; ++e) q[e] = (c[e] + cfg.alpha) / (total1 + 256.0f * cfg.alpha);
      for (int k = 2; k <= cfg.order; ++k) {
        const float total = load(p.ck + static_cast<std::int64_t>(context_hash(p.text, i, k, cfg.buckets)) * 256);
        TL_UNROLL
        for (int e = 0; e < 8; ++e) q[e] = (c[e] + cfg.beta * q[e]) / (total + cfg.beta);
      }
      float h = 0;
      TL_UNROLL
      for (int e = 0; e < 8; ++e) h -= q[e] * __logf(q[e]);
      h = warp::reduce(h, Sum{});
      if (lane == 0) p.out[i] = h;
    });
  }
};

}  // namespace tokenless::entropy_model::detail
