#pragma once
// The norms' schedule: a warp a row, its lanes across the features in
// 16-byte vectors (scalar when the rows do not allow them), passes over the
// row held in cache (LayerNorm: the mean, the centred sum of squares, the
// output; RMSNorm: the sum of squares, the output). The weight's and bias's
// gradients: a block per 32 columns, its warps over runs of rows, added in
// warp order (no atomics: the same bits on every run).
//
// One kernel serves both norms: kCentered is LayerNorm (the mean taken out,
// a bias), otherwise RMSNorm.
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
TL_DEVICE TL_FORCEINLINE float inv_root(float sum_squares, int d, float eps) {
  return 1.0f / sqrtf(sum_squares / static_cast<float>(d) + eps);
}

template <bool kCentered, class P, class T, int W>
struct NormKernel {
  struct Params {
    const T* x;
    std::int64_t x_stride;
    const T* residual;  // optional: h = residual + x
    std::int64_t residual_stride;
    const T* weight;
    const T* bias;  // LayerNorm, optional
    std::int64_t rows;
    int d;
    float eps;
    T* out;
    std::int64_t out_stride;
    T* residual_out;  // optional: h
    std::int64_t residual_out_stride;
    float* inv;   // optional: [rows]
    float* mean;  // LayerNorm, optional: [rows]
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
  // h again: from residual_out once written (it may alias the residual).
  TL_DEVICE static void row_h_again(const Params& p, std::int64_t r, int c, float (&h)[W]) {
    if (p.residual_out) load<T, W>(p.residual_out + r * p.residual_out_stride + c, h);
    else row_h(p, r, c, h);
  }
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.rows, [&](std::int64_t r, int lane) {
      float sum = 0.0f;  // RMSNorm: of squares; LayerNorm: of values
      for (int c = lane * W; c < p.d; c += 32 * W) {
        float h[W];
        row_h(p, r, c, h);
TL_UNROLL
        for (int i = 0; i < W; ++i) sum = kCentered ? sum + h[i] : fmaf(h[i], h[i], sum);
        if (p.residual_out) store<T, W>(p.residual_out + r * p.residual_out_stride + c, h);
      }
      sum = warp::reduce(sum, Sum{});
      float mu = 0.0f;
      if constexpr (kCentered) {
        mu = sum / static_cast<float>(p.d);
        sum = 0.0f;
        for (int c = lane * W; c < p.d; c += 32 * W) {
          float h[W];
          row_h_again(p, r, c, h);
TL_UNROLL
          for (int i = 0; i < W; ++i) sum = fmaf(h[i] - mu, h[i] - mu, sum);
        }
        sum = warp::reduce(sum, Sum{});
      }
      const float inv = inv_root(sum, p.d, p.eps);
      for (int c = lane * W; c < p.d; c += 32 * W) {
        float h[W], w[W], b[W] = {};
        row_h_again(p, r, c, h);
        load<T, W>(p.weight + c, w);
        if (kCentered && p.bias) load<T, W>(p.bias + c, b);
TL_UNROLL
        for (int i = 0; i < W; ++i) h[i] = P::template apply<T>((h[i] - mu) * inv, w[i]) + b[i];
        store<T, W>(p.out + r * p.out_stride + c, h);
      }
      if (lane == 0 && p.inv) p.inv[r] = inv;
      if (kCentered && lane == 0 && p.mean) p.mean[r] = mu;
    });
  }
};

