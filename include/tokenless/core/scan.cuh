#pragma once
// Device-wide scan, reduce-then-scan in three passes: tiles reduce to
// partials, one block scans the partials, tiles scan with their offset. It
// reads the input twice, which costs little next to the kernels that feed it
// (a patcher's scan reads 4 bytes per position after 520+ bytes of logits),
// and it is tokenless's own code: it runs on the CPU executor, the order of
// operations is fixed (bit-identical results run to run), and it passes the
// compile tier's no-spill gate that CUB 3's scan kernel fails on sm_90.
#include <tokenless/core/block.cuh>
#include <tokenless/core/kernel.cuh>

#include <cstdint>

namespace tokenless::scan::detail {

inline constexpr int kTileThreads = 256;
inline constexpr int kItems = 8;
inline constexpr int kTile = kTileThreads * kItems;

template <class T, class Op>
struct ReduceTilesKernel {
  struct Params {
    const T* in;
    std::int64_t n;
    T* partials;
    Op op;
    T identity;
  };
  static constexpr int kThreads = kTileThreads;
  using R = block::Reduce<T, kThreads>;
  using SharedStorage = typename R::TempStorage;
  TL_DEVICE void operator()(const Params& p, SharedStorage& smem) const {
    const std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * kTile;
    T acc = p.identity;
    TL_UNROLL
    for (int k = 0; k < kItems; ++k) {
      const std::int64_t i = base + k * kThreads + threadIdx.x;
      if (i < p.n) acc = p.op(acc, p.in[i]);
    }
    acc = R::reduce(acc, p.op, smem);
    if (threadIdx.x == 0) p.partials[blockIdx.x] = acc;
  }
};

// One block: exclusive scan of the tile partials, in place.
template <class T, class Op>
struct ScanPartialsKernel {
  struct Params {
    T* partials;
    std::int64_t tiles;
    Op op;
    T identity;
  };
  static constexpr int kThreads = 1024;
  using S = block::Scan<T, kThreads>;
  using SharedStorage = typename S::TempStorage;
  TL_DEVICE void operator()(const Params& p, SharedStorage& smem) const {
    T carry = p.identity;
    for (std::int64_t base = 0; base < p.tiles; base += kThreads) {
      const std::int64_t i = base + threadIdx.x;
      const T v = i < p.tiles ? p.partials[i] : p.identity;
      T total;
      const T exc = S::exclusive(v, p.op, p.identity, total, smem);
      if (i < p.tiles) p.partials[i] = p.op(carry, exc);
      carry = p.op(carry, total);
      __syncthreads();  // the next chunk reuses smem
    }
  }
};

// Each thread scans its items sequentially; the block scans the thread
// totals; the tile's offset comes from the scanned partials.
template <class T, class Op, bool kInclusive>
struct ScanTilesKernel {
  struct Params {
    const T* in;
    T* out;
    std::int64_t n;
    const T* offsets;
    Op op;
    T identity;
  };
  static constexpr int kThreads = kTileThreads;
  using S = block::Scan<T, kThreads>;
  using SharedStorage = typename S::TempStorage;
  TL_DEVICE void operator()(const Params& p, SharedStorage& smem) const {
    const std::int64_t base =
        static_cast<std::int64_t>(blockIdx.x) * kTile + static_cast<std::int64_t>(threadIdx.x) * kItems;
    T items[kItems];
    T local = p.identity;
    TL_UNROLL
    for (int k = 0; k < kItems; ++k) {
      const std::int64_t i = base + k;
      items[k] = i < p.n ? p.in[i] : p.identity;
      local = p.op(local, items[k]);
    }
    T total;
    T prefix = S::exclusive(local, p.op, p.identity, total, smem);
    prefix = p.op(p.offsets[blockIdx.x], prefix);
    TL_UNROLL
    for (int k = 0; k < kItems; ++k) {
      const std::int64_t i = base + k;
      const T next = p.op(prefix, items[k]);
      if (i < p.n) p.out[i] = kInclusive ? next : prefix;
      prefix = next;
    }
  }
};

// One block: out[0] = op over the tile partials.
template <class T, class Op>
struct ReducePartialsKernel {
  struct Params {
    const T* partials;
    std::int64_t tiles;
    T* out;
    Op op;
    T identity;
  };
  static constexpr int kThreads = 1024;
  using R = block::Reduce<T, kThreads>;
  using SharedStorage = typename R::TempStorage;
  TL_DEVICE void operator()(const Params& p, SharedStorage& smem) const {
    T acc = p.identity;
    for (std::int64_t i = threadIdx.x; i < p.tiles; i += kThreads) acc = p.op(acc, p.partials[i]);
    acc = R::reduce(acc, p.op, smem);
    if (threadIdx.x == 0) *p.out = acc;
  }
};

inline std::int64_t tiles_for(std::int64_t n) { return (n + kTile - 1) / kTile; }

// Workspace: the tile partials.
template <class T>
inline std::size_t workspace_bytes(std::int64_t n) {
  return static_cast<std::size_t>(tiles_for(n > 0 ? n : 1)) * sizeof(T);
}

template <bool kInclusive, class T, class Op>
Status run(void* workspace, const T* in, T* out, std::int64_t n, Op op, T identity, cudaStream_t stream) {
  if (n == 0) return Status::ok();
  const std::int64_t tiles = tiles_for(n);
  T* partials = static_cast<T*>(workspace);
  const dim3 grid(static_cast<unsigned>(tiles));  // a block per tile
  TL_RETURN_IF_ERROR(launch<ReduceTilesKernel<T, Op>>({in, n, partials, op, identity}, grid, stream));
  TL_RETURN_IF_ERROR(launch<ScanPartialsKernel<T, Op>>({partials, tiles, op, identity}, dim3(1), stream));
  return launch<ScanTilesKernel<T, Op, kInclusive>>({in, out, n, partials, op, identity}, grid, stream);
}

template <class T, class Op>
Status reduce(void* workspace, const T* in, T* out, std::int64_t n, Op op, T identity, cudaStream_t stream) {
  const std::int64_t tiles = tiles_for(n > 0 ? n : 1);
  T* partials = static_cast<T*>(workspace);
  TL_RETURN_IF_ERROR(launch<ReduceTilesKernel<T, Op>>({in, n, partials, op, identity},
                                                      dim3(static_cast<unsigned>(tiles)), stream));
  return launch<ReducePartialsKernel<T, Op>>({partials, tiles, out, op, identity}, dim3(1), stream);
}

}  // namespace tokenless::scan::detail
