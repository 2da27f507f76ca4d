// Compile tier: H-Net's dechunk, forward, backward and step, every dtype
// (both vector widths are instantiated behind each run()).
#include <tokenless/tokenless.cuh>

namespace bn = tokenless::bottleneck;

template <class T>
void instantiate_dechunk() {
  static_assert(tokenless::Operation<bn::Dechunk<T>> && tokenless::Operation<bn::DechunkBackward<T>> &&
                tokenless::Operation<bn::DechunkStep<T>>);
  (void)&bn::Dechunk<T>::run;
  (void)&bn::DechunkBackward<T>::run;
  (void)&bn::DechunkStep<T>::run;
}
template void instantiate_dechunk<float>();
template void instantiate_dechunk<__half>();
template void instantiate_dechunk<__nv_bfloat16>();
