#pragma once
// Host reference of the attention core: dense masked attention in double
// precision, with masks built from each variant's rule as stated (not from
// the kernels' hooks), and BLT's patch ids as BLT computes them.
//
// Layouts are packed: q and out [total_q, heads, d], k and v [total_k,
// kv_heads, d]. A query that sees no key gives zeros and an LSE of -inf.
// `round` (optional) is applied to the probabilities and to dS before they
// meet the next product: with a storage type's rounding it is the naive
// same-precision implementation the tests measure the kernels against.
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

namespace tokenless::reference::attention {

// visible(b, i, j): query i of sequence b sees key j of sequence b (local).
using Mask = std::function<bool(std::int64_t b, int i, int j)>;
using Round = std::function<double(double)>;

struct Shape {
  std::vector<std::int32_t> cu_q, cu_k;  // prefix sums of the sequences
  int heads = 1, kv_heads = 1, d = 64;
  double scale = 0;     // 0: 1 / sqrt(d)
  double soft_cap = 0;  // > 0: cap tanh(x / cap) after the scale
  double scale_or_default() const { return scale != 0 ? scale : 1.0 / std::sqrt(static_cast<double>(d)); }
  std::int64_t total_q() const { return cu_q.back(); }
  std::int64_t total_k() const { return cu_k.back(); }
};

namespace detail {
inline double transform(const Shape& s, double x) { return s.soft_cap > 0 ? s.soft_cap * std::tanh(x / s.soft_cap) : x; }
inline double transform_grad(const Shape& s, double y) {
  return s.soft_cap > 0 ? 1.0 - (y / s.soft_cap) * (y / s.soft_cap) : 1.0;
}
inline double identity(double x) { return x; }

// Calls f(b, h, hk, i, j, qi, kj) ... through the probabilities of every row.
template <class F>
inline void for_each_row(const Shape& s, F&& f) {
  for (std::size_t b = 0; b + 1 < s.cu_q.size(); ++b) {
    const int lq = s.cu_q[b + 1] - s.cu_q[b], lk = s.cu_k[b + 1] - s.cu_k[b];
    for (int h = 0; h < s.heads; ++h) {
      for (int i = 0; i < lq; ++i) f(static_cast<std::int64_t>(b), h, h / (s.heads / s.kv_heads), i, lk);
    }
  }
}

// The probabilities of one row (0 where masked) and its LSE.
inline double row_probs(const Shape& s, const Mask& mask, const std::vector<double>& q, const std::vector<double>& k,
                        std::int64_t b, int h, int hk, int i, int lk, std::vector<double>& y, std::vector<double>& p) {
  const int d = s.d;
  const double scale = s.scale_or_default();
  y.assign(static_cast<std::size_t>(lk), 0.0);
  p.assign(static_cast<std::size_t>(lk), 0.0);
  double mx = -std::numeric_limits<double>::infinity();
  bool any = false;
  const std::int64_t qi = s.cu_q[b] + i;
  for (int j = 0; j < lk; ++j) {
    if (!mask(b, i, j)) continue;
    const std::int64_t kj = s.cu_k[b] + j;
    double dot = 0;
    for (int c = 0; c < d; ++c) dot += q[(qi * s.heads + h) * d + c] * k[(kj * s.kv_heads + hk) * d + c];
    y[j] = transform(s, dot * scale);
    mx = any ? std::max(mx, y[j]) : y[j];
    any = true;
  }
  if (!any) return -std::numeric_limits<double>::infinity();
  double sum = 0;
  for (int j = 0; j < lk; ++j) {
    if (mask(b, i, j)) sum += std::exp(y[j] - mx);
  }
  for (int j = 0; j < lk; ++j) {
    if (mask(b, i, j)) p[j] = std::exp(y[j] - mx) / sum;
  }
  return mx + std::log(sum);
}
}  // namespace detail

// out [total_q, heads, d] and lse [heads, total_q].
inline void forward(const Shape& s, const Mask& mask, const std::vector<double>& q, const std::vector<double>& k,
                    const std::vector<double>& v, std::vector<double>& out, std::vector<double>& lse,
                    const Round& round = detail::identity) {
  const int d = s.d;
  out.assign(static_cast<std::size_t>(s.total_q() * s.heads * d), 0.0);
  lse.assign(static_cast<std::size_t>(s.total_q() * s.heads), 0.0);
  std::vector<double> y, p;
  detail::for_each_row(s, [&](std::int64_t b, int h, int hk, int i, int lk) {
    const std::int64_t qi = s.cu_q[b] + i;
    lse[h * s.total_q() + qi] = detail::row_probs(s, mask, q, k, b, h, hk, i, lk, y, p);
    for (int j = 0; j < lk; ++j) {
      if (p[j] == 0) continue;
      const double pj = round(p[j]);
      const std::int64_t kj = s.cu_k[b] + j;
      for (int c = 0; c < d; ++c) out[(qi * s.heads + h) * d + c] += pj * v[(kj * s.kv_heads + hk) * d + c];
    }
  });
}

// dq like q, dk and dv like k, from dout like out.
inline void backward(const Shape& s, const Mask& mask, const std::vector<double>& q, const std::vector<double>& k,
                     const std::vector<double>& v, const std::vector<double>& dout, std::vector<double>& dq,
                     std::vector<double>& dk, std::vector<double>& dv, const Round& round = detail::identity) {
  const int d = s.d;
  const double scale = s.scale_or_default();
  dq.assign(q.size(), 0.0);
  dk.assign(k.size(), 0.0);
  dv.assign(v.size(), 0.0);
  std::vector<double> y, p, dp;
  detail::for_each_row(s, [&](std::int64_t b, int h, int hk, int i, int lk) {
    const std::int64_t qi = s.cu_q[b] + i;
    detail::row_probs(s, mask, q, k, b, h, hk, i, lk, y, p);
    const double* go = &dout[(qi * s.heads + h) * d];
    dp.assign(static_cast<std::size_t>(lk), 0.0);
    double dot = 0;  // sum_j p_j dp_j = dO . O
    for (int j = 0; j < lk; ++j) {
      if (p[j] == 0) continue;
      const std::int64_t kj = s.cu_k[b] + j;
      for (int c = 0; c < d; ++c) dp[j] += go[c] * v[(kj * s.kv_heads + hk) * d + c];
      dot += p[j] * dp[j];
    }
    for (int j = 0; j < lk; ++j) {
      if (p[j] == 0) continue;
      const std::int64_t kj = s.cu_k[b] + j;
      const double pj = round(p[j]);
      const double ds = round(p[j] * (dp[j] - dot) * detail::transform_grad(s, y[j]) * scale);
      for (int c = 0; c < d; ++c) {
        dv[(kj * s.kv_heads + hk) * d + c] += pj * go[c];
        dq[(qi * s.heads + h) * d + c] += ds * k[(kj * s.kv_heads + hk) * d + c];
        dk[(kj * s.kv_heads + hk) * d + c] += ds * q[(qi * s.heads + h) * d + c];
      }
    }
  });
}

// ------------------------------------------------------------------ the rules, as stated
inline bool full(int, int, int, int) { return true; }
// Bottom-right aligned: query i of lq sees keys j <= i + lk - lq.
inline bool causal(int i, int j, int lq, int lk) { return j <= i + lk - lq; }
inline bool window(int i, int j, int lq, int lk, int w) {
  const int last = i + lk - lq;
  return j <= last && j > last - w;
}

// BLT's patch_ids_from_lengths: position t belongs to patch p when
// sum(lengths[:p]) <= t < sum(lengths[:p+1]); positions past the last patch
// get the patch count.
inline std::vector<int> patch_ids_from_lengths(const std::vector<int>& lengths, int n) {
  std::vector<int> ids(static_cast<std::size_t>(n));
  for (int t = 0; t < n; ++t) {
    int p = 0, end = 0;
    for (int len : lengths) {
      end += len;
      if (end <= t) ++p;
      else break;
    }
    ids[t] = p;
  }
  return ids;
}
// Encoder: the patch of every byte. Decoder: BLT's ids from lengths[1:].
inline std::vector<int> encoder_patch_ids(const std::vector<int>& lengths, int n) {
  return patch_ids_from_lengths(lengths, n);
}
inline std::vector<int> decoder_patch_ids(const std::vector<int>& lengths, int n) {
  return patch_ids_from_lengths(std::vector<int>(lengths.begin() + 1, lengths.end()), n);
}
// Slot s (patch s / k) sees byte j: enc[j] in (s/k - w, s/k].
inline bool encoder_cross(const std::vector<int>& enc, int s, int j, int k, int w) {
  const int p = s / k;
  return enc[j] <= p && enc[j] > p - w;
}
// Byte i sees slot s: s / k in (dec[i] - w, dec[i]].
inline bool decoder_cross(const std::vector<int>& dec, int i, int s, int k, int w) {
  const int p = s / k;
  return p <= dec[i] && p > dec[i] - w;
}
// DLCM: token t sees concept c when segment c started at or before t, or
// (completed) ended at or before t.
inline bool concept_started(const std::vector<int>& seg_start, int t, int c) { return seg_start[c] <= t; }
inline bool concept_completed(const std::vector<int>& seg_end, int t, int c) { return seg_end[c] <= t + 1; }

}  // namespace tokenless::reference::attention
