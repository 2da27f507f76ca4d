#pragma once
// Host reference of the backbone blocks (the norms, RoPE, the MLP
// activations), in R (double: the
// truth; float: the naive same-precision loop). `round` is what storing in
// the model's type does to a value (the identity for fp32): the residual
// add and NormThenCast's cast are rounded as the model rounds them.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

namespace tokenless::reference::blocks {

template <class R>
struct RmsNormed {
  std::vector<R> y, h, inv;
};

// h = round(residual + x) (x alone without a residual); y = w · cast(h · inv)
// with cast = round when the weight multiplies after the cast.
template <class R>
RmsNormed<R> rms_norm(const std::vector<R>& x, const std::vector<R>& residual, const std::vector<R>& w,
                      std::int64_t rows, int d, R eps, bool cast_then_scale, const std::function<R(R)>& round) {
  RmsNormed<R> o{std::vector<R>(x.size()), std::vector<R>(x.size()), std::vector<R>(rows)};
  for (std::int64_t r = 0; r < rows; ++r) {
    R ss = 0;
    for (int c = 0; c < d; ++c) {
      const R h = residual.empty() ? x[r * d + c] : round(residual[r * d + c] + x[r * d + c]);
      o.h[r * d + c] = h;
      ss += h * h;
    }
    const R inv = R(1) / std::sqrt(ss / R(d) + eps);
    o.inv[r] = inv;
    for (int c = 0; c < d; ++c) {
      const R n = o.h[r * d + c] * inv;
      o.y[r * d + c] = w[c] * (cast_then_scale ? round(n) : n);
    }
  }
  return o;
}

// dL/dh (+ dL/dh from the residual path, when given) and dL/dw.
template <class R>
std::pair<std::vector<R>, std::vector<R>> rms_norm_backward(const std::vector<R>& h, const std::vector<R>& w,
                                                            const std::vector<R>& g, const std::vector<R>& g_residual,
                                                            std::int64_t rows, int d, R eps, bool cast_then_scale,
                                                            const std::function<R(R)>& round) {
  std::vector<R> dh(h.size()), dw(d, R(0));
  for (std::int64_t r = 0; r < rows; ++r) {
    R ss = 0;
    for (int c = 0; c < d; ++c) ss += h[r * d + c] * h[r * d + c];
    const R inv = R(1) / std::sqrt(ss / R(d) + eps);
    R dot = 0;
    for (int c = 0; c < d; ++c) dot += g[r * d + c] * w[c] * h[r * d + c] * inv;
    for (int c = 0; c < d; ++c) {
      const R n = h[r * d + c] * inv;
      dh[r * d + c] = inv * (g[r * d + c] * w[c] - n * dot / R(d)) + (g_residual.empty() ? R(0) : g_residual[r * d + c]);
      dw[c] += g[r * d + c] * (cast_then_scale ? round(n) : n);
    }
  }
  return {dh, dw};
}

// LayerNorm: h as rms_norm's; y = (h - mean) · inv · w + b (b may be empty).
template <class R>
struct LayerNormed {
  std::vector<R> y, h, mean, inv;
};
template <class R>
LayerNormed<R> layer_norm(const std::vector<R>& x, const std::vector<R>& residual, const std::vector<R>& w,
                          const std::vector<R>& b, std::int64_t rows, int d, R eps, const std::function<R(R)>& round) {
  LayerNormed<R> o{std::vector<R>(x.size()), std::vector<R>(x.size()), std::vector<R>(rows), std::vector<R>(rows)};
  for (std::int64_t r = 0; r < rows; ++r) {
    R sum = 0;
    for (int c = 0; c < d; ++c) {
      const R h = residual.empty() ? x[r * d + c] : round(residual[r * d + c] + x[r * d + c]);
      o.h[r * d + c] = h;
      sum += h;
    }
    const R mu = sum / R(d);
    R ss = 0;
    for (int c = 0; c < d; ++c) ss += (o.h[r * d + c] - mu) * (o.h[r * d + c] - mu);
    const R inv = R(1) / std::sqrt(ss / R(d) + eps);
    o.mean[r] = mu;
    o.inv[r] = inv;
    for (int c = 0; c < d; ++c) o.y[r * d + c] = (o.h[r * d + c] - mu) * inv * w[c] + (b.empty() ? R(0) : b[c]);
  }
  return o;
}

// dL/dh (+ the residual path's), dL/dw, dL/db.
template <class R>
struct LayerNormGrads {
  std::vector<R> dh, dw, db;
};
template <class R>
LayerNormGrads<R> layer_norm_backward(const std::vector<R>& h, const std::vector<R>& w, const std::vector<R>& g,
                                      const std::vector<R>& g_residual, std::int64_t rows, int d, R eps) {
  LayerNormGrads<R> o{std::vector<R>(h.size()), std::vector<R>(d, R(0)), std::vector<R>(d, R(0))};
  for (std::int64_t r = 0; r < rows; ++r) {
    R sum = 0;
    for (int c = 0; c < d; ++c) sum += h[r * d + c];
    const R mu = sum / R(d);
    R ss = 0;
    for (int c = 0; c < d; ++c) ss += (h[r * d + c] - mu) * (h[r * d + c] - mu);
    const R inv = R(1) / std::sqrt(ss / R(d) + eps);
    R mean_dn = 0, mean_dot = 0;
    for (int c = 0; c < d; ++c) {
      const R dn = g[r * d + c] * w[c];
      mean_dn += dn / R(d);
      mean_dot += dn * (h[r * d + c] - mu) * inv / R(d);
    }
    for (int c = 0; c < d; ++c) {
      const R n = (h[r * d + c] - mu) * inv;
      o.dh[r * d + c] = inv * (g[r * d + c] * w[c] - mean_dn - n * mean_dot) +
                        (g_residual.empty() ? R(0) : g_residual[r * d + c]);
      o.dw[c] += g[r * d + c] * n;
      o.db[c] += g[r * d + c];
    }
  }
  return o;
}

// RoPE on x [tokens, heads, head_dim] in place: the pair (first, second) of
// index i turned by sign · angle, angle = float(pos) · inv_freq[i] (the fp32
// product, as transformers'), cos and sin in R.
template <class R>
void rope(std::vector<R>& x, std::int64_t tokens, int heads, int head_dim, int rot_dim, bool interleaved,
          const std::vector<std::int64_t>& positions, const std::vector<float>& inv_freq, int sign) {
  for (std::int64_t t = 0; t < tokens; ++t) {
    for (int i = 0; i < rot_dim / 2; ++i) {
      const float angle = static_cast<float>(positions[t]) * inv_freq[i];
      const R c = std::cos(R(angle)), s = R(sign) * std::sin(R(angle));
      const int f = interleaved ? 2 * i : i, e = interleaved ? 2 * i + 1 : i + rot_dim / 2;
      for (int h = 0; h < heads; ++h) {
        R* row = x.data() + (t * heads + h) * head_dim;
        const R a = row[f], b = row[e];
        row[f] = a * c - b * s;
        row[e] = a * s + b * c;
      }
    }
  }
}

// The activations and their derivatives, in R.
template <class R>
R silu(R x) { return x / (R(1) + std::exp(-x)); }
template <class R>
R silu_derivative(R x) {
  const R s = R(1) / (R(1) + std::exp(-x));
  return s * (R(1) + x * (R(1) - s));
}
template <class R>
R gelu_tanh(R x) {
  const R k = R(0.7978845608028654), a = R(0.044715);
  return R(0.5) * x * (R(1) + std::tanh(k * (x + a * x * x * x)));
}
template <class R>
R gelu_tanh_derivative(R x) {
  const R k = R(0.7978845608028654), a = R(0.044715);
  const R t = std::tanh(k * (x + a * x * x * x));
  return R(0.5) * (R(1) + t) + R(0.5) * x * (R(1) - t * t) * k * (R(1) + R(3) * a * x * x);
}

// ------------------------------------------------------------------ MoE

// C[rows of g] = A[rows of g] · B[g]ᵀ, B[g] = [n, k] at b + g·n·k; the groups
// by offsets[G + 1]. `round` is what storing C does.
template <class R>
std::vector<R> grouped_gemm(const std::vector<R>& a, const std::vector<R>& b, const std::vector<std::int32_t>& offsets,
                            int n, int k, const std::function<R(R)>& round) {
  const std::int64_t m = offsets.back();
  std::vector<R> c(static_cast<std::size_t>(m * n));
  for (std::size_t g = 0; g + 1 < offsets.size(); ++g) {
    for (std::int64_t r = offsets[g]; r < offsets[g + 1]; ++r) {
      for (int j = 0; j < n; ++j) {
        R acc = 0;
        for (int i = 0; i < k; ++i) acc += a[r * k + i] * b[(g * n + j) * k + i];
        c[r * n + j] = round(acc);
      }
    }
  }
  return c;
}

// The softmax of one row of E logits.
template <class R>
std::vector<R> softmax_row(const R* logits, int experts) {
  R mx = logits[0];
  for (int e = 1; e < experts; ++e) mx = std::max(mx, logits[e]);
  std::vector<R> p(static_cast<std::size_t>(experts));
  R sum = 0;
  for (int e = 0; e < experts; ++e) sum += p[e] = std::exp(logits[e] - mx);
  for (int e = 0; e < experts; ++e) p[e] /= sum;
  return p;
}

// The router: softmax of each row of logits [tokens, E], the top k by
// probability (the lower expert first on ties), renormalised when asked.
template <class R>
void moe_route(const std::vector<R>& logits, std::int64_t tokens, int experts, int k, bool renormalize,
               std::vector<int>& expert, std::vector<R>& weight) {
  expert.assign(static_cast<std::size_t>(tokens * k), 0);
  weight.assign(static_cast<std::size_t>(tokens * k), R(0));
  for (std::int64_t t = 0; t < tokens; ++t) {
    const std::vector<R> p = softmax_row(logits.data() + t * experts, experts);
    std::vector<bool> taken(static_cast<std::size_t>(experts), false);
    R total = 0;
    for (int s = 0; s < k; ++s) {
      int best = -1;
      for (int e = 0; e < experts; ++e) {
        if (!taken[e] && (best < 0 || p[e] > p[best])) best = e;
      }
      taken[best] = true;
      expert[t * k + s] = best;
      weight[t * k + s] = p[best];
      total += p[best];
    }
    if (renormalize) {
      for (int s = 0; s < k; ++s) weight[t * k + s] /= total;
    }
  }
}

// The experts and the combine, given the routing: out[t] = Σ_s w[t, s] ·
// down_e(act(gate_e(x)) · up_e(x)), gate_up [E, 2F, d] (gate rows first),
// down [E, d, F]. `round` is applied where the kernel stores: h, act, y, out.
template <class R>
std::vector<R> moe_experts(const std::vector<R>& x, std::int64_t tokens, int d, const std::vector<R>& gate_up,
                           const std::vector<R>& down, int ffn, const std::vector<int>& expert,
                           const std::vector<R>& weight, int k, const std::function<R(R)>& act,
                           const std::function<R(R)>& round) {
  std::vector<R> out(static_cast<std::size_t>(tokens * d));
  std::vector<R> h(static_cast<std::size_t>(2 * ffn)), a(static_cast<std::size_t>(ffn));
  std::vector<R> acc(static_cast<std::size_t>(d));
  for (std::int64_t t = 0; t < tokens; ++t) {
    std::fill(acc.begin(), acc.end(), R(0));
    for (int s = 0; s < k; ++s) {
      const std::int64_t e = expert[t * k + s];
      for (int j = 0; j < 2 * ffn; ++j) {
        R v = 0;
        for (int i = 0; i < d; ++i) v += x[t * d + i] * gate_up[(e * 2 * ffn + j) * d + i];
        h[j] = round(v);
      }
      for (int j = 0; j < ffn; ++j) a[j] = round(act(h[j]) * h[ffn + j]);
      for (int j = 0; j < d; ++j) {
        R v = 0;
        for (int i = 0; i < ffn; ++i) v += a[i] * down[(e * d + j) * ffn + i];
        acc[j] += weight[t * k + s] * round(v);
      }
    }
    for (int j = 0; j < d; ++j) out[t * d + j] = round(acc[j]);
  }
  return out;
}

// transformers' load_balancing_loss_func for Mixtral (no attention mask):
// E · Σ_e (rows that picked e / rows) · (Σ_rows p_e / rows).
template <class R>
R moe_balance_loss(const std::vector<R>& logits, std::int64_t rows, int experts, int k) {
  std::vector<int> expert;
  std::vector<R> weight;
  moe_route<R>(logits, rows, experts, k, false, expert, weight);
  std::vector<R> prob(static_cast<std::size_t>(experts), R(0)), count(static_cast<std::size_t>(experts), R(0));
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::vector<R> p = softmax_row(logits.data() + r * experts, experts);
    for (int e = 0; e < experts; ++e) prob[e] += p[e];
    for (int s = 0; s < k; ++s) count[expert[r * k + s]] += R(1);
  }
  R loss = 0;
  for (int e = 0; e < experts; ++e) loss += (count[e] / R(rows)) * (prob[e] / R(rows));
  return loss * R(experts);
}

