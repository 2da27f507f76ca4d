#pragma once
// Radix selects on the device: the per-sequence top-k of EntropyTopK, and
// the calibration threshold of Calibrate.
//
// Per-sequence top-k for selection rules (EntropyTopK): a radix select over
// the candidates' 64-bit keys (patcher/policy.hpp, topk_key), eight passes of
// eight bits, all on the device. Each pass counts, per sequence, the next
// digit of the keys that match the prefix decided so far, then picks the
// digit that holds the k-th largest key. Keys are distinct, so after the last
// pass the prefix is exactly the k-th largest key: the selected candidates are
// those at or above it. Counts are integers, so the result is deterministic.
#include <tokenless/core/block.cuh>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/warp.cuh>
#include <tokenless/patcher/kernel.cuh>
#include <tokenless/patcher/policy.hpp>

#include <cmath>
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

template <class Rule>
struct SelectInitKernel {
  struct Params {
    Rule rule;
    VarlenBatch batch;
    SelectState* state;
    std::uint32_t* hist;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.batch.num_seqs, [&](std::int64_t b) { p.state[b] = {0, p.rule.k(p.batch.length(b))}; });
    work::thread_items(p.batch.num_seqs * kSelectBins, [&](std::int64_t i) { p.hist[i] = 0; });
  }
};

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
struct SelectCountKernel {
  struct Params {
    const float* entropies;
    VarlenBatch batch;
    int shift;
    const SelectState* state;
    std::uint32_t* hist;
    DeviceStatus* status;
  };
  static constexpr int kThreads = kSelectThreads;
  struct SharedStorage {
    std::uint32_t local[kSelectBins];
  };
  TL_DEVICE void operator()(const Params& p, SharedStorage& smem) const {
    const VarlenBatch& batch = p.batch;
    const std::int64_t n_total = batch.total, num_seqs = batch.num_seqs;
    std::uint32_t* local = smem.local;
    for (int i = static_cast<int>(threadIdx.x); i < kSelectBins; i += blockDim.x) local[i] = 0;
    const std::int64_t chunk = (n_total + gridDim.x - 1) / gridDim.x;
    const std::int64_t lo = static_cast<std::int64_t>(blockIdx.x) * chunk;
    const std::int64_t hi = lo + chunk < n_total ? lo + chunk : n_total;
    const std::int64_t b0 = lo < hi ? batch.seq_of(lo) : 0;
    const std::int64_t b_end = lo < hi ? batch.seq_of(hi - 1) + 1 : 0;
    bool open = false;
    for (std::int64_t s = b0 + threadIdx.x; s < b_end; s += blockDim.x) open = open || p.state[s].remaining > 0;
    if (!__syncthreads_or(open)) return;  // the barrier also orders the zeroed counts before their use
    std::uint32_t* global = p.hist + b0 * kSelectBins;  // bin (b - b0) * 256 + digit
    std::int64_t b = b0;
    for (std::int64_t base = lo; base < hi; base += blockDim.x) {  // block-uniform trips: the warp votes in count_bins
      const std::int64_t j = base + threadIdx.x;
      std::int64_t bin = -1;
      if (j < hi) {
        if (batch.start(b + 1) <= j) b = b + 2 <= num_seqs && batch.start(b + 2) > j ? b + 1 : batch.seq_of(j);
        const std::int64_t l = j - batch.start(b);
        const SelectState st = p.state[b];
        // H[0] is no candidate; settled sequences read no entropy.
        if (l > 0 && st.remaining > 0) {
          const std::uint64_t key = topk_key(p.entropies[j], l - 1);
          if (p.shift + 8 >= 64 || ((key ^ st.prefix) >> (p.shift + 8)) == 0)
            bin = (b - b0) * kSelectBins + static_cast<std::int64_t>((key >> p.shift) & (kSelectBins - 1));
        }
      }
      count_bins(bin, local, global);
    }
    __syncthreads();
    for (int i = static_cast<int>(threadIdx.x); i < kSelectBins; i += blockDim.x)
      if (local[i]) atomicAdd(&global[i], local[i]);
  }
};

