#pragma once
// The backbone blocks' semantics (Llama 3, Mistral, Mixtral, Phi-3, OpenELM,
// BLT, GPT-2): the norms, RoPE and the MLP activations.
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

#include <tokenless/core/status.hpp>

#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstring>

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

// ------------------------------------------------------------------ LayerNorm
// GPT-2's (CoCoMix's base): y = cast((h - mean) · inv_std · w + b), h as
// RMSNorm's (the residual add rounded), mean and variance in fp32 (two
// passes: the centred sum of squares, as torch's Welford is, not E[h²] - E[h]²),
// the weight and bias applied in fp32 and the result cast once, as torch's
// LayerNorm does for half and bfloat16 inputs. The bias is optional.

// ------------------------------------------------------------------ RoPE
// A rotary embedding turns each pair (a, b) of a head's first rot_dim
// features by the angle pos · inv_freq[i] (i the pair's index):
//   (a, b) -> (a cos - b sin, a sin + b cos)
// The angle is the fp32 product, and cos and sin are taken of it, as
// transformers computes them (its rotary embedding runs in fp32); the
// backward turns by minus the angle. Which features pair is the layout:
struct RopeHalf {
  // transformers' rotate_half (Llama, Mistral, Mixtral, Phi-3 checkpoints):
  // pair i is (i, i + rot_dim / 2).
  static constexpr const char* kName = "half";
  TL_HOST_DEVICE static constexpr int first(int i, int) { return i; }
  TL_HOST_DEVICE static constexpr int second(int i, int rot_dim) { return i + rot_dim / 2; }
};
struct RopeInterleaved {
  // Meta's reference code and BLT (view_as_complex): pair i is (2i, 2i + 1).
  static constexpr const char* kName = "interleaved";
  TL_HOST_DEVICE static constexpr int first(int i, int) { return 2 * i; }
  TL_HOST_DEVICE static constexpr int second(int i, int) { return 2 * i + 1; }
};

template <class L>
concept RopeLayout = requires(int i) {
  { L::kName } -> std::convertible_to<const char*>;
  { L::first(i, i) } -> std::same_as<int>;
  { L::second(i, i) } -> std::same_as<int>;
};

// The frequencies: inv_freq[i] = 1 / theta^(2i / rot_dim), then the
// config's rope_scaling. transformers' names: "default" (none), "linear"
// (inv_freq / factor: positions interpolated), "llama3" (Llama 3.1's
// wavelength bands: long wavelengths / factor, short ones kept, a smooth
// blend between). Any other type (dynamic, yarn, longrope, ...) is refused
// by name: its cos/sin depend on more than a frequency table.
enum class RopeType : std::uint8_t { kDefault, kLinear, kLlama3 };

struct RopeConfig {
  float theta = 10000.0f;  // config.rope_theta
  RopeType type = RopeType::kDefault;
  float factor = 1.0f;                      // linear, llama3
  float low_freq_factor = 1.0f;             // llama3
  float high_freq_factor = 4.0f;            // llama3
  float original_max_position = 8192.0f;    // llama3: original_max_position_embeddings

  // rope_scaling's "rope_type" (or older "type") to a RopeType; a null or
  // empty name is "default".
  static Status type_from_name(const char* name, RopeType* out) {
    if (!name || !*name || std::strcmp(name, "default") == 0) *out = RopeType::kDefault;
    else if (std::strcmp(name, "linear") == 0) *out = RopeType::kLinear;
    else if (std::strcmp(name, "llama3") == 0) *out = RopeType::kLlama3;
    else {
      return Status::argument(StatusCode::unsupported, "rope_scaling.rope_type",
                              "\"default\", \"linear\" or \"llama3\"", "\"%s\"", name);
    }
    return Status::ok();
  }
  Status validate() const {
    if (!(theta > 1.0f) || !std::isfinite(theta)) {
      return Status::argument(StatusCode::invalid_argument, "rope_theta", "a finite theta > 1", "%g",
                              static_cast<double>(theta));
    }
    if (type != RopeType::kDefault && (!(factor > 0.0f) || !std::isfinite(factor))) {
      return Status::argument(StatusCode::invalid_argument, "rope_scaling.factor", "a finite factor > 0", "%g",
                              static_cast<double>(factor));
    }
    if (type == RopeType::kLlama3 &&
        (!(high_freq_factor > low_freq_factor) || !(low_freq_factor > 0.0f) || !(original_max_position > 0.0f))) {
      return Status::argument(StatusCode::invalid_argument, "rope_scaling",
                              "high_freq_factor > low_freq_factor > 0 and original_max_position_embeddings > 0",
                              "low %g, high %g, original %g", static_cast<double>(low_freq_factor),
                              static_cast<double>(high_freq_factor), static_cast<double>(original_max_position));
    }
    return Status::ok();
  }
};