// dL/dh = inv (dn - [mean(dn)] - n mean(dn · n)) + dL/dh from the residual
// path, with n = (h - [mu]) · inv and dn = dy · w (the bracketed terms
// LayerNorm's): the gradient of x and of the residual both.
template <bool kCentered, class P, class T, int W>
struct NormBackwardKernel {
  struct Params {
    const T* h;
    std::int64_t h_stride;
    const float* inv;
    const float* mean;  // LayerNorm
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
      const float mu = kCentered ? p.mean[r] : 0.0f;
      float dot = 0.0f, sum = 0.0f;
      for (int c = lane * W; c < p.d; c += 32 * W) {
        float h[W], g[W], w[W];
        load<T, W>(p.h + r * p.h_stride + c, h);
        load<T, W>(p.grad_out + r * p.grad_out_stride + c, g);
        load<T, W>(p.weight + c, w);
TL_UNROLL
        for (int i = 0; i < W; ++i) {
          dot = fmaf(g[i] * w[i], (h[i] - mu) * inv, dot);
          if constexpr (kCentered) sum += g[i] * w[i];
        }
      }
      const float mean_dot = warp::reduce(dot, Sum{}) / static_cast<float>(p.d);
      const float mean_dn = kCentered ? warp::reduce(sum, Sum{}) / static_cast<float>(p.d) : 0.0f;
      for (int c = lane * W; c < p.d; c += 32 * W) {
        float h[W], g[W], w[W], gr[W];
        load<T, W>(p.h + r * p.h_stride + c, h);
        load<T, W>(p.grad_out + r * p.grad_out_stride + c, g);
        load<T, W>(p.weight + c, w);
        if (p.grad_residual) load<T, W>(p.grad_residual + r * p.grad_residual_stride + c, gr);
TL_UNROLL
        for (int i = 0; i < W; ++i) {
          const float v = inv * (g[i] * w[i] - mean_dn - (h[i] - mu) * inv * mean_dot);
          g[i] = p.grad_residual ? v + gr[i] : v;
        }
        store<T, W>(p.grad_h + r * p.grad_h_stride + c, g);
      }
    });
  }
};

// Column sums over rows, a block per 32 columns (grid-stride), its warps
// over runs of rows, the runs added in warp order: deterministic. f(r, c)
// gives the terms (up to two sums at once), done(c, s0, s1) takes the totals.
template <int kWarps, class F, class Done>
TL_DEVICE TL_FORCEINLINE void column_sums(std::int64_t rows, int d, float (&part)[2][kWarps][32], F&& f,
                                          Done&& done) {
  const int lane = static_cast<int>(threadIdx.x) & 31, w = static_cast<int>(threadIdx.x) >> 5;
  const std::int64_t run = (rows + kWarps - 1) / kWarps;
  const std::int64_t r0 = w * run, r1 = r0 + run < rows ? r0 + run : rows;
  for (int c0 = static_cast<int>(blockIdx.x) * 32; c0 < d; c0 += static_cast<int>(gridDim.x) * 32) {
    const int c = c0 + lane;
    float a0 = 0.0f, a1 = 0.0f;
    if (c < d) {
      for (std::int64_t r = r0; r < r1; ++r) f(r, c, a0, a1);
    }
    part[0][w][lane] = a0;
    part[1][w][lane] = a1;
    __syncthreads();
    if (w == 0 && c < d) {
      float t0 = 0.0f, t1 = 0.0f;
      for (int v = 0; v < kWarps; ++v) {
        t0 += part[0][v][lane];
        t1 += part[1][v][lane];
      }
      done(c, t0, t1);
    }
    __syncthreads();
  }
}

// dL/dw[c] (+)= Σ_r dy[r, c] · n[r, c] (n as the forward stored it), and
// LayerNorm's dL/db[c] (+)= Σ_r dy[r, c].
template <bool kCentered, class P, class T>
struct NormWeightGradKernel {
  struct Params {
    const T* h;
    std::int64_t h_stride;
    const float* inv;
    const float* mean;  // LayerNorm
    const T* grad_out;
    std::int64_t grad_out_stride;
    std::int64_t rows;
    int d;
    bool accumulate;
    float* grad_weight;  // optional
    float* grad_bias;    // LayerNorm, optional
  };
  static constexpr int kThreads = 256;
  static constexpr int kWarps = kThreads / 32;
  struct SharedStorage {
    float part[2][kWarps][32];
  };
  TL_DEVICE void operator()(const Params& p, SharedStorage& s) const {
    column_sums<kWarps>(
        p.rows, p.d, s.part,
        [&](std::int64_t r, int c, float& dw, float& db) {
          const float mu = kCentered ? p.mean[r] : 0.0f;
          const float g = to_float(p.grad_out[r * p.grad_out_stride + c]);
          dw = fmaf(g, P::template normed_as_stored<T>((to_float(p.h[r * p.h_stride + c]) - mu) * p.inv[r]), dw);
          db += g;
        },
        [&](int c, float dw, float db) {
          if (p.grad_weight) p.grad_weight[c] = p.accumulate ? p.grad_weight[c] + dw : dw;
          if (kCentered && p.grad_bias) p.grad_bias[c] = p.accumulate ? p.grad_bias[c] + db : db;
        });
  }
};

}  // namespace tokenless::blocks::detail
