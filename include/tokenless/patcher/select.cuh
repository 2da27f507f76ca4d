#pragma once
// Per-sequence top-k for selection rules (EntropyTopK): a radix select over
// the candidates' 64-bit keys (patcher/policy.hpp, topk_key), eight passes of
// eight bits, all on the device. Each pass counts, per sequence, the next
// digit of the keys that match the prefix decided so far, then picks the
// digit that holds the k-th largest key. Keys are distinct, so after the last
// pass the prefix is exactly the k-th largest key: the selected candidates are
// those at or above it. Counts are integers, so the result is deterministic.
#include <tokenless/core/block.cuh>
#include <tokenless/core/launch.cuh>
#include <tokenless/core/warp.cuh>
#include <tokenless/patcher/kernel.cuh>
#include <tokenless/patcher/policy.hpp>

#include <cstdint>

namespace tokenless::patcher::detail {

inline constexpr int kSelectBins = 256;
inline constexpr int kSelectPasses = 8;
inline constexpr int kSelectThreads = 256;

struct SelectState {
  std::uint64_t prefix;     // the key bits decided so far
  std::int64_t remaining;   // rank (1-based) of the wanted key among those matching the prefix;
                            // 0: select nothing; -1: resolved (every key matching the prefix is selected)
};

// The sequence that byte j belongs to: cu[b] <= j < cu[b + 1].
TL_DEVICE TL_FORCEINLINE std::int64_t sequence_of_byte(const std::int32_t* cu, std::int64_t num_seqs, std::int64_t j) {
  std::int64_t lo = 0, hi = num_seqs;
  while (hi - lo > 1) {
    const std::int64_t mid = (lo + hi) / 2;
    if (cu[mid] <= j) lo = mid;
    else hi = mid;
  }
  return lo;
}

template <class Rule>
__global__ void select_init_kernel(Rule rule, const std::int32_t* cu, std::int64_t num_seqs, SelectState* state,
                                   std::uint32_t* hist, const DeviceStatus* status) {
  if (status->code != kOk) return;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (std::int64_t b = first; b < num_seqs; b += stride) state[b] = {0, rule.k(cu[b + 1] - cu[b])};
  for (std::int64_t i = first; i < num_seqs * kSelectBins; i += stride) hist[i] = 0;
}

// Adds one count for every lane's bin (bin < 0: nothing to count). Bins
// below kSelectBins are the block's shared counts, the rest global. The warp
// first adds up the lanes that share its first counting lane's bin with one
// atomic: nonnegative entropies share their top digits (with BLT's range
// nearly every key falls in one or two bins of the first pass), and atomics
// on one address serialise. The other lanes then add one each.
TL_DEVICE TL_FORCEINLINE void count_bins(std::int64_t bin, std::uint32_t* local, std::uint32_t* global) {
  const unsigned counting = __ballot_sync(warp::kFullMask, bin >= 0);
  if (counting == 0) return;
  const int leader = __ffs(static_cast<int>(counting)) - 1;
  const std::int64_t lead_bin = warp::broadcast(bin, leader);
  const unsigned same = __ballot_sync(warp::kFullMask, bin == lead_bin);
  const bool lead = static_cast<int>(warp::lane_id()) == leader;
  if (!lead && (bin < 0 || bin == lead_bin)) return;
  const std::uint32_t n = lead ? static_cast<std::uint32_t>(__popc(same)) : 1u;
  const std::int64_t at = lead ? lead_bin : bin;
  if (at < kSelectBins) atomicAdd(&local[at], n);
  else atomicAdd(&global[at], n);
}

// Counts digit (key >> shift) & 255 of every candidate whose higher bits match
// its sequence's prefix. A block takes one contiguous chunk of bytes and
// counts the chunk's first sequence in shared memory (for long sequences,
// nearly every candidate); the rest go to global atomics. A block whose
// sequences are all settled (resolved, or nothing to select) returns before
// reading an entropy: with continuous entropies that is every block of the
// passes over the position bits.
template <int = 0>
__global__ void __launch_bounds__(kSelectThreads) select_count_kernel(const float* entropies, const std::int32_t* cu,
                                                                      std::int64_t num_seqs, std::int64_t n_total,
                                                                      int shift, const SelectState* state,
                                                                      std::uint32_t* hist, const DeviceStatus* status) {
  if (status->code != kOk) return;
  __shared__ std::uint32_t local[kSelectBins];
  for (int i = static_cast<int>(threadIdx.x); i < kSelectBins; i += blockDim.x) local[i] = 0;
  const std::int64_t chunk = (n_total + gridDim.x - 1) / gridDim.x;
  const std::int64_t lo = static_cast<std::int64_t>(blockIdx.x) * chunk;
  const std::int64_t hi = lo + chunk < n_total ? lo + chunk : n_total;
  const std::int64_t b0 = lo < hi ? sequence_of_byte(cu, num_seqs, lo) : 0;
  const std::int64_t b_end = lo < hi ? sequence_of_byte(cu, num_seqs, hi - 1) + 1 : 0;
  bool open = false;
  for (std::int64_t s = b0 + threadIdx.x; s < b_end; s += blockDim.x) open = open || state[s].remaining > 0;
  if (!__syncthreads_or(open)) return;  // the barrier also orders the zeroed counts before their use
  std::uint32_t* global = hist + b0 * kSelectBins;  // bin (b - b0) * 256 + digit
  std::int64_t b = b0;
  for (std::int64_t base = lo; base < hi; base += blockDim.x) {  // block-uniform trips: the warp votes in count_bins
    const std::int64_t j = base + threadIdx.x;
    std::int64_t bin = -1;
    if (j < hi) {
      if (cu[b + 1] <= j) b = b + 2 <= num_seqs && cu[b + 2] > j ? b + 1 : sequence_of_byte(cu, num_seqs, j);
      const std::int64_t l = j - cu[b];
      const SelectState st = state[b];
      // H[0] is no candidate; settled sequences read no entropy.
      if (l > 0 && st.remaining > 0) {
        const std::uint64_t key = topk_key(entropies[j], l - 1);
        if (shift + 8 >= 64 || ((key ^ st.prefix) >> (shift + 8)) == 0)
          bin = (b - b0) * kSelectBins + static_cast<std::int64_t>((key >> shift) & (kSelectBins - 1));
      }
    }
    count_bins(bin, local, global);
  }
  __syncthreads();
  for (int i = static_cast<int>(threadIdx.x); i < kSelectBins; i += blockDim.x)
    if (local[i]) atomicAdd(&global[i], local[i]);
}

// A block per sequence: the digit whose bin holds the remaining rank, counting
// from the top digit down. Clears the bins for the next pass. When the bin
// holds exactly the keys still wanted, they are all selected and the sequence
// is resolved early: its smallest selected key is the prefix with zeros below,
// and later passes skip it (with continuous entropies, usually once the 32
// entropy bits are decided, so the position bits cost no reads). After the
// last pass every sequence has its smallest selected key (kSelectNone: k = 0).
template <int = 0>
__global__ void __launch_bounds__(kSelectThreads) select_pick_kernel(std::int64_t num_seqs, int shift, bool last,
                                                                     SelectState* state, std::uint32_t* hist,
                                                                     std::uint64_t* selected_from,
                                                                     const DeviceStatus* status) {
  static_assert(kSelectThreads == kSelectBins, "one thread per bin");
  using Scan = block::Scan<std::int64_t, kSelectThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  if (status->code != kOk) return;
  const int digit = kSelectBins - 1 - static_cast<int>(threadIdx.x);  // thread 0 holds the top digit
  for (std::int64_t b = blockIdx.x; b < num_seqs; b += gridDim.x) {
    const SelectState st = state[b];
    std::uint32_t* h = hist + b * kSelectBins;
    const std::int64_t count = h[digit];
    std::int64_t total = 0;
    const std::int64_t above = Scan::exclusive(count, Sum{}, std::int64_t{0}, total, scan_storage);  // keys in higher digits
    if (st.remaining > 0 && above < st.remaining && st.remaining <= above + count) {
      const std::uint64_t prefix = st.prefix | (static_cast<std::uint64_t>(digit) << shift);
      const std::int64_t rank = st.remaining - above;
      const bool resolved = rank == count;  // every key of this bin is wanted
      state[b] = {prefix, resolved ? -1 : rank};
      if (resolved || last) selected_from[b] = prefix;
    }
    if (st.remaining == 0 && last && threadIdx.x == 0) selected_from[b] = kSelectNone;
    h[digit] = 0;
    __syncthreads();  // the scan storage is reused by the next sequence
  }
}

// Runs the selection: state [B], hist [B * 256], selected_from [B].
template <class Rule>
Status select_topk(const Rule& rule, const float* entropies, const std::int32_t* cu, std::int64_t num_seqs,
                   std::int64_t n_total, SelectState* state, std::uint32_t* hist, std::uint64_t* selected_from,
                   const DeviceStatus* status, int sm_count, cudaStream_t stream) {
  const auto blocks = [&](std::int64_t work, std::int64_t cap) {
    return dim3(static_cast<unsigned>(std::max<std::int64_t>(1, std::min<std::int64_t>(work, cap))));
  };
  const std::int64_t cap = std::int64_t{sm_count} * 16;
  TL_RETURN_IF_ERROR(launch(select_init_kernel<Rule>, {blocks((num_seqs * kSelectBins + 255) / 256, cap), dim3(256), 0,
                                                       stream},
                            rule, cu, num_seqs, state, hist, status));
  for (int pass = 0; pass < kSelectPasses; ++pass) {
    const int shift = 64 - 8 * (pass + 1);
    TL_RETURN_IF_ERROR(launch(select_count_kernel<>, {blocks((n_total + 4095) / 4096, cap), dim3(kSelectThreads), 0,
                                                      stream},
                              entropies, cu, num_seqs, n_total, shift, static_cast<const SelectState*>(state), hist,
                              status));
    TL_RETURN_IF_ERROR(launch(select_pick_kernel<>, {blocks(num_seqs, cap), dim3(kSelectThreads), 0, stream}, num_seqs,
                              shift, pass + 1 == kSelectPasses, state, hist, selected_from, status));
  }
  return Status::ok();
}

}  // namespace tokenless::patcher::detail
