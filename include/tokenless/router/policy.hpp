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

// ------------------------------------------------------------------ tuning (values, not semantics)
// A warp per position in 256-thread blocks; grids of at most blocks_per_sm
// blocks per SM, the ratio loss's at most ratio_blocks_per_sm.
struct Tuning {
  int block_threads;
  int blocks_per_sm;
  int ratio_blocks_per_sm;
  friend constexpr bool operator==(const Tuning&, const Tuning&) = default;
};
inline constexpr Tuning kTuningSm90{256, 64, 16};  // untuned
inline constexpr Tuning kTuningSm80{256, 64, 16};  // untuned
constexpr Tuning tuning_for(int compute_capability) { return compute_capability >= 90 ? kTuningSm90 : kTuningSm80; }

}  // namespace tokenless::router
