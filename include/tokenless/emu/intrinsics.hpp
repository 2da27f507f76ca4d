#pragma once
// Device built-ins for kernels running on the CPU SIMT executor: barriers,
// warp shuffles and votes, atomics, bit and fast-math intrinsics.
// Names and signatures follow the CUDA ones; the trailing source_location
// parameters let fault reports name the call site.
#include <tokenless/emu/executor.hpp>

#include <atomic>
#include <cmath>
#include <cstring>
#include <type_traits>

namespace tokenless::emu::detail {
template <class T>
inline std::uint64_t to_bits(T v) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "warp shuffles move values of at most 8 bytes");
  std::uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <class T>
inline T from_bits(std::uint64_t u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}
}  // namespace tokenless::emu::detail

// ------------------------------------------------------------------ barriers
inline void __syncthreads(const std::source_location& loc = std::source_location::current()) {
  tokenless::emu::detail::barrier(0, 0, loc);
}
inline int __syncthreads_count(int pred, const std::source_location& loc = std::source_location::current()) {
  return tokenless::emu::detail::barrier(pred, 1, loc);
}
inline int __syncthreads_and(int pred, const std::source_location& loc = std::source_location::current()) {
  return tokenless::emu::detail::barrier(pred, 2, loc);
}
inline int __syncthreads_or(int pred, const std::source_location& loc = std::source_location::current()) {
  return tokenless::emu::detail::barrier(pred, 3, loc);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const std::source_location& loc = std::source_location::current()) {
  tokenless::emu::detail::collective(tokenless::emu::detail::Coll::syncwarp, "__syncwarp", mask, 0, 0, 32, loc);
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// A warp-wide computation over every lane's operands (full warp only): the
// executor's form of the tensor-core instructions (core/mma.cuh).
namespace tokenless::emu {
inline void warp_compute(const char* what, void* lane_operands, detail::WarpCompute fn,
                         const std::source_location& loc = std::source_location::current()) {
  detail::current()->compute = fn;
  detail::collective(detail::Coll::compute, what, 0xffffffffu, reinterpret_cast<std::uintptr_t>(lane_operands), 0, 32,
                     loc);
}
}  // namespace tokenless::emu

// ------------------------------------------------------------------ shuffles and votes
#define TOKENLESS_EMU_SHFL(NAME, KIND)                                                                     \
  template <class T>                                                                                       \
  inline T NAME(unsigned mask, T var, int param, int width = 32,                                           \
                const std::source_location& loc = std::source_location::current()) {                       \
    using namespace tokenless::emu::detail;                                                                \
    return from_bits<T>(collective(Coll::KIND, #NAME, mask, to_bits(var), param, width, loc));             \
  }
TOKENLESS_EMU_SHFL(__shfl_sync, shfl_idx)
TOKENLESS_EMU_SHFL(__shfl_up_sync, shfl_up)
TOKENLESS_EMU_SHFL(__shfl_down_sync, shfl_down)
TOKENLESS_EMU_SHFL(__shfl_xor_sync, shfl_xor)
#undef TOKENLESS_EMU_SHFL

inline unsigned __ballot_sync(unsigned mask, int pred, const std::source_location& loc = std::source_location::current()) {
  using namespace tokenless::emu::detail;
  return static_cast<unsigned>(collective(Coll::vote, "__ballot_sync", mask, pred != 0, 0, 32, loc));
}
inline int __any_sync(unsigned mask, int pred, const std::source_location& loc = std::source_location::current()) {
  using namespace tokenless::emu::detail;
  return (collective(Coll::vote, "__any_sync", mask, pred != 0, 0, 32, loc) & mask) != 0;
}
inline int __all_sync(unsigned mask, int pred, const std::source_location& loc = std::source_location::current()) {
  using namespace tokenless::emu::detail;
  return (collective(Coll::vote, "__all_sync", mask, pred != 0, 0, 32, loc) & mask) == mask;
}
template <class T>
inline unsigned __match_any_sync(unsigned mask, T value, const std::source_location& loc = std::source_location::current()) {
  using namespace tokenless::emu::detail;
  return static_cast<unsigned>(collective(Coll::match_any, "__match_any_sync", mask, to_bits(value), 0, 32, loc));
}
// Lanes of the calling warp that have not returned. (On the GPU the answer
// depends on convergence; kernels must not rely on more than this.)
inline unsigned __activemask() {
  auto* t = tokenless::emu::detail::current();
  auto& w = t->block->warps[t->warp];
  return w.existing & ~w.exited;
}

// ------------------------------------------------------------------ atomics
namespace tokenless::emu::detail {
template <class T, class F>
inline T atomic_update(T* addr, F f) {
  std::atomic_ref<T> ref(*addr);
  T old = ref.load(std::memory_order_relaxed);
  while (!ref.compare_exchange_weak(old, f(old), std::memory_order_relaxed)) {
  }
  return old;
}
}  // namespace tokenless::emu::detail

#define TOKENLESS_EMU_ATOMIC_ADD(T)                                                  \
  inline T atomicAdd(T* addr, T v) {                                                 \
    return std::atomic_ref<T>(*addr).fetch_add(v, std::memory_order_relaxed);       \
  }
TOKENLESS_EMU_ATOMIC_ADD(int)
TOKENLESS_EMU_ATOMIC_ADD(unsigned)
TOKENLESS_EMU_ATOMIC_ADD(unsigned long long)
TOKENLESS_EMU_ATOMIC_ADD(float)
TOKENLESS_EMU_ATOMIC_ADD(double)
#undef TOKENLESS_EMU_ATOMIC_ADD
inline __half atomicAdd(__half* addr, __half v) {
  return tokenless::emu::detail::atomic_update(addr, [v](__half o) { return __half(float(o) + float(v)); });
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* addr, __nv_bfloat16 v) {
  return tokenless::emu::detail::atomic_update(addr,
                                               [v](__nv_bfloat16 o) { return __nv_bfloat16(float(o) + float(v)); });
}
inline int atomicSub(int* addr, int v) { return std::atomic_ref<int>(*addr).fetch_sub(v, std::memory_order_relaxed); }
inline unsigned atomicSub(unsigned* addr, unsigned v) {
  return std::atomic_ref<unsigned>(*addr).fetch_sub(v, std::memory_order_relaxed);
}

#define TOKENLESS_EMU_ATOMIC_MINMAX(T)                                                                        \
  inline T atomicMax(T* addr, T v) {                                                                          \
    return tokenless::emu::detail::atomic_update(addr, [v](T o) { return o < v ? v : o; });                   \
  }                                                                                                           \
  inline T atomicMin(T* addr, T v) {                                                                          \
    return tokenless::emu::detail::atomic_update(addr, [v](T o) { return v < o ? v : o; });                   \
  }
TOKENLESS_EMU_ATOMIC_MINMAX(int)
TOKENLESS_EMU_ATOMIC_MINMAX(unsigned)
TOKENLESS_EMU_ATOMIC_MINMAX(long long)
TOKENLESS_EMU_ATOMIC_MINMAX(unsigned long long)
#undef TOKENLESS_EMU_ATOMIC_MINMAX

#define TOKENLESS_EMU_ATOMIC_BITS(T)                                                                          \
  inline T atomicOr(T* a, T v) { return std::atomic_ref<T>(*a).fetch_or(v, std::memory_order_relaxed); }      \
  inline T atomicAnd(T* a, T v) { return std::atomic_ref<T>(*a).fetch_and(v, std::memory_order_relaxed); }    \
  inline T atomicXor(T* a, T v) { return std::atomic_ref<T>(*a).fetch_xor(v, std::memory_order_relaxed); }    \
  inline T atomicExch(T* a, T v) { return std::atomic_ref<T>(*a).exchange(v, std::memory_order_relaxed); }   \
  inline T atomicCAS(T* a, T expected, T desired) {                                                           \
    std::atomic_ref<T>(*a).compare_exchange_strong(expected, desired, std::memory_order_relaxed);             \
    return expected;                                                                                          \
  }
TOKENLESS_EMU_ATOMIC_BITS(int)
TOKENLESS_EMU_ATOMIC_BITS(unsigned)
TOKENLESS_EMU_ATOMIC_BITS(unsigned long long)
#undef TOKENLESS_EMU_ATOMIC_BITS
inline float atomicExch(float* a, float v) { return std::atomic_ref<float>(*a).exchange(v, std::memory_order_relaxed); }
inline unsigned short atomicCAS(unsigned short* a, unsigned short expected, unsigned short desired) {
  std::atomic_ref<unsigned short>(*a).compare_exchange_strong(expected, desired, std::memory_order_relaxed);
  return expected;
}

// ------------------------------------------------------------------ bits and math
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
  return (x >> 16) | (x << 16);
}
inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float f) { int x; std::memcpy(&x, &f, 4); return x; }
inline float __uint_as_float(unsigned x) { float f; std::memcpy(&f, &x, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned x; std::memcpy(&x, &f, 4); return x; }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __saturatef(float x) { return x != x ? 0.0f : x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
template <class T>
inline T __ldg(const T* p) { return *p; }

inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
