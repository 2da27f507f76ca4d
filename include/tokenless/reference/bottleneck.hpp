#pragma once
// Host reference of the concept bottleneck's pooling and replication
// (double precision). Segments are given as position ranges [lo, hi) of the
// batch, in segment order, with whether each opens and closes its sequence.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

namespace tokenless::reference::bottleneck {

enum class Pool { sum, mean, max, min, first, last };

struct Segment {
  std::int64_t lo = 0, hi = 0;
  bool opens = false, closes = false;  // first / last segment of its sequence
};

// Segments from per-sequence lengths over sequences laid end to end.
inline std::vector<Segment> segments_from_lengths(const std::vector<std::vector<int>>& lengths) {
  std::vector<Segment> out;
  std::int64_t pos = 0;
  for (const auto& seq : lengths) {
    for (std::size_t i = 0; i < seq.size(); ++i) {
      out.push_back({pos, pos + seq[i], i == 0, i + 1 == seq.size()});
      pos += seq[i];
    }
  }
  return out;
}

// The pooled value of one column: NaN propagates through every reduction.
inline double pool_column(Pool mode, const std::vector<double>& x, int d, const Segment& s, int c) {
  const std::int64_t n = s.hi - s.lo;
  if (n == 0) return 0.0;
  if (mode == Pool::first) return x[s.lo * d + c];
  if (mode == Pool::last) return x[(s.hi - 1) * d + c];
  double acc = mode == Pool::max ? -std::numeric_limits<double>::infinity()
               : mode == Pool::min ? std::numeric_limits<double>::infinity()
                                   : 0.0;
  for (std::int64_t r = s.lo; r < s.hi; ++r) {
    const double v = x[r * d + c];
    if (std::isnan(v) || std::isnan(acc)) acc = std::numeric_limits<double>::quiet_NaN();
    else if (mode == Pool::max) acc = std::max(acc, v);
    else if (mode == Pool::min) acc = std::min(acc, v);
    else acc += v;
  }
  return mode == Pool::mean ? acc / static_cast<double>(n) : acc;
}

inline std::vector<double> pool(Pool mode, const std::vector<double>& x, int d, const std::vector<Segment>& segs) {
  std::vector<double> out(segs.size() * static_cast<std::size_t>(d));
  for (std::size_t p = 0; p < segs.size(); ++p) {
    for (int c = 0; c < d; ++c) out[p * d + c] = pool_column(mode, x, d, segs[p], c);
  }
  return out;
}

// dL/dx from dL/dout: sum and mean spread, first and last pick, max and min
// split evenly between the rows equal to the result (PyTorch's
// scatter_reduce backward).
inline std::vector<double> pool_backward(Pool mode, const std::vector<double>& x, const std::vector<double>& g, int d,
                                         const std::vector<Segment>& segs) {
  std::vector<double> dx(x.size(), 0.0);
  for (std::size_t p = 0; p < segs.size(); ++p) {
    const Segment& s = segs[p];
    const double n = static_cast<double>(s.hi - s.lo);
    for (int c = 0; c < d; ++c) {
      const double gp = g[p * d + c];
      const double result = pool_column(mode, x, d, s, c);
      double ties = 0;
      for (std::int64_t r = s.lo; r < s.hi; ++r) ties += x[r * d + c] == result;
      for (std::int64_t r = s.lo; r < s.hi; ++r) {
        double v = 0;
        switch (mode) {
          case Pool::sum: v = gp; break;
          case Pool::mean: v = gp / n; break;
          case Pool::first: v = r == s.lo ? gp : 0.0; break;
          case Pool::last: v = r == s.hi - 1 ? gp : 0.0; break;
          default: v = x[r * d + c] == result ? gp / ties : 0.0; break;
        }
        dx[r * d + c] = v;
      }
    }
  }
  return dx;
}

// out[position] = src[its segment - shift] (zeros for a sequence's first with shift 1).
inline std::vector<double> replicate(const std::vector<double>& src, int d, const std::vector<Segment>& segs, int shift,
                                     std::int64_t positions) {
  std::vector<double> out(static_cast<std::size_t>(positions) * d, 0.0);
  for (std::size_t p = 0; p < segs.size(); ++p) {
    if (shift && segs[p].opens) continue;
    for (std::int64_t r = segs[p].lo; r < segs[p].hi; ++r) {
      for (int c = 0; c < d; ++c) out[r * d + c] = src[(p - shift) * d + c];
    }
  }
  return out;
}

inline std::vector<double> replicate_backward(const std::vector<double>& g, int d, const std::vector<Segment>& segs,
                                              int shift) {
  std::vector<double> out(segs.size() * static_cast<std::size_t>(d), 0.0);
  for (std::size_t p = 0; p < segs.size(); ++p) {
    if (shift && segs[p].opens) continue;
    for (std::int64_t r = segs[p].lo; r < segs[p].hi; ++r) {
      for (int c = 0; c < d; ++c) out[(p - shift) * d + c] += g[r * d + c];
    }
  }
  return out;
}

// A row-major product with nn.Linear's weight: out[r][o] = Σ_c x[r][c] w[o][c] (+ bias[o]).
inline std::vector<double> linear(const std::vector<double>& x, std::int64_t rows, int d, const std::vector<double>& w,
                                  std::int64_t out_features, const std::vector<double>& bias) {
  std::vector<double> out(static_cast<std::size_t>(rows * out_features));
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t o = 0; o < out_features; ++o) {
      double a = bias.empty() ? 0.0 : bias[o];
      for (int c = 0; c < d; ++c) a += x[r * d + c] * w[o * d + c];
      out[r * out_features + o] = a;
    }
  }
  return out;
}

