#pragma once
// The concept bottleneck's semantics: how a segment (a patch, a DLCM/H-Net
// chunk) pools its positions into one vector, and how the gradient of that
// vector returns to them.
//
//   PoolSum    sum of the rows                     dx = g
//   PoolMean   sum / length; an empty segment 0    dx = g / length
//   PoolMax    elementwise max; an empty segment 0 (BLT: scatter_reduce amax,
//              include_self=False, into zeros)     dx = g / ties where x = max
//   PoolMin    elementwise min, likewise
//   PoolFirst  the first row (H-Net's ChunkLayer)  dx = g at the first row
//   PoolLast   the last row                        dx = g at the last row
//
// Ties (max, min): as PyTorch's scatter_reduce backward, the gradient is
// split evenly between every row that equals the result. NaN propagates: a
// NaN in a segment's column makes its max (min, sum, mean) NaN, and no
// row equals a NaN result, so that column's gradient is 0 there.
// Accumulation is in fp32 whatever the storage type.
#include <tokenless/core/config.hpp>

#include <cmath>
#include <concepts>
#include <cstdint>

namespace tokenless::bottleneck {

// Reductions (sum, mean, max, min): an fp32 accumulator over the rows.
struct PoolSum {
  static constexpr const char* kName = "sum";
  static constexpr bool kReduces = true;
  TL_HOST_DEVICE static float init() { return 0.0f; }
  TL_HOST_DEVICE static float combine(float a, float x) { return a + x; }
  TL_HOST_DEVICE static float finish(float a, int /*n*/) { return a; }
};
struct PoolMean {
  static constexpr const char* kName = "mean";
  static constexpr bool kReduces = true;
  static constexpr bool kDividesByLength = true;
  TL_HOST_DEVICE static float init() { return 0.0f; }
  TL_HOST_DEVICE static float combine(float a, float x) { return a + x; }
  // a * (1/n): one division a column chunk (ptxas spilled the W-fold IEEE
  // division of a / n on sm_90), within an ulp of PyTorch's sum / n.
  TL_HOST_DEVICE static float finish(float a, int n) { return n > 0 ? a * (1.0f / static_cast<float>(n)) : 0.0f; }
};
// Max and min: NaN wins (fmaxf would drop it); an empty segment gives 0.
struct PoolMax {
  static constexpr const char* kName = "max";
  static constexpr bool kReduces = true;
  static constexpr bool kRoutesToArg = true;
  TL_HOST_DEVICE static float init() { return -INFINITY; }
  TL_HOST_DEVICE static float combine(float a, float x) { return (x > a || x != x) && a == a ? x : a; }
  TL_HOST_DEVICE static float finish(float a, int n) { return n > 0 ? a : 0.0f; }
};
struct PoolMin {
  static constexpr const char* kName = "min";
  static constexpr bool kReduces = true;
  static constexpr bool kRoutesToArg = true;
  TL_HOST_DEVICE static float init() { return INFINITY; }
  TL_HOST_DEVICE static float combine(float a, float x) { return (x < a || x != x) && a == a ? x : a; }
  TL_HOST_DEVICE static float finish(float a, int n) { return n > 0 ? a : 0.0f; }
};
// Selections: one row of the segment; an empty segment gives 0.
struct PoolFirst {
  static constexpr const char* kName = "first";
  static constexpr bool kReduces = false;
  TL_HOST_DEVICE static std::int64_t pick(std::int64_t lo, std::int64_t /*hi*/) { return lo; }
};
struct PoolLast {
  static constexpr const char* kName = "last";
  static constexpr bool kReduces = false;
  TL_HOST_DEVICE static std::int64_t pick(std::int64_t /*lo*/, std::int64_t hi) { return hi - 1; }
};

template <class P>
concept PoolPolicy = requires {
  { P::kName } -> std::convertible_to<const char*>;
  { P::kReduces } -> std::convertible_to<bool>;
} && ((P::kReduces && requires(float a, int n) {
        { P::init() } -> std::same_as<float>;
        { P::combine(a, a) } -> std::same_as<float>;
        { P::finish(a, n) } -> std::same_as<float>;
      }) ||
      (!P::kReduces && requires(std::int64_t i) {
        { P::pick(i, i) } -> std::same_as<std::int64_t>;
      }));

// Whether the backward routes the gradient to the rows equal to the result.
template <class P>
constexpr bool routes_to_arg() {
  if constexpr (requires { P::kRoutesToArg; }) return P::kRoutesToArg;
  else return false;
}

// Whether the backward divides the gradient by the segment's length.
template <class P>
constexpr bool divides_by_length() {
  if constexpr (requires { P::kDividesByLength; }) return P::kDividesByLength;
  else return false;
}

// ------------------------------------------------------------------ H-Net's dechunk
// (hnet/modules/dc.py, DeChunkLayer, and the confidence residual of
// hnet/models/hnet.py). Over the chunks c of a sequence, from a zero state:
//
//   p̂_c = clamp(p at the chunk's first position, 1e-4, 1 - 1e-4)
//   z̄_c = p̂_c z_c + (1 - p̂_c) z̄_{c-1}        (fp32, an fma: fma(1 - p̂, z̄, p̂ z))
//   out_t = z̄_{chunk(t)} · STE(max(p_t, 1 - p_t)) + residual_t
//
// STE is 1 forward and the identity backward, so out_t = z̄ + residual, and
// dL/dp_t gains sign_t · <g_t, z̄_{chunk(t)}> (sign +1 where p_t > 0.5, the
// argmax of (1 - p, p), else -1). The clamp passes the gradient where
// 1e-4 <= p <= 1 - 1e-4 (torch.clamp's rule; p = 1 at a sequence start gets
// none through the EMA). The recurrence is affine, h = a h + b with
// a = 1 - p̂ and b = p̂ z, and a sequence's first chunk resets it: its a is
// kReset, which `advance` turns into h = b without multiplying, so neither
// rounding nor a NaN or Inf of one sequence reaches the next. An empty chunk
// (the CSR form allows one) is no event: a = 1, b = 0.
namespace dechunk {
inline constexpr float kMinP = 1e-4f;
inline constexpr float kMaxP = 1.0f - 1e-4f;  // 0.9999f, as torch rounds the Python double
inline constexpr float kReset = -1.0f;         // a decay that cuts the incoming state

// NaN passes through (both comparisons fail), as torch.clamp does.
TL_HOST_DEVICE inline float clamp_p(float p) { return p < kMinP ? kMinP : (p > kMaxP ? kMaxP : p); }
TL_HOST_DEVICE inline bool clamp_passes(float p) { return p >= kMinP && p <= kMaxP; }
// One step of the recurrence. The explicit fma makes the prefill's scan and
// the generation step round identically on every backend.
TL_HOST_DEVICE inline float advance(float a, float h, float b) { return a < 0.0f ? b : fmaf(a, h, b); }
// The decay of two steps in a row (first a1, then a2).
TL_HOST_DEVICE inline float chain(float a1, float a2) { return a1 < 0.0f || a2 < 0.0f ? kReset : a1 * a2; }
// dL/dp_t's STE term sign: which of (1 - p, p) the argmax picked.
TL_HOST_DEVICE inline float ste_sign(float p) { return p > 0.5f ? 1.0f : -1.0f; }
}  // namespace dechunk

// ------------------------------------------------------------------ CoCoMix's sparse concepts
// (facebookresearch/RAM, projects/cocomix.) A row's top k of a dictionary
// (SAE latents, concept logits) as (index, value) pairs, never the dense row.
// Order: larger first; equal values by lower index (torch.topk leaves ties
// unspecified); NaN above everything, as torch.topk ranks it. The
// activation applies to the kept values only.
struct TopKRaw {  // CoCoMix's concept logits: the raw values (a mask, no ReLU)
  static constexpr const char* kName = "raw";
  TL_HOST_DEVICE static float apply(float v) { return v; }
  TL_HOST_DEVICE static float grad(float /*v*/, float g) { return g; }
};
struct TopKRelu {  // OpenAI's TopK SAE: ReLU on the kept values
  static constexpr const char* kName = "relu";
  TL_HOST_DEVICE static float apply(float v) { return v > 0.0f ? v : (v != v ? v : 0.0f); }
  TL_HOST_DEVICE static float grad(float v, float g) { return v > 0.0f ? g : 0.0f; }
};
template <class A>
concept TopKActivation = requires(float v) {
  { A::kName } -> std::convertible_to<const char*>;
  { A::apply(v) } -> std::same_as<float>;
  { A::grad(v, v) } -> std::same_as<float>;
};

// Mixing the continuous concept c_t into the hidden states h_t.
struct MixInterleave {  // CoCoMix: slot 2t is h_t, slot 2t+1 is c_t (2T rows, no new position ids)
  static constexpr const char* kName = "interleave";
  static constexpr int kRowsPerToken = 2;
};
struct MixAdd {  // h_t + c_t
  static constexpr const char* kName = "add";
  static constexpr int kRowsPerToken = 1;
};
template <class M>
concept MixPolicy = requires {
  { M::kName } -> std::convertible_to<const char*>;
  { M::kRowsPerToken } -> std::convertible_to<int>;
} && (M::kRowsPerToken == 1 || M::kRowsPerToken == 2);

// The SAE's normalisation (sparse_autoencoder/model.py, LN): no affine, the
// unbiased std, eps added to the std (not under the root).
inline constexpr float kSaeEps = 1e-5f;

// ------------------------------------------------------------------ tuning (values, not semantics)
// A warp a segment (pooling) or a position (replication), 8 warps a block,
// at most blocks_per_sm blocks per SM with the rest grid-strided. Untuned.
// The dechunk's scan runs over tiles of at least tile_chunks chunks (more
// when a batch would need more than kMaxScanTiles tiles).
struct Tuning {
  int block_threads;
  int blocks_per_sm;
  int tile_chunks;
  friend constexpr bool operator==(const Tuning&, const Tuning&) = default;
};
inline constexpr Tuning kTuningSm80{256, 8, 32};  // untuned
inline constexpr Tuning kTuningSm90{256, 8, 32};  // untuned
constexpr Tuning tuning_for(int cc) { return cc >= 90 ? kTuningSm90 : kTuningSm80; }

}  // namespace tokenless::bottleneck
