#pragma once
// The kernel layer (after CUTLASS's kernel structs and CUB's agents).
//
// A kernel is a struct:
//
//   struct MyKernel {
//     struct Params { ...; DeviceStatus* status; };  // by value; `status` optional
//     struct SharedStorage { ... };                  // optional: static shared memory
//     static constexpr int kThreads = 256;           // block size (and __launch_bounds__)
//     static constexpr int kMinBlocks = 2;           // optional: blocks per SM to fit
//     static constexpr bool kReportsStatus = true;   // optional: a check kernel (no entry guard)
//     TL_DEVICE void operator()(const Params&[, SharedStorage&]) const;
//   };
//
// One __global__ entry point, kernel_entry<K> (kernel_entry_min_blocks<K>
// when K names kMinBlocks), serves every kernel, so that a
// kernel in a header is a template of a struct and never needs an ODR trick,
// and launch<K>(params, grid, stream) runs it on the GPU or the CPU executor.
// When Params has a `status`, the entry returns before the kernel runs if an
// earlier check failed: the "nothing is written" rule lives here, once. Check
// kernels, whose threads record failures while others would read the record,
// say kReportsStatus and are not guarded.
//
// The work-mapping helpers (one item per thread, per warp or per block,
// grid-stride) and grid_for, which sizes a grid to resident blocks, replace
// the loops and caps each kernel used to spell out.
#include <tokenless/core/config.hpp>
#include <tokenless/core/device.hpp>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/launch.cuh>
#include <tokenless/core/status.hpp>
#include <tokenless/core/varlen.hpp>

#include <algorithm>
#include <concepts>
#include <cstdint>

namespace tokenless {

template <class K>
concept Kernel = requires {
  typename K::Params;
  { K::kThreads } -> std::convertible_to<int>;
} && (K::kThreads > 0 && K::kThreads <= 1024 && K::kThreads % 32 == 0);

namespace detail {
template <class K>
constexpr bool guarded() {
  if constexpr (requires { K::kReportsStatus; }) return !K::kReportsStatus;
  else return requires(typename K::Params p) { p.status; };
}
}  // namespace detail

namespace detail {
template <class K>
TL_DEVICE TL_FORCEINLINE void run_kernel(const typename K::Params& params) {
  if constexpr (guarded<K>()) {
    if (!device_ok(params.status)) return;  // a check failed: write nothing
  }
  if constexpr (requires { typename K::SharedStorage; }) {
    __shared__ typename K::SharedStorage storage;
    K{}(params, storage);
  } else {
    K{}(params);
  }
}
}  // namespace detail

// The entry points. A kernel that names kMinBlocks gets __launch_bounds__
// with it; one that does not gets the thread count alone, which leaves ptxas
// its own register heuristics (a minimum of 1 block would let it take up to
// 255 registers).
template <class K>
__global__ void __launch_bounds__(K::kThreads) kernel_entry(const typename K::Params params) {
  detail::run_kernel<K>(params);
}
template <class K>
__global__ void __launch_bounds__(K::kThreads, K::kMinBlocks) kernel_entry_min_blocks(const typename K::Params params) {
  detail::run_kernel<K>(params);
}

namespace detail {
template <class K>
constexpr auto entry() {
  if constexpr (requires { K::kMinBlocks; }) return &kernel_entry_min_blocks<K>;
  else return &kernel_entry<K>;
}
}  // namespace detail

// Launches K with K::kThreads threads per block. Does not synchronise.
template <Kernel K>
Status launch(const typename K::Params& params, dim3 grid, cudaStream_t stream, std::size_t smem_bytes = 0) {
  return launch(detail::entry<K>(), LaunchConfig{grid, dim3(K::kThreads), smem_bytes, stream}, params);
}

template <Kernel K>
Status set_max_dynamic_smem(std::size_t bytes) {
  return set_max_dynamic_smem(detail::entry<K>(), bytes);
}

// Blocks of K resident on one SM (1 on the executor).
template <Kernel K>
int blocks_per_sm(std::size_t smem_bytes = 0) {
  return blocks_per_sm(detail::entry<K>(), K::kThreads, smem_bytes);
}

// A grid for `items` work items, `per_block` to a block, at most
// `blocks_per_sm` blocks per SM: grid-stride kernels walk the rest, and a
// grid of one wave (blocks_per_sm from the occupancy) has no partial last wave.
inline dim3 grid_for(std::int64_t items, std::int64_t per_block, int blocks_per_sm) {
  const std::int64_t want = (items + per_block - 1) / per_block;
  const std::int64_t cap = std::int64_t{sm_count()} * std::max(blocks_per_sm, 1);
  return dim3(static_cast<unsigned>(std::max<std::int64_t>(1, std::min(want, cap))));
}

// ------------------------------------------------------------------ work mapping
namespace work {

TL_DEVICE TL_FORCEINLINE int lane() { return static_cast<int>(threadIdx.x & 31u); }

// f(i) for the items [0, n) of this thread: one per thread, grid-stride.
template <class F>
TL_DEVICE TL_FORCEINLINE void thread_items(std::int64_t n, F&& f) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) f(i);
}

