#pragma once
// The host trainers' shared pieces (llama_train_host.hpp, blt_train_host.hpp):
// RMSNorm with its inverse RMS kept and its backward, and causal
// self-attention, forward and backward, as matrix products: S = scale
// Q Kᵀ (host::gemm_nt), the masked softmax (its log-sum-exp kept), O = P V;
// the backward remakes P from the log-sum-exp (as FlashAttention does: no
// n × n matrix is kept between them), dV = Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP −
// rowsum(dO ∘ O)), dQ = scale dS K, dK = scale dSᵀ Q; GQA sums a kv head's
// group in head order (deterministic).
//
// `seqs` sequences of n rows each, one after another; q, k and v are row
// slices of a fused [seqs · n, ld] buffer (q at column 0, k at q_dim, v at
// q_dim + kv_dim, as the models' qkv projections write them). Query i of a
// sequence sees keys [max(0, i − window + 1), i] (window 0: all before it).
// The (sequence, head) pairs are split over the pool, each pair's products
// on its thread. fp32; the scale is head_dim**-0.5 rounded to fp32.
#include <tokenless/core/host_blas.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace tokenless::models {

// transformers' RMSNorm in fp32: y = w · (x · inv), inv = rsqrt(mean(x²) + eps) kept.
inline void host_rms_norm(const float* x, std::int64_t rows, int D, const float* w, float eps, float* y, float* inv) {
  host::pool().parallel_for(rows, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t t = lo; t < hi; ++t) {
      const float* xr = x + t * D;
      float ss = 0;
      for (int i = 0; i < D; ++i) ss += xr[i] * xr[i];
      const float r = 1.0f / std::sqrt(ss / static_cast<float>(D) + eps);
      inv[t] = r;
      for (int i = 0; i < D; ++i) y[t * D + i] = w[i] * (xr[i] * r);
    }
  });
}

// Its backward: dx += ∂/∂x, dw += ∂/∂w, given dy. The rows are split over
// the pool; dw's sum over rows is serial, in row order (deterministic).
inline void host_rms_norm_backward(const float* x, std::int64_t rows, int D, const float* w, const float* inv,
                                   const float* dy, float* dx, float* dw) {
  host::pool().parallel_for(rows, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t t = lo; t < hi; ++t) {
      const float* xr = x + t * D;
      const float* g = dy + t * D;
      const float r = inv[t];
      float dot = 0;  // Σ (dy·w)·x̂
      for (int i = 0; i < D; ++i) dot += g[i] * w[i] * xr[i] * r;
      const float m = dot / static_cast<float>(D);
      for (int i = 0; i < D; ++i) dx[t * D + i] += r * (g[i] * w[i] - xr[i] * r * m);
    }
  });
  for (std::int64_t t = 0; t < rows; ++t) {
    for (int i = 0; i < D; ++i) dw[i] += dy[t * D + i] * x[t * D + i] * inv[t];
  }
}

struct HostCausalAttention {
  int heads = 0, kv_heads = 0, head_dim = 0;
  int window = 0;  // 0: causal over the whole sequence

