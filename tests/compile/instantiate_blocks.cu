// Compile tier: the backbone blocks, every policy and dtype (both vector
// widths are instantiated behind each run()): the norms, RoPE's layouts,
// the activations gated and plain; the decoder layer's own kernel (its
// other kernels are the attention core's, instantiated in its units, and
// the blocks' here).
// The blocks alone: tokenless.cuh would compile every other component's kernels here too.
#include <tokenless/blocks/activation.cuh>
#include <tokenless/blocks/decoder.cuh>
#include <tokenless/blocks/moe.cuh>
#include <tokenless/blocks/norm.cuh>
#include <tokenless/blocks/rope.cuh>
#include <tokenless/blocks/tokens.cuh>
#include <tokenless/core/tuning.hpp>

namespace bk = tokenless::blocks;
static_assert(tokenless::TuningSelector<bk::tuning_for>);
static_assert(bk::NormPolicy<bk::NormThenCast> && bk::NormPolicy<bk::ScaleInFp32>);
static_assert(bk::RopeLayout<bk::RopeHalf> && bk::RopeLayout<bk::RopeInterleaved>);
static_assert(bk::ActivationPolicy<bk::Silu> && bk::ActivationPolicy<bk::GeluTanh>);
static_assert(tokenless::Operation<bk::DecoderLayer<__nv_bfloat16>> &&
              tokenless::Operation<bk::DecoderLayerBackward<__nv_bfloat16>> &&
              tokenless::Operation<bk::DecoderLayer<__half>> && tokenless::Operation<bk::DecoderLayerBackward<__half>>);
template __global__ void tokenless::kernel_entry<bk::detail::EmptyCacheKernel>(bk::detail::EmptyCacheKernel::Params);

template <class P, class T>
void instantiate_rms_norm() {
  static_assert(tokenless::Operation<bk::RmsNorm<P, T>> && tokenless::Operation<bk::RmsNormBackward<P, T>>);
  (void)&bk::RmsNorm<P, T>::run;
  (void)&bk::RmsNormBackward<P, T>::run;
}
template void instantiate_rms_norm<bk::NormThenCast, float>();
template void instantiate_rms_norm<bk::NormThenCast, __half>();
template void instantiate_rms_norm<bk::NormThenCast, __nv_bfloat16>();
template void instantiate_rms_norm<bk::ScaleInFp32, float>();
template void instantiate_rms_norm<bk::ScaleInFp32, __half>();
template void instantiate_rms_norm<bk::ScaleInFp32, __nv_bfloat16>();

template <class T>
void instantiate_layer_norm() {
  static_assert(tokenless::Operation<bk::LayerNorm<T>> && tokenless::Operation<bk::LayerNormBackward<T>>);
  (void)&bk::LayerNorm<T>::run;
  (void)&bk::LayerNormBackward<T>::run;
}
template void instantiate_layer_norm<float>();
template void instantiate_layer_norm<__half>();
template void instantiate_layer_norm<__nv_bfloat16>();

template <class L, class T>
void instantiate_rope() {
  static_assert(tokenless::Operation<bk::Rope<L, T>>);
  (void)&bk::Rope<L, T>::run;
  (void)&bk::Rope<L, T>::run_backward;
}
template void instantiate_rope<bk::RopeHalf, float>();
template void instantiate_rope<bk::RopeHalf, __half>();
template void instantiate_rope<bk::RopeHalf, __nv_bfloat16>();
template void instantiate_rope<bk::RopeInterleaved, float>();
template void instantiate_rope<bk::RopeInterleaved, __nv_bfloat16>();

template <class A, class T>
void instantiate_activation() {
  static_assert(tokenless::Operation<bk::Gated<A, T>> && tokenless::Operation<bk::GatedBackward<A, T>>);
  static_assert(tokenless::Operation<bk::Activation<A, T>> && tokenless::Operation<bk::ActivationBackward<A, T>>);
  (void)&bk::Gated<A, T>::run;
  (void)&bk::GatedBackward<A, T>::run;
  (void)&bk::Activation<A, T>::run;
  (void)&bk::ActivationBackward<A, T>::run;
}
template void instantiate_activation<bk::Silu, float>();
template void instantiate_activation<bk::Silu, __half>();
template void instantiate_activation<bk::Silu, __nv_bfloat16>();
template void instantiate_activation<bk::GeluTanh, float>();
template void instantiate_activation<bk::GeluTanh, __nv_bfloat16>();

template <class T>
void instantiate_moe() {
  static_assert(tokenless::Operation<bk::GroupedGemm<T>> && tokenless::Operation<bk::Moe<bk::Silu, T>> &&
                tokenless::Operation<bk::MoeBackward<bk::Silu, T>> && tokenless::Operation<bk::MoeBalanceLoss<T>>);
  (void)&bk::GroupedGemm<T>::run;
  (void)&bk::Moe<bk::Silu, T>::run;
  (void)&bk::MoeBackward<bk::Silu, T>::run;
  (void)&bk::MoeBalanceLoss<T>::run;
}
template void instantiate_moe<float>();
template void instantiate_moe<__half>();
template void instantiate_moe<__nv_bfloat16>();

template <class T>
void instantiate_tokens() {
  static_assert(tokenless::Operation<bk::Embedding<T>> && tokenless::Operation<bk::EmbeddingBackward<T>> &&
                tokenless::Operation<bk::Argmax<T>>);
  (void)&bk::Embedding<T>::run;
  (void)&bk::EmbeddingBackward<T>::run;
  (void)&bk::Argmax<T>::run;
}
template void instantiate_tokens<float>();
template void instantiate_tokens<__half>();
template void instantiate_tokens<__nv_bfloat16>();
