// Compile tier: the attention core's operations for every variant, dtype and
// head dim the docs promise (each at least once: every variant at head dim
// 64 in both dtypes, and causal and soft-capped at 96 and 128), through
// their public APIs, in two units (instantiate_attention_{a,b}.cu).
#include <tokenless/tokenless.cuh>

namespace at = tokenless::attention;
static_assert(tokenless::TuningSelector<at::tuning_for>);

template <class V, class T, class HD>
void instantiate_attention() {
  static_assert(at::Variant<V>);
  static_assert(tokenless::Operation<at::Forward<V, T, HD>> && tokenless::Operation<at::Backward<V, T, HD>>);
  (void)&at::Forward<V, T, HD>::run;
  (void)&at::Backward<V, T, HD>::run;
}

#define TL_ATTENTION_BOTH_DTYPES(V, HD)                            \
  template void instantiate_attention<V, __nv_bfloat16, HD>(); \
  template void instantiate_attention<V, __half, HD>();

template <class V, class T, class HD>
void instantiate_decode() {
  static_assert(tokenless::Operation<at::Decode<V, T, HD>>);
  (void)&at::Decode<V, T, HD>::run;
}
template <class T>
void instantiate_cache() {
  static_assert(tokenless::Operation<at::KvCacheAppend<T>> && tokenless::Operation<at::KvCacheRollback>);
  (void)&at::KvCacheAppend<T>::run;
  (void)&at::KvCacheRollback::run;
}
