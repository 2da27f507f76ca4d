#pragma once
// Host reference of the concept bottleneck's pooling and replication
// (double precision). Segments are given as position ranges [lo, hi) of the
// batch, in segment order, with whether each opens and closes its sequence.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
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

}  // namespace tokenless::reference::bottleneck