// ------------------------------------------------------------------ H-Net's dechunk
// Sequential over the chunks, from the float clamp of p (the kernels' p̂),
// in R: double for the truth, float for the naive same-precision loop the
// tolerance rule compares with. `segs` are the chunks; prob and the residual
// are per position (an empty residual: none).
inline float dechunk_p(float p) {
  const float lo = 1e-4f, hi = 1.0f - 1e-4f;
  return p < lo ? lo : (p > hi ? hi : p);  // NaN passes
}

template <class R>
struct Dechunked {
  std::vector<R> states;  // [chunks, d]: z̄
  std::vector<R> out;     // [positions, d]
};

template <class R>
Dechunked<R> dechunk(const std::vector<R>& z, const std::vector<float>& prob, int d, const std::vector<Segment>& segs,
                     const std::vector<R>& residual, std::int64_t positions) {
  Dechunked<R> r{std::vector<R>(segs.size() * static_cast<std::size_t>(d)),
                 std::vector<R>(static_cast<std::size_t>(positions) * d, R(0))};
  std::vector<R> h(d, R(0));
  for (std::size_t c = 0; c < segs.size(); ++c) {
    const Segment& s = segs[c];
    if (s.opens) std::fill(h.begin(), h.end(), R(0));
    if (s.hi > s.lo) {
      const R p = dechunk_p(prob[s.lo]);
      for (int j = 0; j < d; ++j) h[j] = p * z[c * d + j] + (R(1) - p) * h[j];
    }
    for (int j = 0; j < d; ++j) r.states[c * d + j] = h[j];
    for (std::int64_t t = s.lo; t < s.hi; ++t) {
      for (int j = 0; j < d; ++j) r.out[t * d + j] = h[j] + (residual.empty() ? R(0) : residual[t * d + j]);
    }
  }
  return r;
}

template <class R>
struct DechunkGrads {
  std::vector<R> z;     // [chunks, d]
  std::vector<R> prob;  // [positions]
};

// The adjoint, plainly: λ_c = G_c + (1 - p̂_{c+1}) λ_{c+1} within a sequence;
// dz = p̂ λ; dp̂ = <λ, z - z̄_{c-1}> through the clamp; with `confidence`,
// every position adds sign(p) <g, z̄> (the STE of max(p, 1 - p)).
template <class R>
DechunkGrads<R> dechunk_backward(const std::vector<R>& g, const std::vector<R>& z, const std::vector<float>& prob,
                                 int d, const std::vector<Segment>& segs, std::int64_t positions, bool confidence) {
  const std::vector<R> zbar = dechunk<R>(z, prob, d, segs, {}, positions).states;
  DechunkGrads<R> r{std::vector<R>(segs.size() * static_cast<std::size_t>(d), R(0)),
                    std::vector<R>(static_cast<std::size_t>(positions), R(0))};
  std::vector<R> lam(d, R(0));
  for (std::size_t c = segs.size(); c-- > 0;) {
    const Segment& s = segs[c];
    if (s.closes) {
      std::fill(lam.begin(), lam.end(), R(0));
    } else if (segs[c + 1].hi > segs[c + 1].lo) {
      const R a = R(1) - R(dechunk_p(prob[segs[c + 1].lo]));
      for (R& v : lam) v *= a;
    }
    for (std::int64_t t = s.lo; t < s.hi; ++t) {
      R dot = 0;
      for (int j = 0; j < d; ++j) {
        lam[j] += g[t * d + j];
        dot += g[t * d + j] * zbar[c * d + j];
      }
      if (confidence) r.prob[t] += (prob[t] > 0.5f ? R(1) : R(-1)) * dot;
    }
    if (s.hi == s.lo) continue;
    const R p = dechunk_p(prob[s.lo]);
    R dp = 0;
    for (int j = 0; j < d; ++j) {
      r.z[c * d + j] = p * lam[j];
      dp += lam[j] * (z[c * d + j] - (s.opens ? R(0) : zbar[(c - 1) * d + j]));
    }
    const float pl = prob[s.lo];
    if (pl >= 1e-4f && pl <= 1.0f - 1e-4f) r.prob[s.lo] += dp;
  }
  return r;
}

