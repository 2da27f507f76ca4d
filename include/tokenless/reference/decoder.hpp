#pragma once
// Host reference of blocks::DecoderLayer's training forward and backward
// (a dense SwiGLU layer: Llama 3, Mistral, Phi-3), in double, composed from
// the blocks' and the attention core's references. `round` is applied where
// the kernels store a tensor in the storage type (identity: the truth; a
// 16-bit type's rounding: the naive same-precision implementation the tests
// measure the kernels against). Weight gradients are never rounded (the
// kernels keep them in fp32).
//
// Layouts as the layer's: x, delta [tokens, hidden]; wqkv [(H + 2 KV) hd,
// hidden] (q, k, v rows stacked); wo [hidden, H hd]; w_gate_up [2F, hidden]
// (gate rows first); w_down [hidden, F]. Sequences by cu (prefix sums);
// positions restart at 0 in each, and attention is causal within it (with a
// window of W keys, the query's own included, when window > 0).
#include <tokenless/reference/attention.hpp>
#include <tokenless/reference/blocks.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

namespace tokenless::reference::decoder {

using Round = std::function<double(double)>;
using Vec = std::vector<double>;

struct Shape {
  std::vector<std::int32_t> cu;  // the sequences' prefix sums
  int hidden = 0, heads = 0, kv_heads = 0, head_dim = 0, rot_dim = 0, ffn = 0, window = 0;
  double eps = 1e-5;
  std::int64_t tokens() const { return cu.back(); }
  int q_dim() const { return heads * head_dim; }
  int kv_dim() const { return kv_heads * head_dim; }
  int qkv_dim() const { return q_dim() + 2 * kv_dim(); }
  int rot() const { return rot_dim ? rot_dim : head_dim; }
};

struct Weights {
  Vec attn_norm, wqkv, wo, mlp_norm, w_gate_up, w_down;
};

// The forward's tensors (what the kernels save), and its outputs mid + delta.
struct Forward {
  Vec h0, h1, q, k, v, o, mid, h2, gu, act, delta;
};

struct Grads {
  Vec grad_in, attn_norm, wqkv, wo, mlp_norm, w_gate_up, w_down;
};

namespace detail {
// y [n, rows] = x [n, cols] · wᵀ (w [rows, cols]).
inline Vec linear(const Vec& x, const Vec& w, std::int64_t n, int rows, int cols, const Round& round) {
  Vec y(static_cast<std::size_t>(n * rows));
  for (std::int64_t t = 0; t < n; ++t) {
    for (int r = 0; r < rows; ++r) {
      double acc = 0;
      for (int c = 0; c < cols; ++c) acc += x[t * cols + c] * w[static_cast<std::size_t>(r) * cols + c];
      y[t * rows + r] = round(acc);
    }
  }
  return y;
}
// dx [n, cols] = dy [n, rows] · w; dw [rows, cols] += dyᵀ · x.
inline Vec linear_dx(const Vec& dy, const Vec& w, std::int64_t n, int rows, int cols, const Round& round) {
  Vec dx(static_cast<std::size_t>(n * cols));
  for (std::int64_t t = 0; t < n; ++t) {
    for (int c = 0; c < cols; ++c) {
      double acc = 0;
      for (int r = 0; r < rows; ++r) acc += dy[t * rows + r] * w[static_cast<std::size_t>(r) * cols + c];
      dx[t * cols + c] = round(acc);
    }
  }
  return dx;
}
inline Vec linear_dw(const Vec& dy, const Vec& x, std::int64_t n, int rows, int cols) {
  Vec dw(static_cast<std::size_t>(rows) * cols, 0.0);
  for (std::int64_t t = 0; t < n; ++t) {
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c) dw[static_cast<std::size_t>(r) * cols + c] += dy[t * rows + r] * x[t * cols + c];
    }
  }
  return dw;
}
inline std::vector<std::int64_t> positions(const Shape& s) {
  std::vector<std::int64_t> p(static_cast<std::size_t>(s.tokens()));
  for (std::size_t b = 0; b + 1 < s.cu.size(); ++b) {
    for (std::int32_t t = s.cu[b]; t < s.cu[b + 1]; ++t) p[t] = t - s.cu[b];
  }
  return p;
}
inline attention::Shape attention_shape(const Shape& s) {
  attention::Shape a;
  a.cu_q = a.cu_k = s.cu;
  a.heads = s.heads;
  a.kv_heads = s.kv_heads;
  a.d = s.head_dim;
  a.scale = static_cast<double>(static_cast<float>(1.0 / std::sqrt(static_cast<double>(s.head_dim))));
  return a;
}
inline attention::Mask mask(const Shape& s) {
  const int w = s.window;
  return [w](std::int64_t, int i, int j) { return j <= i && (w <= 0 || j > i - w); };
}
inline Vec rounded(Vec v, const Round& round) {
  for (double& x : v) x = round(x);
  return v;
}
}  // namespace detail