// The rot_dim / 2 frequencies into `out` (host), step by step in fp32 as
// transformers' _compute_*_rope_parameters computes them, so that the
// tables agree bit for bit where the host's powf does. Called once when a
// model is set up; the kernels read the table from device memory.
inline Status rope_inv_freq(const RopeConfig& c, int rot_dim, float* out) {
  TL_RETURN_IF_ERROR(c.validate());
  if (rot_dim <= 0 || rot_dim % 2 != 0) {
    return Status::argument(StatusCode::invalid_argument, "rot_dim", "an even rot_dim > 0", "%d", rot_dim);
  }
  if (!out) return Status::argument(StatusCode::null_pointer, "out", "a host array of rot_dim / 2 floats", "null");
  const float two_pi = 6.283185307179586f;
  for (int i = 0; i < rot_dim / 2; ++i) {
    float f = 1.0f / std::pow(c.theta, static_cast<float>(2 * i) / static_cast<float>(rot_dim));
    if (c.type == RopeType::kLinear) f /= c.factor;
    if (c.type == RopeType::kLlama3) {
      const float low_wavelen = c.original_max_position / c.low_freq_factor;
      const float high_wavelen = c.original_max_position / c.high_freq_factor;
      const float wavelen = two_pi / f;
      const float scaled = wavelen > low_wavelen ? f / c.factor : f;
      if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {  // the band between: a blend
        const float smooth =
            (c.original_max_position / wavelen - c.low_freq_factor) / (c.high_freq_factor - c.low_freq_factor);
        f = (1.0f - smooth) * scaled / c.factor + smooth * scaled;
      } else {
        f = scaled;
      }
    }
    out[i] = f;
  }
  return Status::ok();
}

// ------------------------------------------------------------------ MLP activations
// Gated (Llama's SwiGLU: out = act(gate) · up) or plain (GPT-2: out =
// act(x + bias)). Each activation gives its value and derivative in fp32;
// the product is rounded once to the storage type.
struct Silu {
  static constexpr const char* kName = "silu";
  TL_HOST_DEVICE static float value(float x) { return x / (1.0f + expf(-x)); }
  TL_HOST_DEVICE static float derivative(float x) {
    const float s = 1.0f / (1.0f + expf(-x));
    return s * (1.0f + x * (1.0f - s));
  }
};
// GPT-2's gelu_new (and torch's gelu(approximate="tanh")):
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³))).
struct GeluTanh {
  static constexpr const char* kName = "gelu_tanh";
  static constexpr float kC = 0.7978845608028654f;  // sqrt(2 / pi)
  static constexpr float kA = 0.044715f;
  TL_HOST_DEVICE static float value(float x) { return 0.5f * x * (1.0f + tanhf(kC * (x + kA * x * x * x))); }
  TL_HOST_DEVICE static float derivative(float x) {
    const float t = tanhf(kC * (x + kA * x * x * x));
    return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kC * (1.0f + 3.0f * kA * x * x);
  }
};

template <class A>
concept ActivationPolicy = requires(float v) {
  { A::kName } -> std::convertible_to<const char*>;
  { A::value(v) } -> std::same_as<float>;
  { A::derivative(v) } -> std::same_as<float>;
};

// ------------------------------------------------------------------ the decoder layer
// The layer's dimensions (io::ModelConfig gives them for a checkpoint).
struct DecoderShape {
  int hidden = 0, heads = 0, kv_heads = 0, head_dim = 0;
  int rot_dim = 0;      // rotated features a head (0: all; Phi-3's partial_rotary_factor)
  int ffn = 0;          // intermediate_size (of each expert for Mixtral)
  int experts = 0;      // 0: a dense SwiGLU MLP; Mixtral: num_local_experts
  int top_k = 0;        // Mixtral: num_experts_per_tok
  int window = 0;       // Mistral's sliding_window (0: none)
  float eps = 1e-5f;    // rms_norm_eps
  std::int64_t q_dim() const { return std::int64_t{heads} * head_dim; }
  std::int64_t kv_dim() const { return std::int64_t{kv_heads} * head_dim; }
  std::int64_t qkv_dim() const { return q_dim() + 2 * kv_dim(); }
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
