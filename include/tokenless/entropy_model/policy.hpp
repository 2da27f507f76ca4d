#pragma once
// The byte n-gram entropy model's semantics: its configuration and its
// context hash, on host and device (entropy_model/ngram.cuh runs it).
//
// Orders 1..K back off to each other (a Dirichlet-smoothed chain):
//
//   p_1(v) = (c_1(v) + alpha) / (C_1 + 256 alpha)
//   p_k(v) = (c_k(v) + beta p_{k-1}(v)) / (C_k + beta),   k = 2..K
//
// c_k counts the byte after the order-k context (orders >= 2 hashed, with the
// order in the hash, into one table of `buckets` rows).
#include <tokenless/core/config.hpp>

#include <cstdint>

namespace tokenless::entropy_model {

struct NGramModelConfig {
  int order = 4;                   // K: the longest context, in bytes (1..8)
  std::int64_t buckets = 1 << 16;  // rows of the hashed table of orders >= 2
  float alpha = 0.5f;              // order-1 smoothing
  float beta = 2.0f;               // back-off strength
};

inline constexpr int kMaxNGramOrder = 8;

// FNV-1a over the order and the `order` bytes ending at `end` (missing bytes read as 0).
TL_HOST_DEVICE inline std::uint32_t context_hash(const std::uint8_t* bytes, std::int64_t end, int order, std::int64_t buckets) {
  std::uint32_t h = (2166136261u ^ static_cast<std::uint32_t>(order)) * 16777619u;
  for (int j = order - 1; j >= 0; --j) {
    const std::int64_t i = end - j;
    h = (h ^ (i >= 0 ? bytes[i] : 0u)) * 16777619u;
  }
  return static_cast<std::uint32_t>(h % static_cast<std::uint64_t>(buckets));
}

// ------------------------------------------------------------------ tuning (values, not semantics)
struct Tuning {
  int block_threads;  // counting: a thread per byte; entropies: a warp per position
  int blocks_per_sm;
  friend constexpr bool operator==(const Tuning&, const Tuning&) = default;
};
inline constexpr Tuning kTuningSm90{256, 32};  // untuned
inline constexpr Tuning kTuningSm80{256, 32};  // untuned
constexpr Tuning tuning_for(int compute_capability) { return compute_capability >= 90 ? kTuningSm90 : kTuningSm80; }

}  // namespace tokenless::entropy_model
