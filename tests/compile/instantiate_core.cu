// Compile tier: instantiates every policy combination the docs promise for
// the core operations, through their public launch APIs. Built by nvcc for
// sm_80 and sm_90 with spills and local memory as errors, and checked against
// budget.txt (registers, shared memory) by ptxas_check.py. Also compiled on
// the CPU executor (TOKENLESS_EMU).
#include <tokenless/tokenless.cuh>

namespace rr = tokenless::row_reduce;
static_assert(tokenless::TuningSelector<rr::tuning_for>);
static_assert(tokenless::TuningSelector<tokenless::blas::tuning_for>);

template <class P, class T>
void instantiate_row_reduce() {
  static_assert(tokenless::Operation<rr::Forward<P, T>> && tokenless::Operation<rr::Backward<P, T>>);
  (void)&rr::Forward<P, T>::run;
  (void)&rr::Backward<P, T>::run;
}

#define TL_ROW_REDUCE_ALL_DTYPES(P)            \
  template void instantiate_row_reduce<P, float>();       \
  template void instantiate_row_reduce<P, __half>();      \
  template void instantiate_row_reduce<P, __nv_bfloat16>();
TL_ROW_REDUCE_ALL_DTYPES(rr::SumPolicy)
TL_ROW_REDUCE_ALL_DTYPES(rr::SumSquaresPolicy)
TL_ROW_REDUCE_ALL_DTYPES(rr::MaxPolicy)

// Block primitives at every block size kernels use.
template <int kBlock>
__global__ void block_primitives_kernel(const float* in, float* out, int* idx) {
  using R = tokenless::block::Reduce<float, kBlock>;
  using S = tokenless::block::Scan<float, kBlock>;
  using A = tokenless::block::ArgMaxReduce<float, kBlock>;
  __shared__ union {
    typename R::TempStorage r;
    typename S::TempStorage s;
    typename A::TempStorage a;
  } smem;
  const float v = in[blockIdx.x * kBlock + threadIdx.x];
  float total;
  const float r = R::reduce(v, tokenless::Sum{}, smem.r);
  __syncthreads();
  const float s = S::exclusive(v, tokenless::Sum{}, 0.0f, total, smem.s);
  __syncthreads();
  const auto a = A::reduce({v, static_cast<int>(threadIdx.x)}, smem.a);
  out[blockIdx.x * kBlock + threadIdx.x] = r + s + total;
  if (threadIdx.x == 0) idx[blockIdx.x] = a.index;
}
template __global__ void block_primitives_kernel<32>(const float*, float*, int*);
template __global__ void block_primitives_kernel<128>(const float*, float*, int*);
template __global__ void block_primitives_kernel<256>(const float*, float*, int*);
template __global__ void block_primitives_kernel<512>(const float*, float*, int*);
template __global__ void block_primitives_kernel<1024>(const float*, float*, int*);

// The device-wide facade for the element types the library scans and sorts.
template <class T>
void instantiate_scans() {
  (void)&tokenless::device::exclusive_sum<T>;
  (void)&tokenless::device::inclusive_sum<T>;
  (void)&tokenless::device::inclusive_max<T>;
  (void)&tokenless::device::reduce_sum<T>;
}
template void instantiate_scans<std::int32_t>();
template void instantiate_scans<std::int64_t>();
template void instantiate_scans<float>();
template void instantiate_scans<double>();
void instantiate_sorts() {
  (void)&tokenless::device::sort_pairs<std::uint32_t, std::int32_t>;
  (void)&tokenless::device::sort_pairs<std::int32_t, std::int32_t>;
}

// The fused optimizer for every parameter storage, with gradients of the
// same type and fp32 ones (a byte head's gradients into bf16 weights).
template <class T, class G>
void instantiate_adamw() {
  static_assert(tokenless::Operation<tokenless::optim::AdamW<T, G>>);
  (void)&tokenless::optim::AdamW<T, G>::run;
  (void)&tokenless::optim::AdamW<T, G>::reset;
}
template void instantiate_adamw<float, float>();
template void instantiate_adamw<__nv_bfloat16, __nv_bfloat16>();
template void instantiate_adamw<__half, __half>();
template void instantiate_adamw<__nv_bfloat16, float>();
static_assert(tokenless::TuningSelector<tokenless::optim::tuning_for>);

#if defined(TOKENLESS_BACKEND_EMU)
int main() { return 0; }
#endif
