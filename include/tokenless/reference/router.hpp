#pragma once
// Host reference of the cosine router and the ratio loss (double precision).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace tokenless::reference {

// p_t = clamp((1 - cos(q_{t-1}, k_t)) / 2, 0, 1); 1 at sequence starts.
inline std::vector<double> cosine_router(const std::vector<double>& q, const std::vector<double>& k, int d,
                                         const std::vector<std::int32_t>& cu) {
  const std::int64_t n = static_cast<std::int64_t>(q.size()) / d;
  std::vector<double> p(static_cast<std::size_t>(n), 1.0);
  for (std::size_t b = 0; b + 1 < cu.size(); ++b) {
    for (std::int64_t t = cu[b] + 1; t < cu[b + 1]; ++t) {
      double dot = 0, nq = 0, nk = 0;
      for (int c = 0; c < d; ++c) {
        const double a = q[(t - 1) * d + c], e = k[t * d + c];
        dot += a * e;
        nq += a * a;
        nk += e * e;
      }
      const double cos = dot / (std::max(std::sqrt(nq), 1e-12) * std::max(std::sqrt(nk), 1e-12));
      p[static_cast<std::size_t>(t)] = std::clamp(0.5 * (1.0 - cos), 0.0, 1.0);
    }
  }
  return p;
}

// R/(R-1) ((R-1) F G + (1-F)(1-G)), averaged over the groups given by cu
// (one group: the batch).
inline double ratio_loss(const std::vector<double>& p, const std::vector<std::uint8_t>& boundary,
                         const std::vector<std::int32_t>& groups_cu, double R) {
  double total = 0;
  const std::size_t groups = groups_cu.size() - 1;
  for (std::size_t g = 0; g < groups; ++g) {
    double f = 0, s = 0;
    const double n = groups_cu[g + 1] - groups_cu[g];
    for (std::int64_t t = groups_cu[g]; t < groups_cu[g + 1]; ++t) {
      f += boundary[static_cast<std::size_t>(t)];
      s += p[static_cast<std::size_t>(t)];
    }
    const double F = f / n, G = s / n;
    total += R / (R - 1) * ((R - 1) * F * G + (1 - F) * (1 - G));
  }
  return total / static_cast<double>(groups);
}

}  // namespace tokenless::reference
