#pragma once
// Which backend this translation unit compiles for, and the CUDA types it uses.
//
//   TOKENLESS_BACKEND_CUDA  compiled by nvcc: kernels run on the GPU.
//   TOKENLESS_BACKEND_EMU   a host compiler with TOKENLESS_EMU defined: kernels
//                           run on the CPU SIMT executor (tokenless/emu).
//   TOKENLESS_BACKEND_HOST  a host compiler otherwise: policies, references and
//                           host-side math only. TOKENLESS_HAS_CUDA_RUNTIME is
//                           set when the toolkit's runtime headers are present.
#if defined(__CUDACC__)
#define TOKENLESS_BACKEND_CUDA 1
#define TOKENLESS_HAS_CUDA_RUNTIME 1
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#elif defined(TOKENLESS_EMU)
#define TOKENLESS_BACKEND_EMU 1
#include <tokenless/emu/emu.hpp>
#else
#define TOKENLESS_BACKEND_HOST 1
#if !defined(TOKENLESS_NO_CUDA_HEADERS) && __has_include(<cuda_runtime_api.h>)
#define TOKENLESS_HAS_CUDA_RUNTIME 1
#include <cuda_runtime_api.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#else
#include <tokenless/emu/cuda_types.hpp>
#endif
#endif

#if defined(TOKENLESS_BACKEND_CUDA) || defined(TOKENLESS_BACKEND_EMU)
// Kernels can be launched from this translation unit.
#define TOKENLESS_HAS_KERNELS 1
#endif

#define TL_HOST_DEVICE __host__ __device__
#define TL_DEVICE __device__
#define TL_FORCEINLINE __forceinline__
#define TL_PRAGMA_(x) _Pragma(#x)
#if defined(TOKENLESS_BACKEND_CUDA)
#define TL_UNROLL _Pragma("unroll")
#define TL_UNROLL_N(n) TL_PRAGMA_(unroll n)
#else
#define TL_UNROLL
#define TL_UNROLL_N(n)
#endif

#define TOKENLESS_VERSION_MAJOR 0
#define TOKENLESS_VERSION_MINOR 1
#define TOKENLESS_VERSION_PATCH 0

namespace tokenless {
// Name of the backend this translation unit was compiled for.
inline constexpr const char* backend_name() {
#if defined(TOKENLESS_BACKEND_CUDA)
  return "cuda";
#elif defined(TOKENLESS_BACKEND_EMU)
  return "emu";
#else
  return "host";
#endif
}
}  // namespace tokenless