// A block per sequence: the digit whose bin holds the remaining rank, counting
// from the top digit down. Clears the bins for the next pass. When the bin
// holds exactly the keys still wanted, they are all selected and the sequence
// is resolved early: its smallest selected key is the prefix with zeros below,
// and later passes skip it (with continuous entropies, usually once the 32
// entropy bits are decided, so the position bits cost no reads). After the
// last pass every sequence has its smallest selected key (kSelectNone: k = 0).
struct SelectPickKernel {
  struct Params {
    std::int64_t num_seqs;
    int shift;
    bool last;
    SelectState* state;
    std::uint32_t* hist;
    std::uint64_t* selected_from;
    DeviceStatus* status;
  };
  static constexpr int kThreads = kSelectThreads;
  static_assert(kSelectThreads == kSelectBins, "one thread per bin");
  using Scan = block::Scan<std::int64_t, kSelectThreads>;
  using SharedStorage = typename Scan::TempStorage;
  TL_DEVICE void operator()(const Params& p, SharedStorage& scan_storage) const {
    const int digit = kSelectBins - 1 - static_cast<int>(threadIdx.x);  // thread 0 holds the top digit
    work::block_items(p.num_seqs, [&](std::int64_t b) {
      const SelectState st = p.state[b];
      std::uint32_t* h = p.hist + b * kSelectBins;
      const std::int64_t count = h[digit];
      std::int64_t total = 0;
      const std::int64_t above = Scan::exclusive(count, Sum{}, std::int64_t{0}, total, scan_storage);  // keys in higher digits
      if (st.remaining > 0 && above < st.remaining && st.remaining <= above + count) {
        const std::uint64_t prefix = st.prefix | (static_cast<std::uint64_t>(digit) << p.shift);
        const std::int64_t rank = st.remaining - above;
        const bool resolved = rank == count;  // every key of this bin is wanted
        p.state[b] = {prefix, resolved ? -1 : rank};
        if (resolved || p.last) p.selected_from[b] = prefix;
      }
      if (st.remaining == 0 && p.last && threadIdx.x == 0) p.selected_from[b] = kSelectNone;
      h[digit] = 0;
      __syncthreads();  // the scan storage is reused by the next sequence
    });
  }
};

// Runs the selection: state [B], hist [B * 256], selected_from [B]. Grids:
// at most Tuning::select_blocks_per_sm blocks per SM.
template <class Rule>
Status select_topk(const Rule& rule, const float* entropies, const VarlenBatch& batch, SelectState* state,
                   std::uint32_t* hist, std::uint64_t* selected_from, DeviceStatus* status, cudaStream_t stream) {
  const int per_sm = tuning_for(compute_capability()).select_blocks_per_sm;
  TL_RETURN_IF_ERROR(launch<SelectInitKernel<Rule>>({rule, batch, state, hist, status},
                                                    grid_for(batch.num_seqs * kSelectBins, 256, per_sm), stream));
  for (int pass = 0; pass < kSelectPasses; ++pass) {
    const int shift = 64 - 8 * (pass + 1);
    TL_RETURN_IF_ERROR(launch<SelectCountKernel>({entropies, batch, shift, state, hist, status},
                                                 grid_for(batch.total, 4096, per_sm), stream));
    TL_RETURN_IF_ERROR(launch<SelectPickKernel>({batch.num_seqs, shift, pass + 1 == kSelectPasses, state, hist,
                                                 selected_from, status},
                                                grid_for(batch.num_seqs, 1, per_sm), stream));
  }
  return Status::ok();
}

// ------------------------------------------------------------------ calibration

// With the global rule, the patches of threshold θ are `base` (the first-two
// rule: min(2, positions) per sequence) plus the rule entropies above θ. So
// the smallest θ with at most `target` patches is the (c + 1)-th largest rule
// entropy, c = floor(target - base): exactly c entropies lie above it (fewer
// on ties). A radix select over the entropies' order-preserving bits finds it
// in four passes of eight bits, on the device.
struct ThresholdState {
  unsigned prefix;              // the key bits decided so far
  unsigned rank;                // 1-based rank of the wanted key among those matching the prefix
  int all_fire;                 // target allows every rule entropy: θ = (smallest) - 1
  int none;                     // no rule entropy: θ = 0
  unsigned long long base;      // patches every threshold gives
  unsigned long long hist[256];
};

inline constexpr int kCalibrateThreads = 256;
inline constexpr int kCalibratePasses = 4;

// Whether entropy index i (global) feeds a rule position (p = local i + 1 >= 2).
TL_DEVICE TL_FORCEINLINE bool feeds_rule(const Positions& layout, std::int64_t i) {
  const std::int64_t b = layout.batch.seq_of(i);
  const std::int64_t local = i - layout.batch.start(b), n = layout.batch.length(b);
  return local >= 1 && local + 1 < n + layout.inc;
}

// Float bits that order as the floats do (NaN excluded by the caller).
TL_DEVICE TL_FORCEINLINE unsigned ordered_bits(float x) {
  const unsigned b = __float_as_uint(x);
  return b & 0x80000000u ? ~b : b | 0x80000000u;
}
TL_DEVICE TL_FORCEINLINE float from_ordered_bits(unsigned k) {
  return __uint_as_float(k & 0x80000000u ? k & 0x7fffffffu : ~k);
}

struct CalibrateResetKernel {
  struct Params {
    ThresholdState* st;
    DeviceStatus* status;
  };
  static constexpr int kThreads = kCalibrateThreads;
  TL_DEVICE void operator()(const Params& p) const {
    ThresholdState* st = p.st;
    for (int i = static_cast<int>(threadIdx.x); i < 256; i += blockDim.x) st->hist[i] = 0;
    if (threadIdx.x == 0) {
      st->prefix = 0;
      st->rank = 0;
      st->all_fire = 0;
      st->none = 0;
      st->base = 0;
    }
  }
};

