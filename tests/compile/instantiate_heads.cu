// Compile tier: the prediction heads, every storage type: the fused linear
// cross-entropy's forward and backward (their kernels, and the column sums
// they share with the bottleneck), and DPO's loss.
// The heads alone: tokenless.cuh would compile every other component's kernels here too.
#include <tokenless/core/tuning.hpp>
#include <tokenless/heads/dpo.cuh>
#include <tokenless/heads/linear_cross_entropy.cuh>

namespace hd = tokenless::heads;
static_assert(tokenless::TuningSelector<hd::tuning_for>);

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
