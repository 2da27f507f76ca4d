#pragma once
// The one launch path every kernel goes through, so the same kernel source
// runs under nvcc or on the CPU SIMT executor.
#include <tokenless/core/config.hpp>
#include <tokenless/core/device.hpp>
#include <tokenless/core/status.hpp>

#include <utility>

#if !defined(TOKENLESS_HAS_KERNELS)
#error "tokenless/core/launch.cuh needs nvcc, or a host compiler with TOKENLESS_EMU defined"
#endif

namespace tokenless {

struct LaunchConfig {
  dim3 grid;
  dim3 block;
  std::size_t smem_bytes = 0;
  cudaStream_t stream = nullptr;
};

// Launches `kernel` and returns the launch status. Does not synchronise.
template <class... P, class... A>
Status launch(void (*kernel)(P...), const LaunchConfig& cfg, A&&... args) {
#if defined(TOKENLESS_BACKEND_CUDA)
  kernel<<<cfg.grid, cfg.block, cfg.smem_bytes, cfg.stream>>>(std::forward<A>(args)...);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) {
    return Status::error(StatusCode::cuda_error, "kernel launch failed: %s (%s)", cudaGetErrorName(e),
                         cudaGetErrorString(e));
  }
  return Status::ok();
#else
  cudaError_t e = emu::launch(kernel, cfg.grid, cfg.block, cfg.smem_bytes, cfg.stream, std::forward<A>(args)...);
  if (e != cudaSuccess) {
    return Status::error(StatusCode::cuda_error, "kernel launch failed on the CPU executor: %s",
                         emu::last_report().message.c_str());
  }
  return Status::ok();
#endif
}

// Lets `kernel` use more than 48 KiB of dynamic shared memory.
template <class... P>
Status set_max_dynamic_smem(void (*kernel)(P...), std::size_t bytes) {
  TL_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  return Status::ok();
}

// Blocks of `kernel` that fit on one SM at once: a persistent grid of
// sm_count times this runs in a single wave, with no partial last wave. The
// executor runs one block at a time: 1.
template <class... P>
int blocks_per_sm(void (*kernel)(P...), int block_threads, std::size_t smem_bytes) {
#if defined(TOKENLESS_BACKEND_CUDA)
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, block_threads, smem_bytes) != cudaSuccess) {
    (void)cudaGetLastError();
    return 1;
  }
  return n > 0 ? n : 1;
#else
  (void)kernel;
  (void)block_threads;
  (void)smem_bytes;
  return 1;
#endif
}

// The block's dynamic shared memory (`extern __shared__` on the GPU).
template <class T>
TL_DEVICE TL_FORCEINLINE T* dynamic_smem() {
#if defined(TOKENLESS_BACKEND_CUDA)
  extern __shared__ __align__(16) unsigned char tokenless_dynamic_smem[];
  return reinterpret_cast<T*>(tokenless_dynamic_smem);
#else
  return static_cast<T*>(emu::dynamic_smem());
#endif
}

// Linear index of the calling thread within its block.
TL_DEVICE TL_FORCEINLINE unsigned thread_rank() {
  return (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
}

}  // namespace tokenless