  std::int64_t q_dim() const { return std::int64_t{heads} * head_dim; }
  std::int64_t kv_dim() const { return std::int64_t{kv_heads} * head_dim; }
  std::int64_t key_lo(std::int64_t i) const { return window > 0 ? std::max<std::int64_t>(0, i - window + 1) : 0; }
  float scale() const { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim))); }

  // o [seqs · n, q_dim] (row stride ldo), lse [seqs · n, heads].
  void forward(const float* qkv, std::int64_t ld, std::int64_t seqs, std::int64_t n, float* o, std::int64_t ldo,
               float* lse) const {
    const int hd = head_dim, H = heads, group = heads / kv_heads;
    const std::int64_t qd = q_dim(), kvd = kv_dim();
    const float sc = scale();
    host::pool().parallel_for(seqs * H, [&](std::int64_t lo, std::int64_t hi) {
      std::vector<float> p(static_cast<std::size_t>(n * n));
      for (std::int64_t pair = lo; pair < hi; ++pair) {
        const std::int64_t r0 = (pair / H) * n;
        const int h = static_cast<int>(pair % H);
        const float* q = qkv + r0 * ld + h * hd;
        const float* k = qkv + r0 * ld + qd + (h / group) * hd;
        const float* v = k + kvd;
        host::gemm_nt(n, n, hd, q, ld, k, ld, p.data(), n);
        for (std::int64_t i = 0; i < n; ++i) {
          float* row = p.data() + i * n;
          const std::int64_t a = key_lo(i);
          float mx = -INFINITY;
          for (std::int64_t j = a; j <= i; ++j) mx = std::max(mx, row[j] *= sc);
          float sum = 0;
          for (std::int64_t j = a; j <= i; ++j) sum += row[j] = std::exp(row[j] - mx);
          const float inv = 1.0f / sum;
          for (std::int64_t j = 0; j < n; ++j) row[j] = j >= a && j <= i ? row[j] * inv : 0.0f;
          lse[(r0 + i) * H + h] = mx + std::log(sum);
        }
        host::gemm_nn(n, hd, n, p.data(), n, v, ld, o + r0 * ldo + h * hd, ldo);
      }
    });
  }

  // d_qkv (the same layout as qkv, row stride ld): dq, dk and dv written.
  void backward(const float* qkv, std::int64_t ld, std::int64_t seqs, std::int64_t n, const float* o, const float* d_o,
                std::int64_t ldo, const float* lse, float* d_qkv) const {
    const int hd = head_dim, H = heads, KV = kv_heads, group = heads / kv_heads;
    const std::int64_t qd = q_dim(), kvd = kv_dim();
    const float sc = scale();
    host::pool().parallel_for(seqs * KV, [&](std::int64_t lo, std::int64_t hi) {
      std::vector<float> pm(static_cast<std::size_t>(n * n)), dpm(pm.size());
      for (std::int64_t pair = lo; pair < hi; ++pair) {
        const std::int64_t r0 = (pair / KV) * n;
        const int kvh = static_cast<int>(pair % KV);
        for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
          const float* q = qkv + r0 * ld + h * hd;
          const float* k = qkv + r0 * ld + qd + kvh * hd;
          const float* v = k + kvd;
          const float* oh = o + r0 * ldo + h * hd;
          const float* dout = d_o + r0 * ldo + h * hd;
          float* dq = d_qkv + r0 * ld + h * hd;
          float* dk = d_qkv + r0 * ld + qd + kvh * hd;
          float* dv = dk + kvd;
          const bool first = h == kvh * group;  // a kv head's first query head writes, the rest add
          host::gemm_nt(n, n, hd, q, ld, k, ld, pm.data(), n);
          host::gemm_nt(n, n, hd, dout, ldo, v, ld, dpm.data(), n);
          for (std::int64_t i = 0; i < n; ++i) {
            float* row = pm.data() + i * n;
            float* drow = dpm.data() + i * n;
            const std::int64_t a = key_lo(i);
            const float l = lse[(r0 + i) * H + h];
            float di = 0;
            for (int e = 0; e < hd; ++e) di += dout[i * ldo + e] * oh[i * ldo + e];
            for (std::int64_t j = 0; j < n; ++j) {
              if (j >= a && j <= i) {
                const float pj = std::exp(row[j] * sc - l);
                row[j] = pj;
                drow[j] = pj * (drow[j] - di) * sc;
              } else {
                row[j] = 0.0f;
                drow[j] = 0.0f;
              }
            }
          }
          host::gemm_tn(n, hd, n, pm.data(), n, dout, ldo, dv, ld, !first);
          host::gemm_nn(n, hd, n, dpm.data(), n, k, ld, dq, ld);
          host::gemm_tn(n, hd, n, dpm.data(), n, q, ld, dk, ld, !first);
        }
      }
    });
  }
};

}  // namespace tokenless::models