// f(i, lane) for the items [0, n) of this warp: one per warp, grid-stride.
// Trips are warp-uniform, so f may use warp collectives.
template <class F>
TL_DEVICE TL_FORCEINLINE void warp_items(std::int64_t n, F&& f) {
  const std::int64_t warps = blockDim.x >> 5;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * warps;
  const int l = lane();
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * warps + (threadIdx.x >> 5); i < n; i += stride) f(i, l);
}

// f(i) for the items [0, n) of this block: one per block, grid-stride.
// Trips are block-uniform, so f may use barriers and block collectives.
template <class F>
TL_DEVICE TL_FORCEINLINE void block_items(std::int64_t n, F&& f) {
  for (std::int64_t i = blockIdx.x; i < n; i += gridDim.x) f(i);
}

// f(i, valid) over [0, n) in block-wide steps, grid-stride, every thread of
// the block taking each step (i may lie past n: valid says), so that f may
// vote or use barriers.
template <class F>
TL_DEVICE TL_FORCEINLINE void block_strided(std::int64_t n, F&& f) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i0 = static_cast<std::int64_t>(blockIdx.x) * blockDim.x; i0 < n; i0 += stride) {
    const std::int64_t i = i0 + threadIdx.x;
    f(i, i < n);
  }
}

}  // namespace work

// ------------------------------------------------------------------ the batch check
// Checks 0 = cu[0] <= cu[1] <= ... <= cu[B] = total on the device (a thread
// per entry) and records the first bad entry as kCheckBatch.
struct ValidateBatchKernel {
  struct Params {
    VarlenBatch batch;
    DeviceStatus* status;
    int check = kCheckBatch;  // the id recorded (operations with several batches number theirs)
  };
  static constexpr int kThreads = 256;
  static constexpr bool kReportsStatus = true;
  TL_DEVICE void operator()(const Params& p) const {
    const VarlenBatch& b = p.batch;
    work::thread_items(b.num_seqs + 1, [&](std::int64_t i) {
      const std::int64_t c = b.cu_seqlens[i];
      if ((i == 0 && c != 0) || (i > 0 && c < b.cu_seqlens[i - 1]) || (i == b.num_seqs && c != b.total))
        device_fail(p.status, p.check, i);
    });
  }
};

// Launches the batch check (nothing to check without cu_seqlens).
inline Status validate_batch(const VarlenBatch& batch, DeviceStatus* status, cudaStream_t stream,
                             int check = kCheckBatch) {
  if (!batch.varlen()) return Status::ok();
  return launch<ValidateBatchKernel>({batch, status, check},
                                     grid_for(batch.num_seqs + 1, ValidateBatchKernel::kThreads, 8), stream);
}

// How run() starts: the record reset, then the batch checked on the device.
inline Status begin_checks(DeviceStatus* status, const VarlenBatch& batch, cudaStream_t stream) {
  TL_RETURN_IF_ERROR(reset_device_status(status, stream));
  return validate_batch(batch, status, stream);
}

}  // namespace tokenless