// x: the stream into the layer, delta_in: the previous layer's MLP output
// (empty when the layer is the first).
inline Forward forward(const Shape& s, const Weights& w, const std::vector<float>& inv_freq, const Vec& x,
                       const Vec& delta_in, const Round& round) {
  using namespace detail;
  const std::int64_t n = s.tokens();
  const int d = s.hidden, F = s.ffn;
  Forward f;
  const std::function<double(double)> r = round;
  auto n1 = blocks::rms_norm<double>(delta_in.empty() ? x : delta_in, delta_in.empty() ? Vec{} : x, w.attn_norm, n, d,
                                     s.eps, true, r);
  f.h0 = n1.h;
  f.h1 = rounded(n1.y, round);
  const Vec qkv = linear(f.h1, w.wqkv, n, s.qkv_dim(), d, round);
  f.q.resize(static_cast<std::size_t>(n * s.q_dim()));
  f.k.resize(static_cast<std::size_t>(n * s.kv_dim()));
  f.v.resize(static_cast<std::size_t>(n * s.kv_dim()));
  for (std::int64_t t = 0; t < n; ++t) {
    const double* row = qkv.data() + t * s.qkv_dim();
    std::copy(row, row + s.q_dim(), f.q.begin() + t * s.q_dim());
    std::copy(row + s.q_dim(), row + s.q_dim() + s.kv_dim(), f.k.begin() + t * s.kv_dim());
    std::copy(row + s.q_dim() + s.kv_dim(), row + s.qkv_dim(), f.v.begin() + t * s.kv_dim());
  }
  const auto pos = positions(s);
  blocks::rope<double>(f.q, n, s.heads, s.head_dim, s.rot(), false, pos, inv_freq, 1);
  blocks::rope<double>(f.k, n, s.kv_heads, s.head_dim, s.rot(), false, pos, inv_freq, 1);
  f.q = rounded(f.q, round);
  f.k = rounded(f.k, round);
  Vec lse;
  attention::forward(attention_shape(s), mask(s), f.q, f.k, f.v, f.o, lse, round);
  f.o = rounded(f.o, round);
  const Vec attn = linear(f.o, w.wo, n, d, s.q_dim(), round);
  auto n2 = blocks::rms_norm<double>(attn, f.h0, w.mlp_norm, n, d, s.eps, true, r);
  f.mid = n2.h;
  f.h2 = rounded(n2.y, round);
  f.gu = linear(f.h2, w.w_gate_up, n, 2 * F, d, round);
  f.act.resize(static_cast<std::size_t>(n * F));
  for (std::int64_t t = 0; t < n; ++t) {
    for (int i = 0; i < F; ++i) {
      f.act[t * F + i] = round(blocks::silu(f.gu[t * 2 * F + i]) * f.gu[t * 2 * F + F + i]);
    }
  }
  f.delta = linear(f.act, w.w_down, n, d, F, round);
  return f;
}

// g: dL/d(the output stream, mid + delta).
inline Grads backward(const Shape& s, const Weights& w, const std::vector<float>& inv_freq, const Forward& f,
                      const Vec& g, const Round& round) {
  using namespace detail;
  const std::int64_t n = s.tokens();
  const int d = s.hidden, F = s.ffn;
  const std::function<double(double)> r = round;
  Grads o;
  // The MLP.
  const Vec d_act = linear_dx(g, w.w_down, n, d, F, round);
  o.w_down = linear_dw(g, f.act, n, d, F);
  Vec d_gu(static_cast<std::size_t>(n * 2 * F));
  for (std::int64_t t = 0; t < n; ++t) {
    for (int i = 0; i < F; ++i) {
      const double gate = f.gu[t * 2 * F + i], up = f.gu[t * 2 * F + F + i], da = d_act[t * F + i];
      d_gu[t * 2 * F + i] = round(da * up * blocks::silu_derivative(gate));
      d_gu[t * 2 * F + F + i] = round(da * blocks::silu(gate));
    }
  }
  const Vec d_h2 = linear_dx(d_gu, w.w_gate_up, n, 2 * F, d, round);
  o.w_gate_up = linear_dw(d_gu, f.h2, n, 2 * F, d);
  auto b2 = blocks::rms_norm_backward<double>(f.mid, w.mlp_norm, d_h2, g, n, d, s.eps, true, r);
  const Vec d_mid = rounded(b2.first, round);
  o.mlp_norm = b2.second;
  // The attention.
  const Vec d_o = linear_dx(d_mid, w.wo, n, d, s.q_dim(), round);
  o.wo = linear_dw(d_mid, f.o, n, d, s.q_dim());
  Vec dq, dk, dv;
  attention::backward(attention_shape(s), mask(s), f.q, f.k, f.v, d_o, dq, dk, dv, round);
  const auto pos = positions(s);
  blocks::rope<double>(dq, n, s.heads, s.head_dim, s.rot(), false, pos, inv_freq, -1);
  blocks::rope<double>(dk, n, s.kv_heads, s.head_dim, s.rot(), false, pos, inv_freq, -1);
  Vec d_qkv(static_cast<std::size_t>(n * s.qkv_dim()));
  for (std::int64_t t = 0; t < n; ++t) {
    double* row = d_qkv.data() + t * s.qkv_dim();
    for (int c = 0; c < s.q_dim(); ++c) row[c] = round(dq[t * s.q_dim() + c]);
    for (int c = 0; c < s.kv_dim(); ++c) {
      row[s.q_dim() + c] = round(dk[t * s.kv_dim() + c]);
      row[s.q_dim() + s.kv_dim() + c] = round(dv[t * s.kv_dim() + c]);
    }
  }
  const Vec d_h1 = linear_dx(d_qkv, w.wqkv, n, s.qkv_dim(), d, round);
  o.wqkv = linear_dw(d_qkv, f.h1, n, s.qkv_dim(), d);
  auto b1 = blocks::rms_norm_backward<double>(f.h0, w.attn_norm, d_h1, d_mid, n, d, s.eps, true, r);
  o.grad_in = rounded(b1.first, round);
  o.attn_norm = b1.second;
  return o;
}

}  // namespace tokenless::reference::decoder
