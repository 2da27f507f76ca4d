#pragma once
// Plain C++ reference of the optimizer (optim/policy.hpp's semantics): the
// gradient norm in double, clip_grad_norm_'s coefficient and AdamW's update
// in float, operation by operation in torch's order. Tests compare the host
// path and the kernels with it, and it with torch (tests/fixtures/optim).
#include <tokenless/optim/policy.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

namespace tokenless::reference {

struct AdamWTensor {
  float* param;  // fp32 (a bf16 model's master copy)
  const float* grad;
  float* m;
  float* v;
  std::int64_t n;
  bool decay;
};

// One step over every tensor: returns ‖g‖₂ (before clipping). A NaN or
// infinite norm changes nothing and counts *skipped; otherwise *step grows
// by one and every tensor is updated.
inline float adamw_step(const std::vector<AdamWTensor>& ts, const optim::AdamWHyper& h, std::int64_t* step,
                        std::int64_t* skipped) {
  double sq = 0;
  for (const auto& t : ts)
    for (std::int64_t i = 0; i < t.n; ++i) sq += double(t.grad[i]) * double(t.grad[i]);
  const auto norm = static_cast<float>(std::sqrt(sq));
  if (!std::isfinite(norm)) {
    ++*skipped;
    return norm;
  }
  const float clip = h.max_norm > 0 ? std::fmin(static_cast<float>(h.max_norm) / (norm + 1e-6f), 1.0f) : 1.0f;
  ++*step;
  const double t = static_cast<double>(*step);
  const auto decay = static_cast<float>(1.0 - h.lr * h.weight_decay);
  const auto step_size = static_cast<float>(h.lr / (1.0 - std::pow(h.beta1, t)));
  const auto bc2 = static_cast<float>(std::sqrt(1.0 - std::pow(h.beta2, t)));
  const auto w1 = static_cast<float>(1.0 - h.beta1), w2 = static_cast<float>(1.0 - h.beta2);
  const auto b2 = static_cast<float>(h.beta2), eps = static_cast<float>(h.eps);
  for (const auto& ts_i : ts) {
    for (std::int64_t i = 0; i < ts_i.n; ++i) {
      float g = ts_i.grad[i];
      if (h.max_norm > 0) g = g * clip;
      float p = ts_i.param[i];
      if (ts_i.decay) p = p * decay;
      const float m0 = ts_i.m[i], d = g - m0;
      const float m = w1 < 0.5f ? m0 + w1 * d : g - d * (1.0f - w1);  // torch.lerp
      const float v = ts_i.v[i] * b2 + w2 * g * g;
      const float denom = std::sqrt(v) / bc2 + eps;
      p = p + -step_size * (m / denom);
      ts_i.m[i] = m;
      ts_i.v[i] = v;
      ts_i.param[i] = p;
    }
  }
  return norm;
}

}  // namespace tokenless::reference
