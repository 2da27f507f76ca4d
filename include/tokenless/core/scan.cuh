#pragma once
// Device-wide scan, reduce-then-scan in three passes: tiles reduce to
// partials, one block scans the partials, tiles scan with their offset. It
// reads the input twice, which costs little next to the kernels that feed it
// (a patcher's scan reads 4 bytes per position after 520+ bytes of logits),
// and it is tokenless's own code: it runs on the CPU executor, the order of
// operations is fixed (bit-identical results run to run), and it passes the
// compile tier's no-spill gate that CUB 3's scan kernel fails on sm_90.
#include <tokenless/core/block.cuh>
#include <tokenless/core/launch.cuh>

#include <cstdint>

namespace tokenless::scan::detail {

inline constexpr int kThreads = 256;
inline constexpr int kItems = 8;
inline constexpr int kTile = kThreads * kItems;

template <class T, class Op>
__global__ void __launch_bounds__(kThreads) reduce_tiles_kernel(const T* in, std::int64_t n, T* partials, Op op, T identity) {
  using R = block::Reduce<T, kThreads>;
  __shared__ typename R::TempStorage smem;
  const std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * kTile;
  T acc = identity;
  TL_UNROLL
  for (int k = 0; k < kItems; ++k) {
    const std::int64_t i = base + k * kThreads + threadIdx.x;
    if (i < n) acc = op(acc, in[i]);
  }
  acc = R::reduce(acc, op, smem);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// One block: exclusive scan of the tile partials, in place.
template <class T, class Op>
__global__ void __launch_bounds__(1024) scan_partials_kernel(T* partials, std::int64_t tiles, Op op, T identity) {
  using S = block::Scan<T, 1024>;
  __shared__ typename S::TempStorage smem;
  T carry = identity;
  for (std::int64_t base = 0; base < tiles; base += 1024) {
    const std::int64_t i = base + threadIdx.x;
    const T v = i < tiles ? partials[i] : identity;
    T total;
    const T exc = S::exclusive(v, op, identity, total, smem);
    if (i < tiles) partials[i] = op(carry, exc);
    carry = op(carry, total);
    __syncthreads();  // the next chunk reuses smem
  }
}

// Each thread scans its items sequentially; the block scans the thread
// totals; the tile's offset comes from the scanned partials.
template <class T, class Op, bool kInclusive>
__global__ void __launch_bounds__(kThreads) scan_tiles_kernel(const T* in, T* out, std::int64_t n, const T* offsets,
                                                              Op op, T identity) {
  using S = block::Scan<T, kThreads>;
  __shared__ typename S::TempStorage smem;
  const std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * kTile + static_cast<std::int64_t>(threadIdx.x) * kItems;
  T items[kItems];
  T local = identity;
  TL_UNROLL
  for (int k = 0; k < kItems; ++k) {
    const std::int64_t i = base + k;
    items[k] = i < n ? in[i] : identity;
    local = op(local, items[k]);
  }
  T total;
  T prefix = S::exclusive(local, op, identity, total, smem);
  prefix = op(offsets[blockIdx.x], prefix);
  TL_UNROLL
  for (int k = 0; k < kItems; ++k) {
    const std::int64_t i = base + k;
    const T next = op(prefix, items[k]);
    if (i < n) out[i] = kInclusive ? next : prefix;
    prefix = next;
  }
}

// One block: out[0] = op over the tile partials.
template <class T, class Op>
__global__ void __launch_bounds__(1024) reduce_partials_kernel(const T* partials, std::int64_t tiles, T* out, Op op,
                                                               T identity) {
  using R = block::Reduce<T, 1024>;
  __shared__ typename R::TempStorage smem;
  T acc = identity;
  for (std::int64_t i = threadIdx.x; i < tiles; i += 1024) acc = op(acc, partials[i]);
  acc = R::reduce(acc, op, smem);
  if (threadIdx.x == 0) *out = acc;
}

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
  const dim3 grid(static_cast<unsigned>(tiles));
  TL_RETURN_IF_ERROR(launch(reduce_tiles_kernel<T, Op>, {grid, dim3(kThreads), 0, stream}, in, n, partials, op, identity));
  TL_RETURN_IF_ERROR(launch(scan_partials_kernel<T, Op>, {dim3(1), dim3(1024), 0, stream}, partials, tiles, op, identity));
  return launch(scan_tiles_kernel<T, Op, kInclusive>, {grid, dim3(kThreads), 0, stream}, in, out, n,
                static_cast<const T*>(partials), op, identity);
}

template <class T, class Op>
Status reduce(void* workspace, const T* in, T* out, std::int64_t n, Op op, T identity, cudaStream_t stream) {
  const std::int64_t tiles = tiles_for(n > 0 ? n : 1);
  T* partials = static_cast<T*>(workspace);
  TL_RETURN_IF_ERROR(launch(reduce_tiles_kernel<T, Op>, {dim3(static_cast<unsigned>(tiles)), dim3(kThreads), 0, stream},
                            in, n, partials, op, identity));
  return launch(reduce_partials_kernel<T, Op>, {dim3(1), dim3(1024), 0, stream}, static_cast<const T*>(partials), tiles,
                out, op, identity);
}

}  // namespace tokenless::scan::detail
