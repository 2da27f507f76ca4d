// Compile tier: the backbone blocks (RMSNorm so far), every norm policy and
// dtype (both vector widths are instantiated behind each run()).
#include <tokenless/tokenless.cuh>

namespace bk = tokenless::blocks;
static_assert(tokenless::TuningSelector<bk::tuning_for>);
static_assert(bk::NormPolicy<bk::NormThenCast> && bk::NormPolicy<bk::ScaleInFp32>);

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
