#pragma once
// Host reference of the prediction heads (heads/policy.hpp has the
// semantics), in R: double for the truth, float for the naive same-precision
// loop. The logits are formed whole here (the reference need not save
// memory). `round_dz` is what storing dz in the kernels' GEMM type does.
#include <tokenless/heads/policy.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

namespace tokenless::reference::heads {

using tokenless::heads::CrossEntropyOptions;
using tokenless::heads::Reduction;

template <class R>
struct CrossEntropyResult {
  std::vector<R> loss_tok, z_tok, lse, logprob;  // per token (0 where ignored, lse always)
  R loss = 0, z_loss = 0;                          // reduced (mean, sum); unused with none
  R weight_sum = 0;                                // Σ w over the tokens not ignored
};

template <class R>
std::vector<R> logits(const std::vector<R>& h, const std::vector<R>& w, const std::vector<R>& bias, std::int64_t n,
                      std::int64_t vocab, int d) {
  std::vector<R> z(static_cast<std::size_t>(n * vocab));
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = 0; j < vocab; ++j) {
      R acc = bias.empty() ? R(0) : bias[j];
      R dot = 0;
      for (int k = 0; k < d; ++k) dot += h[i * d + k] * w[j * d + k];
      z[i * vocab + j] = acc + dot;
    }
  }
  return z;
}

template <class R>
CrossEntropyResult<R> linear_cross_entropy(const std::vector<R>& h, const std::vector<R>& w, const std::vector<R>& bias,
                                           const std::vector<std::int32_t>& labels, const std::vector<R>& weights,
                                           std::int64_t n, std::int64_t vocab, int d, const CrossEntropyOptions& o) {
  const std::vector<R> z = logits(h, w, bias, n, vocab, d);
  CrossEntropyResult<R> r;
  r.loss_tok.assign(static_cast<std::size_t>(n), R(0));
  r.z_tok.assign(static_cast<std::size_t>(n), R(0));
  r.lse.assign(static_cast<std::size_t>(n), R(0));
  r.logprob.assign(static_cast<std::size_t>(n), R(0));
  for (std::int64_t i = 0; i < n; ++i) {
    const R* row = z.data() + i * vocab;
    R mx = -std::numeric_limits<R>::infinity(), sum_z = 0;
    for (std::int64_t j = 0; j < vocab; ++j) {
      mx = std::max(mx, row[j]);
      sum_z += row[j];
    }
    R s = 0;
    for (std::int64_t j = 0; j < vocab; ++j) s += std::exp(row[j] - mx);
    const R lse = mx + std::log(s);
    r.lse[i] = lse;
    if (labels[i] == o.ignore_index) continue;
    const R zy = row[labels[i]];
    const R wi = weights.empty() ? R(1) : weights[i];
    const R eps = o.label_smoothing;
    const R ce = (R(1) - eps) * (lse - zy) + eps * (lse - sum_z / R(vocab));
    const R zl = R(o.z_loss) * lse * lse;
    r.logprob[i] = zy - lse;
    r.loss_tok[i] = wi * (ce + zl);
    r.z_tok[i] = wi * zl;
    r.weight_sum += wi;
    r.loss += r.loss_tok[i];
    r.z_loss += r.z_tok[i];
  }
  if (o.reduction == Reduction::mean) {
    r.loss /= r.weight_sum;
    r.z_loss /= r.weight_sum;
  }
  return r;
}

template <class R>
struct CrossEntropyGrads {
  std::vector<R> dh, dw, db;
};

