// Compile tier: the concept bottleneck's pooling (every policy) and
// replication, forward and backward, and pooling into a projection, every
// dtype (both vector widths are instantiated behind each run()).
#include <tokenless/tokenless.cuh>

namespace bn = tokenless::bottleneck;
static_assert(tokenless::TuningSelector<bn::tuning_for>);

template <class P, class T>
void instantiate_pool() {
  static_assert(bn::PoolPolicy<P>);
  static_assert(tokenless::Operation<bn::SegmentPool<P, T>> && tokenless::Operation<bn::SegmentPoolBackward<P, T>>);
  (void)&bn::SegmentPool<P, T>::run;
  (void)&bn::SegmentPoolBackward<P, T>::run;
  (void)&bn::PoolProject<P, T>::run;
  (void)&bn::PoolProjectBackward<P, T>::run;
}
template <class T>
void instantiate_replicate() {
  static_assert(tokenless::Operation<bn::Replicate<T>> && tokenless::Operation<bn::ReplicateBackward<T>>);
  (void)&bn::Replicate<T>::run;
  (void)&bn::ReplicateBackward<T>::run;
}

#define TL_POOL_ALL_DTYPES(P)                           \
  template void instantiate_pool<P, float>();           \
  template void instantiate_pool<P, __half>();          \
  template void instantiate_pool<P, __nv_bfloat16>();
TL_POOL_ALL_DTYPES(bn::PoolSum)
TL_POOL_ALL_DTYPES(bn::PoolMean)
TL_POOL_ALL_DTYPES(bn::PoolMax)
TL_POOL_ALL_DTYPES(bn::PoolMin)
TL_POOL_ALL_DTYPES(bn::PoolFirst)
TL_POOL_ALL_DTYPES(bn::PoolLast)
template void instantiate_replicate<float>();
template void instantiate_replicate<__half>();
template void instantiate_replicate<__nv_bfloat16>();
