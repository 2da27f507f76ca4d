// Compile tier: the prediction heads, every storage type: the fused linear
// cross-entropy's forward and backward (their kernels, and the column sums
// they share with the bottleneck), DPO's loss, the byte head (both norm
// policies; the backward's norm and GEMM passes), DeepSeek-V3's module
// inputs (forward and backward), the speculative acceptance, and Meta's
// multi-token heads and DeepSeek-V3's modules as training operations (their kernels; the blocks' own are the blocks unit's:
// head dim 64 only here).
// The heads alone: tokenless.cuh would compile every other component's kernels here too.
#include <tokenless/core/tuning.hpp>
#include <tokenless/heads/byte_head.cuh>
#include <tokenless/heads/dpo.cuh>
#include <tokenless/heads/mtp.cuh>
#include <tokenless/heads/multi_token.cuh>
#include <tokenless/heads/speculative.cuh>
#include <tokenless/heads/linear_cross_entropy.cuh>

namespace hd = tokenless::heads;
static_assert(tokenless::TuningSelector<hd::tuning_for>);
static_assert(tokenless::TuningSelector<hd::byte_head_tuning_for>);

template <class T>
void instantiate_linear_cross_entropy() {
  static_assert(tokenless::Operation<hd::LinearCrossEntropy<T>> &&
                tokenless::Operation<hd::LinearCrossEntropyBackward<T>>);
  (void)&hd::LinearCrossEntropy<T>::run;
  (void)&hd::LinearCrossEntropyBackward<T>::run;
}
template void instantiate_linear_cross_entropy<float>();
template void instantiate_linear_cross_entropy<__half>();
template void instantiate_linear_cross_entropy<__nv_bfloat16>();
static_assert(tokenless::Operation<hd::DpoLoss>);
[[maybe_unused]] static auto* const dpo_run = &hd::DpoLoss::run;

template <class P, class T>
void instantiate_byte_head() {
  static_assert(tokenless::Operation<hd::ByteHead<P, T>> && tokenless::Operation<hd::ByteHeadBackward<P, T>>);
  (void)&hd::ByteHead<P, T>::run;
  (void)&hd::ByteHeadBackward<P, T>::run;
}
template void instantiate_byte_head<tokenless::blocks::NormThenCast, float>();
template void instantiate_byte_head<tokenless::blocks::NormThenCast, __half>();
template void instantiate_byte_head<tokenless::blocks::NormThenCast, __nv_bfloat16>();
template void instantiate_byte_head<tokenless::blocks::ScaleInFp32, __nv_bfloat16>();

template <class P, class T>
void instantiate_mtp() {
  static_assert(tokenless::Operation<hd::MtpInputs<P, T>> && tokenless::Operation<hd::MtpInputsBackward<P, T>>);
  (void)&hd::MtpInputs<P, T>::run;
  (void)&hd::MtpInputsBackward<P, T>::run;
}
template void instantiate_mtp<tokenless::blocks::NormThenCast, float>();
template void instantiate_mtp<tokenless::blocks::NormThenCast, __half>();
template void instantiate_mtp<tokenless::blocks::NormThenCast, __nv_bfloat16>();
template void instantiate_mtp<tokenless::blocks::ScaleInFp32, __nv_bfloat16>();
static_assert(tokenless::Operation<hd::SpeculativeAccept>);
[[maybe_unused]] static auto* const accept_run = &hd::SpeculativeAccept::run;
using MultiTokenOp = hd::MultiTokenHeads<__nv_bfloat16, tokenless::blocks::NormThenCast, tokenless::blocks::RopeHalf,
                                          tokenless::blocks::Silu, tokenless::attention::HeadDims<64>>;
static_assert(tokenless::Operation<MultiTokenOp>);
[[maybe_unused]] static auto* const multi_token_run = &MultiTokenOp::run;
using MtpModulesOp = hd::MtpModules<__nv_bfloat16, tokenless::blocks::NormThenCast, tokenless::blocks::RopeHalf,
                                    tokenless::blocks::Silu, tokenless::attention::HeadDims<64>>;
static_assert(tokenless::Operation<MtpModulesOp>);
[[maybe_unused]] static auto* const mtp_modules_run = &MtpModulesOp::run;