// Counts digit `shift` of the rule entropies that match the prefix; the
// first pass also counts the base patches. Shared counts per block, with the
// warp's lanes that share a bin added by one atomic (entropies share their
// top bits), then one global add per bin.
struct CalibrateCountKernel {
  struct Params {
    Positions layout;
    const float* h;
    int shift;
    ThresholdState* st;
    DeviceStatus* status;
  };
  static constexpr int kThreads = kCalibrateThreads;
  using R = block::Reduce<unsigned long long, kThreads>;
  struct SharedStorage {
    std::uint32_t local[256];
    typename R::TempStorage reduce;
  };
  TL_DEVICE void operator()(const Params& p, SharedStorage& smem) const {
    const Positions& layout = p.layout;
    ThresholdState* st = p.st;
    const std::int64_t n_total = layout.batch.total;
    std::uint32_t* local = smem.local;
    for (int i = static_cast<int>(threadIdx.x); i < 256; i += blockDim.x) local[i] = 0;
    __syncthreads();
    const unsigned prefix = st->prefix;
    const bool first = p.shift == 24;
    work::block_strided(n_total, [&](std::int64_t i, bool valid) {  // block-uniform trips: count_bins votes
      std::int64_t bin = -1;
      if (valid) {
        const float x = p.h[i];
        if (x == x && feeds_rule(layout, i)) {
          const unsigned key = ordered_bits(x);
          if (first || (key ^ prefix) >> (p.shift + 8) == 0) bin = static_cast<std::int64_t>((key >> p.shift) & 255u);
        }
      }
      count_bins(bin, local, nullptr);
    });
    unsigned long long base = 0;
    if (first) {
      work::thread_items(layout.batch.num_seqs, [&](std::int64_t b) {
        const long long m = layout.batch.length(b) + layout.inc;
        base += static_cast<unsigned long long>(m < 2 ? m : 2);
      });
    }
    __syncthreads();
    for (int i = static_cast<int>(threadIdx.x); i < 256; i += blockDim.x)
      if (local[i]) atomicAdd(&st->hist[i], static_cast<unsigned long long>(local[i]));
    if (first) {
      base = R::reduce(base, Sum{}, smem.reduce);
      if (threadIdx.x == 0 && base) atomicAdd(&st->base, base);
    }
  }
};

// One block of 256 threads, a thread per bin: picks the digit that holds the
// wanted rank (the first pass also fixes the rank from the target), clears
// the counts, and after the last pass writes θ.
struct CalibratePickKernel {
  struct Params {
    Positions layout;
    float target_size;
    int shift;
    ThresholdState* st;
    float* threshold;
    DeviceStatus* status;
  };
  static constexpr int kThreads = kCalibrateThreads;
  using Scan = block::Scan<unsigned long long, kThreads>;
  struct SharedStorage {
    typename Scan::TempStorage scan;
    unsigned long long wanted;
  };
  TL_DEVICE void operator()(const Params& p, SharedStorage& smem) const {
    ThresholdState* st = p.st;
    const int shift = p.shift;
    const int digit = 255 - static_cast<int>(threadIdx.x);  // thread 0 holds the top digit
    const unsigned long long count = st->hist[digit];
    unsigned long long total = 0;
    const unsigned long long above = Scan::exclusive(count, Sum{}, 0ull, total, smem.scan);
    if (shift == 24 && threadIdx.x == 0) {
      // Rank of the wanted entropy among all M = total rule entropies.
      const double positions = static_cast<double>(p.layout.batch.total + p.layout.batch.num_seqs * p.layout.inc);
      const double room = positions / static_cast<double>(p.target_size) - static_cast<double>(st->base);
      const double c = room < 0 ? 0.0 : floor(room);
      if (total == 0) {
        st->none = 1;
      } else if (c >= static_cast<double>(total)) {
        st->all_fire = 1;  // every rule entropy may fire: select the smallest
        st->rank = static_cast<unsigned>(total);
      } else {
        st->rank = static_cast<unsigned>(c) + 1;
      }
      smem.wanted = st->rank;
    }
    __syncthreads();
    const unsigned long long rank = shift == 24 ? smem.wanted : st->rank;
    __syncthreads();  // every thread has read the rank before it changes
    if (!st->none && rank > above && rank <= above + count) {
      st->prefix |= static_cast<unsigned>(digit) << shift;
      st->rank = static_cast<unsigned>(rank - above);
    }
    st->hist[digit] = 0;
    if (shift == 0) {
      __syncthreads();
      if (threadIdx.x == 0) {
        const float v = from_ordered_bits(st->prefix);
        *p.threshold = st->none ? 0.0f : st->all_fire ? v - 1.0f : v;
      }
    }
  }
};

}  // namespace tokenless::patcher::detail
