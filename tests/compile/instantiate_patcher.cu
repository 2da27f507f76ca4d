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

// Every rule with fp32 logits (entropies for the token rules), the entropy
// rules with 16-bit logits too; every streamable rule in the streaming step.
template <class... Rules>
void instantiate_rules() {
  (instantiate<Rules, float>(), ...);
}
template <class... Rules>
void instantiate_16bit_logits() {
  (instantiate<Rules, __nv_bfloat16>(), ...);
  (instantiate<Rules, __half>(), ...);
}
template <class Rule>
void instantiate_stream() {
  static_assert(tokenless::Operation<pt::StreamStep<Rule>>);
  (void)&pt::StreamStep<Rule>::run;
}
template <class... Rules>
void instantiate_streams() {
  (instantiate_stream<Rules>(), ...);
}
template void instantiate_rules<pt::EntropyGlobal, pt::EntropyMonotonic, pt::EntropyCombined, pt::EntropyTopK,
                                pt::StaticPatches, pt::BytePatches, pt::SpacePatches>();
template void instantiate_16bit_logits<pt::EntropyGlobal, pt::EntropyMonotonic, pt::EntropyCombined, pt::EntropyTopK>();
template void instantiate_streams<pt::EntropyGlobal, pt::EntropyMonotonic, pt::EntropyCombined, pt::StaticPatches,
                                  pt::BytePatches, pt::SpacePatches>();

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
