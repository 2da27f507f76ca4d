#pragma once
// The blocks' schedule: RMSNorm a warp a row, its lanes across the features
// in 16-byte vectors (scalar when the rows do not allow them), two passes
// over the row (the sum of squares, then the output); the weight's gradient
// a block per 32 columns, its warps over runs of rows, added in warp order
// (no atomics: the same bits on every run).
#include <tokenless/blocks/policy.hpp>
#include <tokenless/core/config.hpp>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/functional.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/vec.hpp>
#include <tokenless/core/warp.cuh>

#include <cstdint>

namespace tokenless::blocks::detail {

template <class T, int W>
TL_DEVICE TL_FORCEINLINE void load(const T* p, float (&v)[W]) {
  const Vec<T, W> x = *reinterpret_cast<const Vec<T, W>*>(p);
TL_UNROLL
  for (int i = 0; i < W; ++i) v[i] = to_float(x.v[i]);
}
template <class T, int W>
TL_DEVICE TL_FORCEINLINE void store(T* p, const float (&v)[W]) {
  Vec<T, W> x;
TL_UNROLL
  for (int i = 0; i < W; ++i) x.v[i] = from_float<T>(v[i]);
  *reinterpret_cast<Vec<T, W>*>(p) = x;
}

// 1 / sqrt(mean + eps) with IEEE sqrt and division, so that the executor
// and the GPU agree (rsqrtf is approximate).
TL_DEVICE TL_FORCEINLINE float inv_rms(float sum_squares, int d, float eps) {
  return 1.0f / sqrtf(sum_squares / static_cast<float>(d) + eps);
}

template <class P, class T, int W>
struct RmsNormKernel {
  struct Params {
    const T* x;
    std::int64_t x_stride;
    const T* residual;  // optional: h = residual + x
    std::int64_t residual_stride;
    const T* weight;
    std::int64_t rows;
    int d;
    float eps;
    T* out;
    std::int64_t out_stride;
    T* residual_out;  // optional: h
    std::int64_t residual_out_stride;
    float* inv;  // optional: [rows]
  };
  static constexpr int kThreads = 256;
  // h at columns [c, c + W) of row r: the add rounded to T, as the model's is.
  TL_DEVICE static void row_h(const Params& p, std::int64_t r, int c, float (&h)[W]) {
    load<T, W>(p.x + r * p.x_stride + c, h);
    if (!p.residual) return;
    float a[W];
    load<T, W>(p.residual + r * p.residual_stride + c, a);
TL_UNROLL
    for (int i = 0; i < W; ++i) h[i] = round_trip<T>(a[i] + h[i]);
  }
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.rows, [&](std::int64_t r, int lane) {
      float ss = 0.0f;
      for (int c = lane * W; c < p.d; c += 32 * W) {
        float h[W];
        row_h(p, r, c, h);
TL_UNROLL
        for (int i = 0; i < W; ++i) ss = fmaf(h[i], h[i], ss);
        if (p.residual_out) store<T, W>(p.residual_out + r * p.residual_out_stride + c, h);
      }
      const float inv = inv_rms(warp::reduce(ss, Sum{}), p.d, p.eps);
      for (int c = lane * W; c < p.d; c += 32 * W) {
        float h[W], w[W];
        // h again: from residual_out when written (it may alias the residual).
        if (p.residual_out) load<T, W>(p.residual_out + r * p.residual_out_stride + c, h);
        else row_h(p, r, c, h);
        load<T, W>(p.weight + c, w);
TL_UNROLL
        for (int i = 0; i < W; ++i) h[i] = P::template apply<T>(h[i] * inv, w[i]);
        store<T, W>(p.out + r * p.out_stride + c, h);
      }
      if (lane == 0 && p.inv) p.inv[r] = inv;
    });
  }
};

