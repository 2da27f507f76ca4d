#pragma once
// Device discovery that never crashes or hangs without a driver, a cached
// properties query, and the bridge from cudaError_t to Status.
//
// Without a driver the runtime answers cudaErrorInsufficientDriver and leaves
// the device count untouched, so the count is initialised before asking.
// The library never links libcuda directly: its stub kills the process before
// main on a machine without a driver.
#include <tokenless/core/config.hpp>
#include <tokenless/core/status.hpp>

#include <cstdio>
#include <cstring>
#include <mutex>

namespace tokenless {

#if defined(TOKENLESS_HAS_CUDA_RUNTIME) || defined(TOKENLESS_BACKEND_EMU)
inline Status status_from_cuda(cudaError_t e, const char* what, const char* file = "", int line = 0) {
  if (e == cudaSuccess) return Status::ok();
  return Status::error(StatusCode::cuda_error, "%s failed: %s (%s) at %s:%d", what, cudaGetErrorName(e),
                       cudaGetErrorString(e), file, line);
}
#endif

}  // namespace tokenless

// Evaluates a CUDA runtime call and returns a Status from the enclosing function on failure.
#define TL_CUDA_TRY(expr)                                                                       \
  do {                                                                                          \
    cudaError_t tl_err_ = (expr);                                                               \
    if (tl_err_ != cudaSuccess) return ::tokenless::status_from_cuda(tl_err_, #expr, __FILE__, __LINE__); \
  } while (0)

namespace tokenless {

// True when kernels can run: a GPU with a working driver (CUDA builds), the
// CPU executor (emu builds). Host-only builds without the toolkit: false.
inline bool device_available() {
#if defined(TOKENLESS_BACKEND_EMU)
  return true;
#elif defined(TOKENLESS_HAS_CUDA_RUNTIME)
  static const bool available = [] {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();  // do not leave a sticky error behind
      return false;
    }
    return n > 0;
  }();
  return available;
#else
  return false;
#endif
}

struct DeviceProperties {
  int device = 0;
  int cc_major = 0;
  int cc_minor = 0;
  int sm_count = 0;
  int max_threads_per_block = 0;
  int warp_size = 32;
  std::size_t smem_per_block_optin = 0;  // bytes of shared memory a block may opt in to
  std::size_t l2_bytes = 0;
  std::size_t global_bytes = 0;
  char name[256] = {};

  // 80 for sm_80, 90 for sm_90, ...
  constexpr int compute_capability() const { return cc_major * 10 + cc_minor; }
};

namespace detail {
inline constexpr int kMaxCachedDevices = 64;
struct PropertiesCache {
  std::once_flag once[kMaxCachedDevices];
  DeviceProperties props[kMaxCachedDevices];
  Status status[kMaxCachedDevices];
};
inline PropertiesCache& properties_cache() {
  static PropertiesCache c;
  return c;
}
}  // namespace detail

// Properties of `device` (the current device when negative), queried once per
// device and cached; safe to call from several host threads.
inline Status device_properties(DeviceProperties& out, int device = -1) {
#if defined(TOKENLESS_BACKEND_EMU)
  (void)device;
  DeviceProperties p;
  const emu::Options o = emu::options();  // settable, so that the emu tier runs every tuning
  p.cc_major = o.compute_capability / 10;
  p.cc_minor = o.compute_capability % 10;
  p.sm_count = o.sm_count;
  p.max_threads_per_block = 1024;
  p.smem_per_block_optin = 227 * 1024;
  p.l2_bytes = 1 << 20;
  p.global_bytes = std::size_t{1} << 32;
  std::snprintf(p.name, sizeof p.name, "tokenless CPU SIMT executor");
  out = p;
  return Status::ok();
#elif defined(TOKENLESS_HAS_CUDA_RUNTIME)
  if (!device_available()) return Status::error(StatusCode::no_device, "no CUDA device is available");
  if (device < 0) TL_CUDA_TRY(cudaGetDevice(&device));
  if (device >= detail::kMaxCachedDevices) {
    return Status::argument(StatusCode::invalid_argument, "device", "an index below 64", "%d", device);
  }
  auto& c = detail::properties_cache();
  std::call_once(c.once[device], [&] {
    cudaDeviceProp prop{};
    cudaError_t e = cudaGetDeviceProperties(&prop, device);
    if (e != cudaSuccess) {
      c.status[device] = status_from_cuda(e, "cudaGetDeviceProperties", __FILE__, __LINE__);
      return;
    }
    DeviceProperties& p = c.props[device];
    p.device = device;
    p.cc_major = prop.major;
    p.cc_minor = prop.minor;
    p.sm_count = prop.multiProcessorCount;
    p.max_threads_per_block = prop.maxThreadsPerBlock;
    p.warp_size = prop.warpSize;
    p.smem_per_block_optin = prop.sharedMemPerBlockOptin;
    p.l2_bytes = static_cast<std::size_t>(prop.l2CacheSize);
    p.global_bytes = prop.totalGlobalMem;
    std::snprintf(p.name, sizeof p.name, "%s", prop.name);
  });
  if (!c.status[device].is_ok()) return c.status[device];
  out = c.props[device];
  return Status::ok();
#else
  (void)out;
  (void)device;
  return Status::error(StatusCode::no_device, "tokenless was compiled without the CUDA runtime");
#endif
}

// The current device's SM count, for sizing grids. The fallback (132, an
// H100 SXM's) serves a failed query, where no kernel launches either.
inline int sm_count() {
  DeviceProperties p;
  return device_properties(p).is_ok() && p.sm_count > 0 ? p.sm_count : 132;
}

// The current device's compute capability (80 for sm_80), for the tuning
// selectors; 80 when the query fails.
inline int compute_capability() {
  DeviceProperties p;
  return device_properties(p).is_ok() ? p.compute_capability() : 80;
}

}  // namespace tokenless
