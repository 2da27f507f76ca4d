#pragma once
// Asynchronous global-to-shared copies (cp.async, sm_80 and later): a block
// keeps its next tile in flight while it computes on the current one, with no
// registers held for it. On the CPU executor, and below sm_80, the copy is a
// plain synchronous one and the commit/wait calls do nothing, so the same
// double-buffered kernel runs on both backends; only the GPU tier exercises
// the asynchronous path itself (compute-sanitizer racecheck included).
#include <tokenless/core/config.hpp>
#include <tokenless/core/vec.hpp>

#include <cstdint>

namespace tokenless::async {

#if defined(TOKENLESS_BACKEND_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define TOKENLESS_ASYNC_COPY 1
#endif

// 16 bytes from global to shared; both addresses 16-byte aligned.
TL_DEVICE TL_FORCEINLINE void copy16(void* smem_dst, const void* gmem_src) {
#if defined(TOKENLESS_ASYNC_COPY)
  const auto s = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem_src) : "memory");
#else
  using V16 = Vec<std::uint32_t, 4>;
  *static_cast<V16*>(smem_dst) = *static_cast<const V16*>(gmem_src);
#endif
}

// Closes the group of copies issued since the last commit.
TL_DEVICE TL_FORCEINLINE void commit() {
#if defined(TOKENLESS_ASYNC_COPY)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most `kPending` committed groups are still in flight. The
// calling thread's copies only: a barrier must follow before others read.
template <int kPending>
TL_DEVICE TL_FORCEINLINE void wait() {
#if defined(TOKENLESS_ASYNC_COPY)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
#endif
}

}  // namespace tokenless::async
