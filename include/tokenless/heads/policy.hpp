#pragma once
// The prediction heads' semantics (issue 14).
//
// Linear cross-entropy: logits z = h · Wᵀ (+ b) over a vocabulary of V, for
// N tokens, never stored whole. Per token i with label y_i (ignore_index:
// no loss, no gradient):
//   lse_i      = log Σ_j exp z_ij                      (fp32, online over chunks of V)
//   logprob_i  = z_iy − lse_i                          (written: DPO and friends read it)
//   ce_i       = (1 − ε)(lse_i − z_iy) + ε (lse_i − mean_j z_ij)   (PyTorch's label smoothing)
//   zl_i       = z_coef · lse_i²                       (PaLM's z-loss, returned apart too)
//   loss_i     = w_i (ce_i + zl_i)                     (w_i: per-token weights, default 1)
// Reductions: none (loss_i per token), sum (Σ_i loss_i), mean (Σ_i loss_i /
// Σ_i w_i over the tokens not ignored, as torch's weighted mean divides by
// the weights it used; 1 each without weights: the count). The z-loss is
// reduced alike and returned in its own scalar (it is part of the loss too).
//
// Gradient: dz_ij = s_i (p_ij (1 + 2 z_coef lse_i) − (1 − ε)[j = y_i] − ε/V),
// s_i = w_i · dL/dloss (· 1/Σw for mean; dL/dloss_i for none), then
// dH = dz · W, dW = dzᵀ · H (fp32, accumulated over chunks), db = Σ_i dz_i.
// NaN or Inf in h or W propagate into the rows that read them, as in PyTorch.
#include <tokenless/core/config.hpp>

#include <cstdint>

namespace tokenless::heads {

enum class Reduction : std::uint8_t { mean, sum, none };

inline constexpr const char* to_string(Reduction r) {
  return r == Reduction::mean ? "mean" : r == Reduction::sum ? "sum" : "none";
}

struct CrossEntropyOptions {
  std::int32_t ignore_index = -100;  // PyTorch's default
  float label_smoothing = 0.0f;      // ε in [0, 1]
  float z_loss = 0.0f;               // z_coef >= 0 (PaLM: 1e-4)
  Reduction reduction = Reduction::mean;
};

// ------------------------------------------------------------------ tuning (values, not semantics)
// Chunks: rows of tokens and columns of the vocabulary whose logits exist at
// once (fp32 logits and 16-bit gradients: rows · cols · 6 bytes, 96 MiB at
// the defaults), and the fp32 dH accumulator of rows · d. Untuned: sized so
// that each logits GEMM is large enough to reach cuBLASLt's peak on an H100
// (≥ 4096 in every dimension is its large-GEMM regime); to be measured.
struct Tuning {
  int chunk_rows;
  int chunk_cols;
  friend constexpr bool operator==(const Tuning&, const Tuning&) = default;
};
inline constexpr Tuning kTuningSm80{4096, 4096};  // untuned
inline constexpr Tuning kTuningSm90{4096, 4096};  // untuned
constexpr Tuning tuning_for(int cc) { return cc >= 90 ? kTuningSm90 : kTuningSm80; }

}  // namespace tokenless::heads