// The MoE block's backward given its routing (moe_route's experts and
// weights from `logits`): dL/dx, and the fp32 gradients of the router,
// gate_up and down. `round` is applied where the kernel stores in T (dy,
// dact, dh, the per-slot dL/dx, dlogits, dL/dx); the balance loss adds
// coef · fraction[e] to dL/dp (coef = scale · E / rows) when fraction is
// not empty.
template <class R>
struct MoeGrads {
  std::vector<R> dx, d_router, d_gate_up, d_down;
};
template <class R>
MoeGrads<R> moe_backward(const std::vector<R>& x, std::int64_t tokens, int d, const std::vector<R>& logits,
                         const std::vector<R>& router, const std::vector<R>& gate_up, const std::vector<R>& down,
                         int experts, int ffn, const std::vector<int>& expert, const std::vector<R>& weight, int k,
                         bool renormalize, const std::vector<R>& grad_out, const std::vector<R>& fraction, R coef,
                         const std::function<R(R)>& act, const std::function<R(R)>& act_d,
                         const std::function<R(R)>& round) {
  MoeGrads<R> g{std::vector<R>(x.size(), R(0)), std::vector<R>(router.size(), R(0)),
                std::vector<R>(gate_up.size(), R(0)), std::vector<R>(down.size(), R(0))};
  std::vector<R> h(static_cast<std::size_t>(2 * ffn)), a(static_cast<std::size_t>(ffn)), y(static_cast<std::size_t>(d));
  std::vector<R> dy(static_cast<std::size_t>(d)), da(static_cast<std::size_t>(ffn)), dh(static_cast<std::size_t>(2 * ffn));
  std::vector<R> dxs(static_cast<std::size_t>(d)), dw(static_cast<std::size_t>(k));
  for (std::int64_t t = 0; t < tokens; ++t) {
    std::vector<R> dx_experts(static_cast<std::size_t>(d), R(0));
    for (int s = 0; s < k; ++s) {
      const std::int64_t e = expert[t * k + s];
      for (int j = 0; j < 2 * ffn; ++j) {
        R v = 0;
        for (int i = 0; i < d; ++i) v += x[t * d + i] * gate_up[(e * 2 * ffn + j) * d + i];
        h[j] = round(v);
      }
      for (int j = 0; j < ffn; ++j) a[j] = round(act(h[j]) * h[ffn + j]);
      R dot = 0;
      for (int j = 0; j < d; ++j) {
        R v = 0;
        for (int i = 0; i < ffn; ++i) v += a[i] * down[(e * d + j) * ffn + i];
        y[j] = round(v);
        dot += grad_out[t * d + j] * y[j];
        dy[j] = round(weight[t * k + s] * grad_out[t * d + j]);
      }
      dw[s] = dot;
      for (int i = 0; i < ffn; ++i) {
        R v = 0;
        for (int j = 0; j < d; ++j) {
          v += dy[j] * down[(e * d + j) * ffn + i];
          g.d_down[(e * d + j) * ffn + i] += dy[j] * a[i];
        }
        da[i] = round(v);
      }
      for (int i = 0; i < ffn; ++i) {
        dh[i] = round(da[i] * h[ffn + i] * act_d(h[i]));
        dh[ffn + i] = round(da[i] * act(h[i]));
      }
      for (int i = 0; i < d; ++i) {
        R v = 0;
        for (int j = 0; j < 2 * ffn; ++j) {
          v += dh[j] * gate_up[(e * 2 * ffn + j) * d + i];
          g.d_gate_up[(e * 2 * ffn + j) * d + i] += dh[j] * x[t * d + i];
        }
        dx_experts[i] += round(v);
      }
    }
    // The router.
    const std::vector<R> p = softmax_row(logits.data() + t * experts, experts);
    std::vector<R> dp(static_cast<std::size_t>(experts), R(0));
    for (int e = 0; e < experts; ++e) {
      if (!fraction.empty()) dp[e] = coef * fraction[e];
    }
    R dww = 0, psum = 0;
    for (int s = 0; s < k; ++s) {
      dww += dw[s] * weight[t * k + s];
      psum += p[expert[t * k + s]];
    }
    for (int s = 0; s < k; ++s) dp[expert[t * k + s]] += renormalize ? (dw[s] - dww) / psum : dw[s];
    R pdp = 0;
    for (int e = 0; e < experts; ++e) pdp += p[e] * dp[e];
    std::vector<R> dl(static_cast<std::size_t>(experts));
    for (int e = 0; e < experts; ++e) dl[e] = round(p[e] * (dp[e] - pdp));
    for (int i = 0; i < d; ++i) {
      R v = 0;
      for (int e = 0; e < experts; ++e) {
        v += dl[e] * router[e * d + i];
        g.d_router[e * d + i] += dl[e] * x[t * d + i];
      }
      g.dx[t * d + i] = round(round(dx_experts[i]) + v);
    }
  }
  return g;
}

}  // namespace tokenless::reference::blocks
