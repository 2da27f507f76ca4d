#pragma once
// Block-level reduce and scan over a compile-time block size. Shared storage
// is passed in (TempStorage), as with CUB, so kernels can union it with other
// buffers. Every thread of the block must call; results go to all threads.
#include <tokenless/core/warp.cuh>

namespace tokenless::block {

template <class T, int BlockThreads>
struct Reduce {
  static_assert(BlockThreads % 32 == 0 && BlockThreads >= 32 && BlockThreads <= 1024,
                "block::Reduce needs a block size that is a multiple of 32, at most 1024");
  static constexpr int kWarps = BlockThreads / 32;

  struct TempStorage {
    T warp_partial[kWarps];
    T result;
  };

  // Safe to call back to back with the same storage: the second barrier
  // orders every read of this call before any write of the next.
  template <class Op>
  TL_DEVICE static T reduce(T v, Op op, TempStorage& ts) {
    const unsigned lane = warp::lane_id(), wid = warp::warp_id();
    v = warp::reduce(v, op);
    if (lane == 0) ts.warp_partial[wid] = v;
    __syncthreads();
    if (wid == 0) {
      T p = lane < static_cast<unsigned>(kWarps) ? ts.warp_partial[lane] : Op::template identity<T>();
      p = warp::reduce(p, op);
      if (lane == 0) ts.result = p;
    }
    __syncthreads();
    return ts.result;
  }
};

template <class T, int BlockThreads>
struct Scan {
  static_assert(BlockThreads % 32 == 0 && BlockThreads >= 32 && BlockThreads <= 1024,
                "block::Scan needs a block size that is a multiple of 32, at most 1024");
  static constexpr int kWarps = BlockThreads / 32;

  struct TempStorage {
    T warp_total[kWarps];
    T warp_prefix[kWarps];
    T total;
  };

  // Exclusive scan in thread-rank order; thread 0 receives `identity`.
  template <class Op>
  TL_DEVICE static T exclusive(T v, Op op, T identity, T& block_total, TempStorage& ts) {
    const unsigned lane = warp::lane_id(), wid = warp::warp_id();
    T warp_sum;
    T exc = warp::exclusive_scan(v, op, identity, warp_sum);
    if (lane == 0) ts.warp_total[wid] = warp_sum;
    __syncthreads();
    if (wid == 0) {
      T t = lane < static_cast<unsigned>(kWarps) ? ts.warp_total[lane] : identity;
      T all;
      T pre = warp::exclusive_scan(t, op, identity, all);
      if (lane < static_cast<unsigned>(kWarps)) ts.warp_prefix[lane] = pre;
      if (lane == 0) ts.total = all;
    }
    __syncthreads();
    block_total = ts.total;
    return wid == 0 ? exc : op(ts.warp_prefix[wid], exc);
  }

  template <class Op>
  TL_DEVICE static T inclusive(T v, Op op, T identity, T& block_total, TempStorage& ts) {
    return op(exclusive(v, op, identity, block_total, ts), v);
  }
};

// Block-wide argmax: largest value, lowest index on ties, NaN largest.
template <class T, int BlockThreads>
struct ArgMaxReduce {
  using Pair = ValueIndex<T>;
  using Inner = Reduce<Pair, BlockThreads>;
  using TempStorage = typename Inner::TempStorage;
  TL_DEVICE static Pair reduce(Pair v, TempStorage& ts) { return Inner::reduce(v, ArgMax{}, ts); }
};

}  // namespace tokenless::block
