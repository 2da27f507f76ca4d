#pragma once
// H-Net / DLCM learned boundaries: the semantics of the cosine router and
// the ratio loss, on host and device.
//
//   p_t = clamp((1 - cos(q_{t-1}, k_t)) / 2, 0, 1),  p = 1 at every sequence start
//   boundary_t = p_t > 0.5      (H-Net's argmax of (1 - p, p): p = 0.5 is not one)
//
// cos uses F.normalize's convention: x / max(||x||, 1e-12).
//
//   ratio loss = R/(R-1) * ((R-1) F G + (1-F)(1-G))
//
// with F the fraction of boundaries (no gradient) and G the mean of p, over
// each sequence (averaged over the non-empty ones), over the batch (H-Net),
// or over a global batch whose sums the caller all-reduced (DLCM's global
// parser).
#include <tokenless/core/config.hpp>

namespace tokenless::router {

inline constexpr float kNormalizeEps = 1e-12f;

TL_HOST_DEVICE inline float prob_from_cos(float cos) {
  const float p = 0.5f * (1.0f - cos);
  return p < 0.0f ? 0.0f : (p > 1.0f ? 1.0f : p);  // NaN passes through, as torch.clamp does
}

// H-Net's rule: p = 0.5 is not a boundary.
TL_HOST_DEVICE constexpr bool is_boundary(float p) { return p > 0.5f; }

enum class RatioScope { per_sequence, per_batch, global };

TL_HOST_DEVICE inline float ratio_loss_value(float F, float G, float R) {
  return R / (R - 1.0f) * ((R - 1.0f) * F * G + (1.0f - F) * (1.0f - G));
}

// dL/dG (F carries no gradient).
TL_HOST_DEVICE inline float ratio_loss_grad(float F, float R) {
  return R / (R - 1.0f) * ((R - 1.0f) * F - (1.0f - F));
}

}  // namespace tokenless::router