// grad: dL/dloss, one value (mean, sum) or one a token (none).
template <class R>
CrossEntropyGrads<R> linear_cross_entropy_backward(const std::vector<R>& h, const std::vector<R>& w,
                                                   const std::vector<R>& bias, const std::vector<std::int32_t>& labels,
                                                   const std::vector<R>& weights, std::int64_t n, std::int64_t vocab,
                                                   int d, const CrossEntropyOptions& o, const std::vector<R>& grad,
                                                   const std::function<R(R)>& round_dz) {
  const std::vector<R> z = logits(h, w, bias, n, vocab, d);
  const CrossEntropyResult<R> f = linear_cross_entropy(h, w, bias, labels, weights, n, vocab, d, o);
  CrossEntropyGrads<R> g{std::vector<R>(h.size(), R(0)), std::vector<R>(w.size(), R(0)),
                         std::vector<R>(static_cast<std::size_t>(vocab), R(0))};
  std::vector<R> dz(static_cast<std::size_t>(vocab));
  for (std::int64_t i = 0; i < n; ++i) {
    if (labels[i] == o.ignore_index) continue;
    R s = (o.reduction == Reduction::none ? grad[i] : grad[0]) * (weights.empty() ? R(1) : weights[i]);
    if (o.reduction == Reduction::mean) s /= f.weight_sum;
    const R lse = f.lse[i];
    for (std::int64_t j = 0; j < vocab; ++j) {
      const R p = std::exp(z[i * vocab + j] - lse);
      const R target = (j == labels[i] ? R(1) - R(o.label_smoothing) : R(0)) + R(o.label_smoothing) / R(vocab);
      dz[j] = round_dz(s * (p * (R(1) + R(2) * R(o.z_loss) * lse) - target));
    }
    for (std::int64_t j = 0; j < vocab; ++j) {
      g.db[j] += dz[j];
      for (int k = 0; k < d; ++k) {
        g.dh[i * d + k] += dz[j] * w[j * d + k];
        g.dw[j * d + k] += dz[j] * h[i * d + k];
      }
    }
  }
  return g;
}

// dz of a cross-entropy over given logits [n, vocab] (unrounded; 0 where
// ignored): the linear cross-entropy's rule, which the byte head writes.
template <class R>
std::vector<R> cross_entropy_grad_logits(const std::vector<R>& z, const std::vector<std::int32_t>& labels,
                                         const std::vector<R>& weights, std::int64_t n, std::int64_t vocab,
                                         const CrossEntropyOptions& o, const std::vector<R>& grad) {
  std::vector<R> dz(z.size(), R(0));
  R weight_sum = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    if (labels[i] != o.ignore_index) weight_sum += weights.empty() ? R(1) : weights[i];
  }
  for (std::int64_t i = 0; i < n; ++i) {
    if (labels[i] == o.ignore_index) continue;
    const R* row = z.data() + i * vocab;
    R mx = -std::numeric_limits<R>::infinity();
    for (std::int64_t j = 0; j < vocab; ++j) mx = std::max(mx, row[j]);
    R s = 0;
    for (std::int64_t j = 0; j < vocab; ++j) s += std::exp(row[j] - mx);
    const R lse = mx + std::log(s);
    R sc = (o.reduction == Reduction::none ? grad[i] : grad[0]) * (weights.empty() ? R(1) : weights[i]);
    if (o.reduction == Reduction::mean) sc /= weight_sum;
    for (std::int64_t j = 0; j < vocab; ++j) {
      const R target = (j == labels[i] ? R(1) - R(o.label_smoothing) : R(0)) + R(o.label_smoothing) / R(vocab);
      dz[i * vocab + j] = sc * (std::exp(row[j] - lse) * (R(1) + R(2) * R(o.z_loss) * lse) - target);
    }
  }
  return dz;
}

// The entropy of a row of logits, in nats (the patcher's).
template <class R>
R entropy(const R* z, std::int64_t vocab) {
  R mx = -std::numeric_limits<R>::infinity();
  for (std::int64_t j = 0; j < vocab; ++j) mx = std::max(mx, z[j]);
  R s = 0, t = 0;
  for (std::int64_t j = 0; j < vocab; ++j) {
    const R e = std::exp(z[j] - mx);
    s += e;
    t += e * (z[j] - mx);
  }
  return std::log(s) - t / s;
}

