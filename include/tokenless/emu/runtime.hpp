#pragma once
// A minimal CUDA runtime over host memory for the CPU SIMT executor.
// Streams execute every operation at once, in order; events record host time.
// "Device" memory is 256-byte aligned heap memory, so ASan sees every
// out-of-bounds access a kernel makes.
#include <tokenless/emu/executor.hpp>

#include <chrono>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>

struct CUstream_st {
  unsigned flags = 0;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point t{};
  bool recorded = false;
};

inline constexpr unsigned cudaStreamDefault = 0;
inline constexpr unsigned cudaStreamNonBlocking = 1;

namespace tokenless::emu::detail {
struct Allocations {
  std::mutex m;
  std::unordered_map<void*, std::size_t> live;
};
inline Allocations& allocations() {
  static Allocations a;
  return a;
}
inline cudaError_t set_error(cudaError_t e) {
  if (e != cudaSuccess) last_error() = e;
  return e;
}
inline void* allocate(std::size_t bytes) {
  void* p = ::operator new(bytes ? bytes : 1, std::align_val_t{256}, std::nothrow);
  if (p) {
    std::lock_guard<std::mutex> g(allocations().m);
    allocations().live[p] = bytes;
  }
  return p;
}
inline cudaError_t deallocate(void* p) {
  if (!p) return cudaSuccess;
  {
    std::lock_guard<std::mutex> g(allocations().m);
    if (allocations().live.erase(p) == 0) return set_error(cudaErrorInvalidValue);
  }
  ::operator delete(p, std::align_val_t{256});
  return cudaSuccess;
}
}  // namespace tokenless::emu::detail

inline cudaError_t cudaGetLastError() {
  cudaError_t e = tokenless::emu::detail::last_error();
  tokenless::emu::detail::last_error() = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() { return tokenless::emu::detail::last_error(); }

inline cudaError_t cudaGetDeviceCount(int* n) {
  if (!n) return tokenless::emu::detail::set_error(cudaErrorInvalidValue);
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int d) {
  return d == 0 ? cudaSuccess : tokenless::emu::detail::set_error(cudaErrorInvalidDevice);
}
inline cudaError_t cudaGetDevice(int* d) {
  if (!d) return tokenless::emu::detail::set_error(cudaErrorInvalidValue);
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

inline cudaError_t cudaMalloc(void** p, std::size_t bytes) {
  if (!p) return tokenless::emu::detail::set_error(cudaErrorInvalidValue);
  *p = tokenless::emu::detail::allocate(bytes);
  return *p ? cudaSuccess : tokenless::emu::detail::set_error(cudaErrorMemoryAllocation);
}
template <class T>
inline cudaError_t cudaMalloc(T** p, std::size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
inline cudaError_t cudaFree(void* p) { return tokenless::emu::detail::deallocate(p); }
inline cudaError_t cudaMallocHost(void** p, std::size_t bytes) { return cudaMalloc(p, bytes); }
template <class T>
inline cudaError_t cudaMallocHost(T** p, std::size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
inline cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }
inline cudaError_t cudaMallocAsync(void** p, std::size_t bytes, cudaStream_t) { return cudaMalloc(p, bytes); }
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return cudaFree(p); }

inline cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
  if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault) {
    return tokenless::emu::detail::set_error(cudaErrorInvalidMemcpyDirection);
  }
  if (bytes == 0) return cudaSuccess;
  if (!dst || !src) return tokenless::emu::detail::set_error(cudaErrorInvalidValue);
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind,
                                   cudaStream_t = nullptr) {
  return cudaMemcpy(dst, src, bytes, kind);
}
// Rows of `width` bytes at pitches dpitch and spitch (CUDA's rules: a width
// wider than either pitch is refused).
inline cudaError_t cudaMemcpy2D(void* dst, std::size_t dpitch, const void* src, std::size_t spitch, std::size_t width,
                                std::size_t height, cudaMemcpyKind kind) {
  if (width > dpitch || width > spitch) return tokenless::emu::detail::set_error(cudaErrorInvalidPitchValue);
  for (std::size_t r = 0; r < height; ++r) {
    const cudaError_t e = cudaMemcpy(static_cast<char*>(dst) + r * dpitch, static_cast<const char*>(src) + r * spitch,
                                     width, kind);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}
inline cudaError_t cudaMemset(void* p, int value, std::size_t bytes) {
  if (bytes == 0) return cudaSuccess;
  if (!p) return tokenless::emu::detail::set_error(cudaErrorInvalidValue);
  std::memset(p, value, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int value, std::size_t bytes, cudaStream_t = nullptr) {
  return cudaMemset(p, value, bytes);
}

inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags) {
  if (!s) return tokenless::emu::detail::set_error(cudaErrorInvalidValue);
  *s = new CUstream_st{flags};
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }
inline cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamQuery(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned = 0) { return cudaSuccess; }

inline cudaError_t cudaEventCreate(cudaEvent_t* e) {
  if (!e) return tokenless::emu::detail::set_error(cudaErrorInvalidValue);
  *e = new CUevent_st{};
  return cudaSuccess;
}
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { return cudaEventCreate(e); }
inline cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t = nullptr) {
  if (!e) return tokenless::emu::detail::set_error(cudaErrorInvalidResourceHandle);
  e->t = std::chrono::steady_clock::now();
  e->recorded = true;
  return cudaSuccess;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  if (!ms || !a || !b) return tokenless::emu::detail::set_error(cudaErrorInvalidValue);
  if (!a->recorded || !b->recorded) return tokenless::emu::detail::set_error(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(b->t - a->t).count();
  return cudaSuccess;
}

template <class F>
inline cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      static_cast<std::size_t>(value) > tokenless::emu::detail::kMaxSmemOptIn) {
    return tokenless::emu::detail::set_error(cudaErrorInvalidValue);
  }
  std::lock_guard<std::mutex> g(tokenless::emu::detail::func_smem_mutex());
  tokenless::emu::detail::func_smem_limits()[reinterpret_cast<const void*>(kernel)] = value;
  return cudaSuccess;
}
