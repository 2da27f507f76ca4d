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
#include <tokenless/core/status.hpp>

#include <cmath>
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

// ------------------------------------------------------------------ the byte head
// BLT's output over bytes (its local decoder's and its entropy model's):
// y = norm(h) (blocks' RMSNorm policy, or none), z = y · Wᵀ (+ b) over a
// vocabulary of at most kByteHeadMaxVocab (260: 256 bytes + BLT's 4 specials),
// fused in one kernel with what reads z:
//   entropy_i  = −Σ_j p_ij ln p_ij           (nats, the patcher's entropies_in)
//   the cross-entropy above (every option) and dz, its gradient (given dL/dloss)
//   next_i     = argmax_j z_ij, or a sample (Sampling below)
// The logits live in registers and shared memory only.
inline constexpr int kByteHeadMaxVocab = 288;  // 36 column tiles of 8: 4 warps × 9

// Sampling of the next id from a row of logits z (transformers' order:
// temperature, then top-p):
//   temperature 0: greedy, argmax_j z_j (the first on ties; a NaN counts as
//     the largest, as torch.argmax's does);
//   temperature τ > 0: e_j = exp((z_j − max z) / τ); the nucleus keeps j when
//     the mass strictly ahead of it, A_j = Σ_k e_k over k with e_k > e_j or
//     (e_k = e_j and k < j), is < top_p · Σ e (the shortest prefix of the
//     descending order whose mass reaches top_p, ties to the lower id: HF's
//     TopPLogitsWarper, which also always keeps the largest); then with u =
//     uniform(seed, offset, row), the first kept j in id order whose running
//     sum of kept e exceeds u · Σ_kept e (the last kept one if rounding leaves
//     none). A row whose max is NaN or infinite is sampled greedily.
// The draw is a pure function of (seed, offset, row): the same on every run
// and backend. Advance `offset` between decoding steps.
struct Sampling {
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;        // (0, 1]
  std::uint64_t seed = 0;
  std::uint64_t offset = 0;
};

// The host's check of a Sampling (the byte head's, and the host paths' draws).
inline Status check_sampling(const Sampling& s) {
  if (!(s.temperature >= 0.0f) || !std::isfinite(s.temperature)) {
    return Status::argument(StatusCode::invalid_argument, "sampling.temperature", "a finite value >= 0 (0: greedy)",
                            "%g", static_cast<double>(s.temperature));
  }
  if (!(s.top_p > 0.0f && s.top_p <= 1.0f)) {
    return Status::argument(StatusCode::invalid_argument, "sampling.top_p", "a value in (0, 1]", "%g",
                            static_cast<double>(s.top_p));
  }
  return Status::ok();
}

// SplitMix64's finaliser over the counter (seed, offset, row): 24 bits of
// the hash as a float in [0, 1) (every value exact).
TL_HOST_DEVICE inline std::uint64_t mix64(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
TL_HOST_DEVICE inline float sample_uniform(std::uint64_t seed, std::uint64_t offset, std::int64_t row) {
  const std::uint64_t h =
      mix64(mix64(seed + 0x9e3779b97f4a7c15ull) ^ (offset * 0xd1b54a32d192ed03ull) ^ static_cast<std::uint64_t>(row));
  return static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
}

// Where the byte head's backward spends memory: rows of tokens a chunk (the
// normed rows and dL/dy, 2 · rows · d · sizeof(T), and the inverse rms).
struct ByteHeadTuning {
  int backward_chunk_rows;
  friend constexpr bool operator==(const ByteHeadTuning&, const ByteHeadTuning&) = default;
};
inline constexpr ByteHeadTuning kByteHeadTuningSm80{16384};  // untuned: 64 MiB at d 1024, bf16
inline constexpr ByteHeadTuning kByteHeadTuningSm90{16384};  // untuned
constexpr ByteHeadTuning byte_head_tuning_for(int cc) { return cc >= 90 ? kByteHeadTuningSm90 : kByteHeadTuningSm80; }

}  // namespace tokenless::heads