// heads::Sampling's rule over a row of logits. `margin` (optional): how far
// the decision is from flipping, relative to the row's mass (greedy: the gap
// between the two largest logits), for tests that compare a kernel's
// rounding-perturbed choice with this one.
template <class R>
std::int32_t sample(const R* z, int vocab, const tokenless::heads::Sampling& sp, std::int64_t row,
                    R* margin = nullptr) {
  R mx = -std::numeric_limits<R>::infinity();
  int arg = 0;
  bool nan = false;
  for (int j = 0; j < vocab; ++j) {
    if (z[j] != z[j]) {
      if (!nan) arg = j;
      nan = true;
    } else if (!nan && z[j] > mx) {
      mx = z[j];
      arg = j;
    }
  }
  if (sp.temperature == 0.0f || nan || !std::isfinite(mx)) {
    if (margin) {
      R second = -std::numeric_limits<R>::infinity();
      for (int j = 0; j < vocab; ++j) {
        if (j != arg) second = std::max(second, z[j]);
      }
      *margin = mx - second;
    }
    return arg;
  }
  std::vector<R> e(static_cast<std::size_t>(vocab));
  R total = 0;
  for (int j = 0; j < vocab; ++j) total += e[j] = std::exp((z[j] - mx) / R(sp.temperature));
  std::vector<char> kept(static_cast<std::size_t>(vocab), 1);
  R m = std::numeric_limits<R>::infinity();
  if (sp.top_p < 1.0f) {
    const R bound = R(sp.top_p) * total;
    for (int j = 0; j < vocab; ++j) {
      R ahead = 0;
      for (int k = 0; k < vocab; ++k) {
        if (e[k] > e[j] || (e[k] == e[j] && k < j)) ahead += e[k];
      }
      kept[j] = ahead < bound;
      m = std::min(m, std::fabs(ahead - bound) / total);
    }
  }
  R kept_total = 0;
  for (int j = 0; j < vocab; ++j) kept_total += kept[j] ? e[j] : R(0);
  const R target = R(tokenless::heads::sample_uniform(sp.seed, sp.offset, row)) * kept_total;
  R run = 0;
  std::int32_t chosen = -1, last = -1;
  for (int j = 0; j < vocab; ++j) {
    if (!kept[j]) continue;
    run += e[j];
    last = j;
    m = std::min(m, std::fabs(run - target) / total);
    if (chosen < 0 && run > target) chosen = j;
  }
  if (margin) *margin = m;
  return chosen >= 0 ? chosen : last;
}

// Self-speculative acceptance of one sequence: a, and the a + 1 new tokens.
inline std::int32_t speculative_accept(const std::int32_t* draft, const std::int32_t* verified, int k,
                                       std::vector<std::int32_t>& out) {
  int a = 0;
  while (a < k && draft[a] == verified[a]) ++a;
  out.assign(draft, draft + a);
  out.push_back(verified[a]);
  return a;
}

// DPO over per-token log-probs: sequences by cu, pairs (chosen, rejected).
template <class R>
struct DpoResult {
  R loss = 0;
  std::vector<R> seq, chosen_reward, rejected_reward, grad_token_loss;
};
template <class R>
DpoResult<R> dpo(const std::vector<R>& logprob, const std::vector<std::int32_t>& cu, const std::vector<R>& ref,
                 const std::vector<std::int32_t>& chosen, const std::vector<std::int32_t>& rejected, R beta) {
  DpoResult<R> o;
  const std::size_t S = cu.size() - 1, P = chosen.size();
  o.seq.assign(S, R(0));
  for (std::size_t s = 0; s < S; ++s) {
    for (std::int32_t i = cu[s]; i < cu[s + 1]; ++i) o.seq[s] += logprob[i];
  }
  std::vector<R> dpi(S, R(0));
  for (std::size_t k = 0; k < P; ++k) {
    const R rc = beta * (o.seq[chosen[k]] - ref[chosen[k]]), rr = beta * (o.seq[rejected[k]] - ref[rejected[k]]);
    const R x = rc - rr;
    o.chosen_reward.push_back(rc);
    o.rejected_reward.push_back(rr);
    o.loss += std::log1p(std::exp(-x)) / R(P);
    const R dx = -(R(1) / (R(1) + std::exp(x))) / R(P);  // d softplus(-x)/dx = -σ(-x)
    dpi[chosen[k]] += beta * dx;
    dpi[rejected[k]] -= beta * dx;
  }
  o.grad_token_loss.assign(logprob.size(), R(0));
  for (std::size_t s = 0; s < S; ++s) {
    for (std::int32_t i = cu[s]; i < cu[s + 1]; ++i) o.grad_token_loss[i] = -dpi[s];
  }
  return o;
}

}  // namespace tokenless::reference::heads