// dL/dh = inv (dn - n <dn, n> / d) + dL/dh from the residual path, with
// n = h · inv and dn = dy · w: the gradient of x and of the residual both.
template <class P, class T, int W>
struct RmsNormBackwardKernel {
  struct Params {
    const T* h;
    std::int64_t h_stride;
    const float* inv;
    const T* weight;
    const T* grad_out;
    std::int64_t grad_out_stride;
    const T* grad_residual;  // optional
    std::int64_t grad_residual_stride;
    std::int64_t rows;
    int d;
    T* grad_h;
    std::int64_t grad_h_stride;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.rows, [&](std::int64_t r, int lane) {
      const float inv = p.inv[r];
      float dot = 0.0f;
      for (int c = lane * W; c < p.d; c += 32 * W) {
        float h[W], g[W], w[W];
        load<T, W>(p.h + r * p.h_stride + c, h);
        load<T, W>(p.grad_out + r * p.grad_out_stride + c, g);
        load<T, W>(p.weight + c, w);
TL_UNROLL
        for (int i = 0; i < W; ++i) dot = fmaf(g[i] * w[i], h[i] * inv, dot);
      }
      const float mean_dot = warp::reduce(dot, Sum{}) / static_cast<float>(p.d);
      for (int c = lane * W; c < p.d; c += 32 * W) {
        float h[W], g[W], w[W], gr[W];
        load<T, W>(p.h + r * p.h_stride + c, h);
        load<T, W>(p.grad_out + r * p.grad_out_stride + c, g);
        load<T, W>(p.weight + c, w);
        if (p.grad_residual) load<T, W>(p.grad_residual + r * p.grad_residual_stride + c, gr);
TL_UNROLL
        for (int i = 0; i < W; ++i) {
          const float v = inv * (g[i] * w[i] - h[i] * inv * mean_dot);
          g[i] = p.grad_residual ? v + gr[i] : v;
        }
        store<T, W>(p.grad_h + r * p.grad_h_stride + c, g);
      }
    });
  }
};

// dL/dw[c] (+)= Σ_r dy[r, c] · n[r, c] (n as the forward stored it), a block
// per 32 columns, its warps over runs of rows, the runs added in warp order.
template <class P, class T>
struct RmsNormWeightGradKernel {
  struct Params {
    const T* h;
    std::int64_t h_stride;
    const float* inv;
    const T* grad_out;
    std::int64_t grad_out_stride;
    std::int64_t rows;
    int d;
    bool accumulate;
    float* grad_weight;
  };
  static constexpr int kThreads = 256;
  static constexpr int kWarps = kThreads / 32;
  struct SharedStorage {
    float part[kWarps][32];
  };
  TL_DEVICE void operator()(const Params& p, SharedStorage& s) const {
    const int lane = static_cast<int>(threadIdx.x) & 31, w = static_cast<int>(threadIdx.x) >> 5;
    const std::int64_t run = (p.rows + kWarps - 1) / kWarps;
    const std::int64_t r0 = w * run, r1 = r0 + run < p.rows ? r0 + run : p.rows;
    for (int c0 = static_cast<int>(blockIdx.x) * 32; c0 < p.d; c0 += static_cast<int>(gridDim.x) * 32) {
      const int c = c0 + lane;
      float acc = 0.0f;
      if (c < p.d) {
        for (std::int64_t r = r0; r < r1; ++r) {
          const float n = P::template normed_as_stored<T>(to_float(p.h[r * p.h_stride + c]) * p.inv[r]);
          acc = fmaf(to_float(p.grad_out[r * p.grad_out_stride + c]), n, acc);
        }
      }
      s.part[w][lane] = acc;
      __syncthreads();
      if (w == 0 && c < p.d) {
        float t = 0.0f;
        for (int v = 0; v < kWarps; ++v) t += s.part[v][lane];
        p.grad_weight[c] = p.accumulate ? p.grad_weight[c] + t : t;
      }
      __syncthreads();
    }
  }
};

}  // namespace tokenless::blocks::detail
