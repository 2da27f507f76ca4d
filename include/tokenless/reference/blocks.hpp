#pragma once
// Host reference of the backbone blocks (RMSNorm so far), in R (double: the
// truth; float: the naive same-precision loop). `round` is what storing in
// the model's type does to a value (the identity for fp32): the residual
// add and NormThenCast's cast are rounded as the model rounds them.
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

}  // namespace tokenless::reference::blocks
