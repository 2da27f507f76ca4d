// Compile tier: the patcher for every boundary policy, and for fp32, bf16 and
// fp16 logits with the entropy policies.
#include <tokenless/tokenless.cuh>

namespace pt = tokenless::patcher;
namespace rt = tokenless::router;

template <class Rule, class LogitT>
void instantiate() {
  static_assert(tokenless::Operation<pt::Patcher<Rule, LogitT>>);
  (void)&pt::Patcher<Rule, LogitT>::run;
}

// Every component's tuning selector is concept-checked.
static_assert(tokenless::TuningSelector<pt::tuning_for>);
static_assert(tokenless::TuningSelector<rt::tuning_for>);
static_assert(tokenless::TuningSelector<tokenless::entropy_model::tuning_for>);
static_assert(tokenless::Operation<pt::Calibrate>);
static_assert(tokenless::Operation<rt::RatioLoss>);
static_assert(tokenless::Operation<tokenless::entropy_model::NGramEntropy>);

template void instantiate<pt::EntropyGlobal, float>();
template void instantiate<pt::EntropyGlobal, __nv_bfloat16>();
template void instantiate<pt::EntropyGlobal, __half>();
template void instantiate<pt::EntropyMonotonic, float>();
template void instantiate<pt::EntropyMonotonic, __nv_bfloat16>();
template void instantiate<pt::EntropyCombined, float>();
template void instantiate<pt::EntropyCombined, __nv_bfloat16>();
template void instantiate<pt::EntropyTopK, float>();
template void instantiate<pt::EntropyTopK, __nv_bfloat16>();
template void instantiate<pt::EntropyTopK, __half>();
template void instantiate<pt::StaticPatches, float>();
template void instantiate<pt::BytePatches, float>();
template void instantiate<pt::SpacePatches, float>();

// The weight-free entropy source and threshold calibration.
template <class Rule>
void instantiate_stream() {
  static_assert(tokenless::Operation<pt::StreamStep<Rule>>);
  (void)&pt::StreamStep<Rule>::run;
}
template void instantiate_stream<pt::EntropyGlobal>();
template void instantiate_stream<pt::EntropyMonotonic>();
template void instantiate_stream<pt::EntropyCombined>();
template void instantiate_stream<pt::StaticPatches>();
template void instantiate_stream<pt::BytePatches>();
template void instantiate_stream<pt::SpacePatches>();

template <class T>
void instantiate_router() {
  static_assert(tokenless::Operation<rt::CosineRouterForward<T>> && tokenless::Operation<rt::CosineRouterBackward<T>> &&
                tokenless::Operation<rt::CosineRouterStep<T>>);
  (void)&rt::CosineRouterForward<T>::run;
  (void)&rt::CosineRouterBackward<T>::run;
  (void)&rt::CosineRouterStep<T>::run;
}
template void instantiate_router<float>();
template void instantiate_router<__half>();
template void instantiate_router<__nv_bfloat16>();

void instantiate_sources() {
  (void)&rt::RatioLoss::run;
  (void)&tokenless::entropy_model::NGramEntropy::run;
  (void)&pt::Calibrate::run;
}

#if defined(TOKENLESS_BACKEND_EMU)
int main() { return 0; }
#endif
