// Planted memory bugs for the sanitizer builds of the executor. Each mode is a
// separate ctest test that expects the sanitizer's report in the output:
//   oob_global   one element past a cudaMalloc'd buffer   -> ASan heap-buffer-overflow
//   oob_shared   one element past a __shared__ array      -> ASan global-buffer-overflow
//   race_shared  two warps, no barrier between write/read -> TSan data race (thread mode)
//   correct      the same kernels without the bugs        -> no report, exit 0
#include <tokenless/tokenless.cuh>

#include <cstdio>
#include <cstring>

namespace {

__global__ void global_kernel(float* out, int n, int extra) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n + extra) out[i] = 1.0f;  // extra == 1 writes one past the end
}

__global__ void shared_kernel(float* out, int extra) {
  __shared__ float s[64];
  const int t = static_cast<int>(threadIdx.x);
  s[t] = static_cast<float>(t);
  __syncthreads();
  const float* p = s;  // through a pointer, as kernels index shared buffers: only ASan can see the bound
  out[t] = p[t + extra];  // extra == 1: thread 63 reads s[64]
}

template <bool kBarrier>
__global__ void exchange_kernel(int* out) {
  __shared__ int s[64];
  const int t = static_cast<int>(threadIdx.x);
  s[t] = t;
  if constexpr (kBarrier) __syncthreads();
  out[t] = s[63 - t];  // warp 0 reads what warp 1 wrote
}

int run(const char* mode) {
  float* buf = nullptr;
  int* ibuf = nullptr;
  cudaMalloc(&buf, 64 * sizeof(float));
  cudaMalloc(&ibuf, 64 * sizeof(int));
  tokenless::Status s;
  if (!std::strcmp(mode, "oob_global")) {
    s = tokenless::launch(global_kernel, {dim3(1), dim3(128)}, buf, 64, 1);
  } else if (!std::strcmp(mode, "oob_shared")) {
    s = tokenless::launch(shared_kernel, {dim3(1), dim3(64)}, buf, 1);
  } else if (!std::strcmp(mode, "race_shared")) {
    s = tokenless::launch(exchange_kernel<false>, {dim3(1), dim3(64)}, ibuf);
  } else if (!std::strcmp(mode, "correct")) {
    s = tokenless::launch(global_kernel, {dim3(1), dim3(128)}, buf, 64, 0);
    if (s) s = tokenless::launch(shared_kernel, {dim3(1), dim3(64)}, buf, 0);
    if (s) s = tokenless::launch(exchange_kernel<true>, {dim3(1), dim3(64)}, ibuf);
  } else {
    std::fprintf(stderr, "usage: planted oob_global|oob_shared|race_shared|correct\n");
    return 2;
  }
  std::printf("%s: %s\n", mode, s.message());
  cudaFree(buf);
  cudaFree(ibuf);
  return s ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) { return run(argc > 1 ? argv[1] : ""); }
