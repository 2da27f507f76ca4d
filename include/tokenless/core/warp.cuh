#pragma once
// Warp-level primitives built on shuffles. Every lane of a full warp must
// call them (lanes without data pass the operator's identity), which is what
// makes them portable between the GPU and the CPU executor.
#include <tokenless/core/config.hpp>
#include <tokenless/core/functional.hpp>
#include <tokenless/core/launch.cuh>

namespace tokenless::warp {

inline constexpr unsigned kFullMask = 0xffffffffu;
inline constexpr int kWarpThreads = 32;

TL_DEVICE TL_FORCEINLINE unsigned lane_id() { return thread_rank() & 31u; }
TL_DEVICE TL_FORCEINLINE unsigned warp_id() { return thread_rank() >> 5; }

// Shuffle that also moves ValueIndex pairs.
template <class T>
TL_DEVICE TL_FORCEINLINE T shfl_xor(T v, int lane_mask) {
  return __shfl_xor_sync(kFullMask, v, lane_mask);
}
template <class T>
TL_DEVICE TL_FORCEINLINE ValueIndex<T> shfl_xor(ValueIndex<T> v, int lane_mask) {
  return {__shfl_xor_sync(kFullMask, v.value, lane_mask), __shfl_xor_sync(kFullMask, v.index, lane_mask)};
}
template <class T>
TL_DEVICE TL_FORCEINLINE T shfl_up(T v, int delta) {
  return __shfl_up_sync(kFullMask, v, delta);
}
template <class T>
TL_DEVICE TL_FORCEINLINE T broadcast(T v, int src_lane) {
  return __shfl_sync(kFullMask, v, src_lane);
}

// Butterfly reduction: every lane receives the result.
template <class T, class Op>
TL_DEVICE TL_FORCEINLINE T reduce(T v, Op op) {
TL_UNROLL
  for (int offset = 16; offset > 0; offset >>= 1) v = op(v, shfl_xor(v, offset));
  return v;
}

// Butterfly reduction within aligned groups of kWidth lanes (a power of two):
// every lane receives its group's result. All 32 lanes must call it.
template <int kWidth, class T, class Op>
TL_DEVICE TL_FORCEINLINE T reduce_groups(T v, Op op) {
  static_assert(kWidth > 0 && kWidth <= 32 && (kWidth & (kWidth - 1)) == 0, "kWidth must be a power of two <= 32");
TL_UNROLL
  for (int offset = kWidth / 2; offset > 0; offset >>= 1) v = op(v, shfl_xor(v, offset));
  return v;
}

// Inclusive scan in lane order (Kogge-Stone).
template <class T, class Op>
TL_DEVICE TL_FORCEINLINE T inclusive_scan(T v, Op op) {
  const unsigned lane = lane_id();
TL_UNROLL
  for (int offset = 1; offset < 32; offset <<= 1) {
    T up = shfl_up(v, offset);
    if (lane >= static_cast<unsigned>(offset)) v = op(up, v);
  }
  return v;
}

// Exclusive scan; lane 0 receives `identity`. `total` receives the warp aggregate.
template <class T, class Op>
TL_DEVICE TL_FORCEINLINE T exclusive_scan(T v, Op op, T identity, T& total) {
  T inc = inclusive_scan(v, op);
  total = broadcast(inc, 31);
  T exc = shfl_up(inc, 1);
  return lane_id() == 0 ? identity : exc;
}

// Number of lanes below the caller whose predicate holds, and the total.
TL_DEVICE TL_FORCEINLINE int prefix_count(bool pred, int& total) {
  const unsigned bits = __ballot_sync(kFullMask, pred);
  total = __popc(bits);
  return __popc(bits & ((1u << lane_id()) - 1u));
}

}  // namespace tokenless::warp