// ------------------------------------------------------------------ CoCoMix's sparse concepts
// The SAE's LN: x̂ = (x - mean) / (std + 1e-5) - pre_bias, unbiased std.
template <class R>
struct Normalized {
  std::vector<R> out, mean, std;
};
// A row's mean and unbiased std.
template <class R>
std::pair<R, R> row_stats(const std::vector<R>& x, std::int64_t r, int d) {
  R s = 0;
  for (int c = 0; c < d; ++c) s += x[r * d + c];
  const R mu = s / R(d);
  R q = 0;
  for (int c = 0; c < d; ++c) q += (x[r * d + c] - mu) * (x[r * d + c] - mu);
  return {mu, std::sqrt(q / R(d - 1))};
}
template <class R>
Normalized<R> sae_normalize(const std::vector<R>& x, std::int64_t rows, int d, const std::vector<R>& pre_bias) {
  Normalized<R> n{std::vector<R>(x.size()), std::vector<R>(rows), std::vector<R>(rows)};
  for (std::int64_t r = 0; r < rows; ++r) {
    const auto [mu, sd] = row_stats(x, r, d);
    for (int c = 0; c < d; ++c) {
      n.out[r * d + c] = (x[r * d + c] - mu) / (sd + R(1e-5f)) - (pre_bias.empty() ? R(0) : pre_bias[c]);
    }
    n.mean[r] = mu;
    n.std[r] = sd;
  }
  return n;
}
// dL/dx from dL/dx̂ and, optionally (empty: none), dL/dmean and dL/dstd.
template <class R>
std::vector<R> sae_normalize_backward(const std::vector<R>& x, const std::vector<R>& g, std::int64_t rows, int d,
                                      const std::vector<R>& gmean, const std::vector<R>& gstd) {
  std::vector<R> dx(x.size());
  for (std::int64_t r = 0; r < rows; ++r) {
    const auto [mu, sd] = row_stats(x, r, d);
    const R e = sd + R(1e-5f);
    // Through c = x - mean: dL/dc, then dL/dx = dL/dc - mean(dL/dc) + dmean / d.
    R gc = 0;
    for (int c = 0; c < d; ++c) gc += g[r * d + c] * (x[r * d + c] - mu);
    const R k = ((gstd.empty() ? R(0) : gstd[r]) - gc / (e * e)) / (R(d - 1) * sd);
    std::vector<R> dc(d);
    R mean_dc = 0;
    for (int c = 0; c < d; ++c) {
      dc[c] = g[r * d + c] / e + k * (x[r * d + c] - mu);
      mean_dc += dc[c] / R(d);
    }
    for (int c = 0; c < d; ++c) dx[r * d + c] = dc[c] - mean_dc + (gmean.empty() ? R(0) : gmean[r] / R(d));
  }
  return dx;
}

// A row's top k: larger first, ties by lower index, NaN above everything;
// `relu` on the kept values.
struct Codes {
  std::vector<std::int32_t> idx;
  std::vector<float> val;
};
inline Codes topk(const std::vector<float>& x, std::int64_t rows, std::int64_t cols, int k, bool relu) {
  Codes out;
  for (std::int64_t r = 0; r < rows; ++r) {
    std::vector<std::int32_t> order(static_cast<std::size_t>(cols));
    for (std::int64_t i = 0; i < cols; ++i) order[i] = static_cast<std::int32_t>(i);
    std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
      const float va = x[r * cols + a], vb = x[r * cols + b];
      if (std::isnan(va) != std::isnan(vb)) return std::isnan(va);
      return va > vb;  // false for two NaN: they keep their index order
    });
    for (int j = 0; j < k; ++j) {
      const float v = x[r * cols + order[j]];
      out.idx.push_back(order[j]);
      out.val.push_back(relu ? (std::isnan(v) ? v : std::max(v, 0.0f)) : v);
    }
  }
  return out;
}

