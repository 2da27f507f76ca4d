// Compile tier: CoCoMix's sparse concepts, every activation, mixing policy
// and dtype (both vector widths are instantiated behind each run()).
#include <tokenless/tokenless.cuh>

namespace bn = tokenless::bottleneck;

template <class T>
void instantiate_concepts() {
  static_assert(tokenless::Operation<bn::SparseDecode<T>> && tokenless::Operation<bn::SparseDecodeBackward<T>> &&
                tokenless::Operation<bn::ConceptLoss<T>> && tokenless::Operation<bn::SaeNormalize<T>>);
  (void)&bn::SaeNormalize<T>::run;
  (void)&bn::SaeNormalizeBackward<T>::run;
  (void)&bn::TopK<bn::TopKRaw, T>::run;
  (void)&bn::TopK<bn::TopKRelu, T>::run;
  (void)&bn::TopKBackward<bn::TopKRaw, T>::run;
  (void)&bn::TopKBackward<bn::TopKRelu, T>::run;
  (void)&bn::SparseDecode<T>::run;
  (void)&bn::SparseDecodeBackward<T>::run;
  (void)&bn::ConceptLoss<T>::run;
  (void)&bn::Mix<bn::MixInterleave, T>::run;
  (void)&bn::Mix<bn::MixAdd, T>::run;
  (void)&bn::MixBackward<bn::MixInterleave, T>::run;
  (void)&bn::MixBackward<bn::MixAdd, T>::run;
  (void)&bn::ColumnSum<T>::run;
  (void)&bn::AttributionLabels<T>::run;
  if constexpr (!std::is_same_v<T, float>) {  // the encode's GEMM is on tensor cores: fp16 and bf16
    (void)&bn::SaeEncode<bn::TopKRelu, T>::run;
    (void)&bn::SaeEncode<bn::TopKRaw, T>::run;
  }
}
static_assert(bn::TopKActivation<bn::TopKRaw> && bn::TopKActivation<bn::TopKRelu>);
static_assert(bn::MixPolicy<bn::MixInterleave> && bn::MixPolicy<bn::MixAdd>);
template void instantiate_concepts<float>();
template void instantiate_concepts<__half>();
template void instantiate_concepts<__nv_bfloat16>();
