#pragma once
// The backbone blocks' semantics (Llama 3, Mistral, Mixtral, Phi-3, OpenELM,
// BLT): RMSNorm so far.
//
// RMSNorm, fused with the residual add that precedes it in a pre-norm block:
//   h = residual + x          (rounded to the storage type, as the model's add is)
//   y = w · cast(h · rsqrt(mean(h²) + eps))
// with the inverse rms kept in fp32 for the backward. Where the weight
// multiplies is a policy, because checkpoints were trained with one order:
//   NormThenCast  transformers' LlamaRMSNorm (Llama, Mistral, Mixtral, Phi-3)
//                 and BLT: the normalised row is cast to the storage type,
//                 then multiplied by the weight (a second rounding);
//   ScaleInFp32   the weight multiplies in fp32 and the product is cast once.
// NaN and Inf propagate as in PyTorch: a NaN in a row makes its rms and the
// whole row NaN.
#include <tokenless/core/config.hpp>
#include <tokenless/core/dtype.hpp>

#include <concepts>

namespace tokenless::blocks {

struct NormThenCast {
  static constexpr const char* kName = "norm_then_cast";
  template <class T>
  TL_HOST_DEVICE static float apply(float normed, float weight) {
    return weight * round_trip<T>(normed);
  }
  template <class T>
  TL_HOST_DEVICE static float normed_as_stored(float normed) {
    return round_trip<T>(normed);
  }
};
struct ScaleInFp32 {
  static constexpr const char* kName = "scale_in_fp32";
  template <class T>
  TL_HOST_DEVICE static float apply(float normed, float weight) {
    return weight * normed;
  }
  template <class T>
  TL_HOST_DEVICE static float normed_as_stored(float normed) {
    return normed;
  }
};

template <class P>
concept NormPolicy = requires(float v) {
  { P::kName } -> std::convertible_to<const char*>;
  { P::template apply<float>(v, v) } -> std::same_as<float>;
  { P::template normed_as_stored<float>(v) } -> std::same_as<float>;
};

// ------------------------------------------------------------------ tuning (values, not semantics)
// A warp a row, 8 warps a block; the weight's gradient in blocks of 32
// columns. Untuned.
struct Tuning {
  int block_threads;
  int blocks_per_sm;
  friend constexpr bool operator==(const Tuning&, const Tuning&) = default;
};
inline constexpr Tuning kTuningSm80{256, 8};  // untuned
inline constexpr Tuning kTuningSm90{256, 8};  // untuned
constexpr Tuning tuning_for(int cc) { return cc >= 90 ? kTuningSm90 : kTuningSm80; }

}  // namespace tokenless::blocks