// out = (Σ_j v_j W[idx_j] + bias + pre_bias) · std + mean (empty vectors: absent).
template <class R>
std::vector<R> sparse_decode(const Codes& codes, std::int64_t rows, int k, const std::vector<R>& dict, int d,
                             const std::vector<R>& bias, const std::vector<R>& pre_bias, const std::vector<R>& mean,
                             const std::vector<R>& std) {
  std::vector<R> out(static_cast<std::size_t>(rows) * d);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (int c = 0; c < d; ++c) {
      R a = 0;
      for (int j = 0; j < k; ++j) a += R(codes.val[r * k + j]) * dict[std::int64_t{codes.idx[r * k + j]} * d + c];
      if (!bias.empty()) a += bias[c];
      if (!pre_bias.empty()) a += pre_bias[c];
      out[r * d + c] = std.empty() ? a : a * std[r] + mean[r];
    }
  }
  return out;
}

template <class R>
struct DecodeGrads {
  std::vector<R> val, mean, std, dict, bias;
};
template <class R>
DecodeGrads<R> sparse_decode_backward(const Codes& codes, std::int64_t rows, int k, const std::vector<R>& dict,
                                      std::int64_t dictionary, int d, const std::vector<R>& bias,
                                      const std::vector<R>& pre_bias, const std::vector<R>& std,
                                      const std::vector<R>& g) {
  DecodeGrads<R> o{std::vector<R>(static_cast<std::size_t>(rows) * k), std::vector<R>(rows), std::vector<R>(rows),
                   std::vector<R>(static_cast<std::size_t>(dictionary) * d, R(0)), std::vector<R>(d, R(0))};
  for (std::int64_t r = 0; r < rows; ++r) {
    const R sd = std.empty() ? R(1) : std[r];
    R dstd = 0, dmean = 0;
    for (int j = 0; j < k; ++j) {
      const std::int64_t i = codes.idx[r * k + j];
      R dot = 0;
      for (int c = 0; c < d; ++c) dot += g[r * d + c] * dict[i * d + c];
      o.val[r * k + j] = sd * dot;
      dstd += R(codes.val[r * k + j]) * dot;
      for (int c = 0; c < d; ++c) o.dict[i * d + c] += R(codes.val[r * k + j]) * sd * g[r * d + c];
    }
    for (int c = 0; c < d; ++c) {
      dmean += g[r * d + c];
      dstd += g[r * d + c] * ((bias.empty() ? R(0) : bias[c]) + (pre_bias.empty() ? R(0) : pre_bias[c]));
      o.bias[c] += sd * g[r * d + c];
    }
    o.mean[r] = dmean;
    o.std[r] = dstd;
  }
  return o;
}

// λ · mean over rows of mean_j CE(z_r, label_rj), and its gradient.
template <class R>
std::pair<R, std::vector<R>> concept_loss(const std::vector<R>& z, std::int64_t rows, std::int64_t cols,
                                          const std::vector<std::int32_t>& labels, int num_labels, R weight) {
  std::vector<R> dz(z.size());
  R total = 0;
  for (std::int64_t r = 0; r < rows; ++r) {
    R m = -std::numeric_limits<R>::infinity();
    for (std::int64_t i = 0; i < cols; ++i) m = std::max(m, z[r * cols + i]);
    R s = 0;
    for (std::int64_t i = 0; i < cols; ++i) s += std::exp(z[r * cols + i] - m);
    const R lse = m + std::log(s);
    R picked = 0;
    for (int j = 0; j < num_labels; ++j) picked += z[r * cols + labels[r * num_labels + j]];
    total += lse - picked / R(num_labels);
    for (std::int64_t i = 0; i < cols; ++i) {
      R hit = 0;
      for (int j = 0; j < num_labels; ++j) hit += labels[r * num_labels + j] == i ? R(1) / R(num_labels) : R(0);
      dz[r * cols + i] = weight / R(rows) * (std::exp(z[r * cols + i] - lse) - hit);
    }
  }
  return {weight * total / R(rows), dz};
}

}  // namespace tokenless::reference::bottleneck
