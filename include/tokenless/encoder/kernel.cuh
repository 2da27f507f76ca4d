#pragma once
// Byte + hash n-gram embedding schedules.
//
// Forward: a warp per token. Lane t computes table t's bucket in registers
// from the token's window of ids; the warp then gathers the byte row and every
// hash row with 16-byte loads, accumulates in fp32 and writes the sum once:
// no per-table intermediate ever reaches memory.
//
// Backward: the same gather pattern scattering with fp32 atomics, or a
// deterministic path: keys per (table, token), a stable sort by bucket, and a
// segmented reduction in which each gradient row is summed by one warp in
// token order, so results are bit-identical from run to run.
#include <tokenless/core/launch.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/vec.hpp>
#include <tokenless/encoder/policy.hpp>

#include <cstdint>
#include <type_traits>

namespace tokenless::encoder::detail {

inline constexpr unsigned long long kNoError = ~0ull;
inline constexpr int kWarpsPerBlock = 8;
inline constexpr int kChunkVecs = 4;  // vectors per lane per column chunk: bounds the fp32 accumulators

template <class Ids, class IdT>
TL_DEVICE TL_FORCEINLINE std::int32_t load_id(const IdT* ids, std::int64_t i) {
  if constexpr (std::is_same_v<IdT, std::uint8_t>) return static_cast<std::int32_t>(ids[i]) + Ids::kOffset;
  else return static_cast<std::int32_t>(ids[i]);
}

// Start of the sequence that token `tok` belongs to.
TL_DEVICE TL_FORCEINLINE std::int64_t sequence_start(std::int64_t tok, const Batch& batch) {
  if (!batch.cu_seqlens) return tok / batch.seq_len * batch.seq_len;
  std::int64_t lo = 0, hi = batch.num_seqs;  // cu[lo] <= tok < cu[hi]
  while (hi - lo > 1) {
    const std::int64_t mid = (lo + hi) / 2;
    if (batch.cu_seqlens[mid] <= tok) lo = mid;
    else hi = mid;
  }
  return batch.cu_seqlens[lo];
}

// Bucket of table t for the n-gram ending at `tok`. The window lives in
// registers: every index below is a compile-time constant after unrolling.
template <class P, class IdT>
TL_DEVICE std::int64_t table_bucket(const IdT* ids, std::int64_t tok, std::int64_t start, int t, std::int64_t V) {
  constexpr int kMaxN = P::ngrams::max;
  std::int32_t w[kMaxN];
  TL_UNROLL
  for (int j = 0; j < kMaxN; ++j) {
    const std::int64_t pos = tok - (kMaxN - 1) + j;
    w[j] = pos >= start ? load_id<typename P::ids>(ids, pos) : 0;
  }
  const int n = P::ngram_of(t);
  const std::uint64_t p = blt_prime(P::function_of(t));
  std::uint64_t h = 0;
  TL_UNROLL
  for (int j = kMaxN - 1; j >= 0; --j) {
    if (j >= kMaxN - n) h = h * p + static_cast<std::uint64_t>(static_cast<std::int64_t>(w[j]));
  }
  return blt_bucket(static_cast<std::int64_t>(h), V);
}

template <class P, class T, class IdT>
struct ForwardParams {
  const IdT* ids;
  std::int64_t n_tokens;
  Batch batch;
  const T* byte_table;
  typename P::layout::template Tables<const T, P::tables> tables;
  std::int64_t V;
  int d;
  float scale;
  T* out;
  const unsigned long long* error;  // null when there is nothing to validate
};

template <class T, int kVec>
TL_DEVICE TL_FORCEINLINE void accumulate_row(float (&acc)[kChunkVecs][kVec], const T* row, int c0, int d, int lane) {
  TL_UNROLL
  for (int u = 0; u < kChunkVecs; ++u) {
    const int col = c0 + (u * 32 + lane) * kVec;
    if (col < d) {
      const Vec<T, kVec> x = *reinterpret_cast<const Vec<T, kVec>*>(row + col);
      TL_UNROLL
      for (int e = 0; e < kVec; ++e) acc[u][e] += to_float(x.v[e]);
    }
  }
}

template <class P, class T, class IdT, int kVec>
__global__ void __launch_bounds__(kWarpsPerBlock * 32, 2) forward_kernel(ForwardParams<P, T, IdT> p) {
  constexpr int K = P::tables;
  if (p.error && (p.error[0] != kNoError || p.error[1] != kNoError)) return;  // bad input: write nothing
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kWarpsPerBlock;
  for (std::int64_t tok = first; tok < p.n_tokens; tok += stride) {
    const std::int64_t start = sequence_start(tok, p.batch);
    const std::int64_t mine = lane < K ? table_bucket<P>(p.ids, tok, start, lane, p.V) : 0;
    const std::int64_t id = load_id<typename P::ids>(p.ids, tok);
    const T* byte_row = p.byte_table + id * p.d;
    T* out_row = p.out + tok * p.d;
    for (int c0 = 0; c0 < p.d; c0 += 32 * kVec * kChunkVecs) {
      float acc[kChunkVecs][kVec] = {};
      accumulate_row<T, kVec>(acc, byte_row, c0, p.d, lane);
      // Partly unrolled: enough loads in flight, without the 18 tables of
      // BLT's default policy hoisting every load into registers.
      TL_UNROLL_N(3)
      for (int t = 0; t < K; ++t) {
        const std::int64_t b = __shfl_sync(0xffffffffu, mine, t);
        accumulate_row<T, kVec>(acc, p.tables.row(t, b, p.d), c0, p.d, lane);
      }
      TL_UNROLL
      for (int u = 0; u < kChunkVecs; ++u) {
        const int col = c0 + (u * 32 + lane) * kVec;
        if (col < p.d) {
          Vec<T, kVec> y;
          TL_UNROLL
          for (int e = 0; e < kVec; ++e) y.v[e] = from_float<T>(acc[u][e] * p.scale);
          *reinterpret_cast<Vec<T, kVec>*>(out_row + col) = y;
        }
      }
    }
  }
}

// Flags the first id outside the vocabulary (error[0]) and the first
// inconsistent cu_seqlens entry (error[1]); both start as kNoError.
template <class P, class IdT>
__global__ void validate_kernel(const IdT* ids, std::int64_t n, Batch batch, unsigned long long* error) {
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  if constexpr (!std::is_same_v<IdT, std::uint8_t>) {
    for (std::int64_t i = first; i < n; i += stride) {
      const std::int64_t id = ids[i];
      if (id < 0 || id >= P::ids::kVocab) atomicMin(&error[0], static_cast<unsigned long long>(i));
    }
  }
  if (batch.cu_seqlens) {
    for (std::int64_t b = first; b <= batch.num_seqs; b += stride) {
      const std::int64_t c = batch.cu_seqlens[b];
      const bool bad = (b == 0 && c != 0) || (b > 0 && c < batch.cu_seqlens[b - 1]) || (b == batch.num_seqs && c != n);
      if (bad) atomicMin(&error[1], static_cast<unsigned long long>(b));
    }
  }
}

template <class P, class T, class IdT>
struct BackwardParams {
  const IdT* ids;
  std::int64_t n_tokens;
  Batch batch;
  const T* grad_out;
  float* grad_byte;
  typename P::layout::template Tables<float, P::tables> grad_tables;
  std::int64_t V;
  int d;
  float scale;
  const unsigned long long* error;
};

template <class T, int kVec>
TL_DEVICE TL_FORCEINLINE void scatter_row(float* row, const float (&g)[kChunkVecs][kVec], int c0, int d, int lane) {
  TL_UNROLL
  for (int u = 0; u < kChunkVecs; ++u) {
    const int col = c0 + (u * 32 + lane) * kVec;
    if (col < d) {
      TL_UNROLL
      for (int e = 0; e < kVec; ++e) atomicAdd(row + col + e, g[u][e]);
    }
  }
}

template <class P, class T, class IdT, int kVec>
__global__ void __launch_bounds__(kWarpsPerBlock * 32, 2) backward_atomic_kernel(BackwardParams<P, T, IdT> p) {
  constexpr int K = P::tables;
  if (p.error && (p.error[0] != kNoError || p.error[1] != kNoError)) return;
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kWarpsPerBlock;
  for (std::int64_t tok = first; tok < p.n_tokens; tok += stride) {
    const std::int64_t start = sequence_start(tok, p.batch);
    const std::int64_t mine = lane < K ? table_bucket<P>(p.ids, tok, start, lane, p.V) : 0;
    const std::int64_t id = load_id<typename P::ids>(p.ids, tok);
    const T* g_row = p.grad_out + tok * p.d;
    for (int c0 = 0; c0 < p.d; c0 += 32 * kVec * kChunkVecs) {
      float g[kChunkVecs][kVec] = {};
      accumulate_row<T, kVec>(g, g_row, c0, p.d, lane);
      TL_UNROLL
      for (int u = 0; u < kChunkVecs; ++u)
        TL_UNROLL
        for (int e = 0; e < kVec; ++e) g[u][e] *= p.scale;
      scatter_row<T, kVec>(p.grad_byte + id * p.d, g, c0, p.d, lane);
      TL_UNROLL_N(3)
      for (int t = 0; t < K; ++t) {
        const std::int64_t b = __shfl_sync(0xffffffffu, mine, t);
        scatter_row<T, kVec>(p.grad_tables.row(t, b, p.d), g, c0, p.d, lane);
      }
    }
  }
}

// Deterministic path, step 1: key (row within its table) and value (token)
// for table 0 = the byte table and tables 1..K = the hash tables.
template <class P, class IdT>
__global__ void keys_kernel(const IdT* ids, std::int64_t n, Batch batch, std::int64_t V, std::uint32_t* keys,
                            std::int32_t* tokens, const unsigned long long* error) {
  constexpr int K = P::tables;
  if (error && (error[0] != kNoError || error[1] != kNoError)) return;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t tok = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; tok < n; tok += stride) {
    const std::int64_t start = sequence_start(tok, batch);
    keys[tok] = static_cast<std::uint32_t>(load_id<typename P::ids>(ids, tok));
    tokens[tok] = static_cast<std::int32_t>(tok);
    TL_UNROLL
    for (int t = 0; t < K; ++t) {
      keys[(t + 1) * n + tok] = static_cast<std::uint32_t>(table_bucket<P>(ids, tok, start, t, V));
      tokens[(t + 1) * n + tok] = static_cast<std::int32_t>(tok);
    }
  }
}

// Step 3: a warp per run of equal keys sums the run's gradient rows in token
// order and adds the sum to the row it owns alone.
template <class P, class T, class IdT, int kVec>
__global__ void __launch_bounds__(kWarpsPerBlock * 32, 2)
    segment_reduce_kernel(BackwardParams<P, T, IdT> p, const std::uint32_t* keys, const std::int32_t* tokens,
                          const unsigned long long* error) {
  constexpr int K = P::tables;
  if (error && (error[0] != kNoError || error[1] != kNoError)) return;
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const std::int64_t n = p.n_tokens;
  const std::int64_t total = (K + 1) * n;
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kWarpsPerBlock;
  for (std::int64_t g = static_cast<std::int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5); g < total;
       g += stride) {
    const std::int64_t t = g / n, k = g % n;
    const std::uint32_t key = keys[g];
    if (k > 0 && keys[g - 1] == key) continue;  // not the head of a run
    std::int64_t end = k + 1;
    while (end < n && keys[t * n + end] == key) ++end;
    float* dst = t == 0 ? p.grad_byte + static_cast<std::int64_t>(key) * p.d
                        : p.grad_tables.row(static_cast<int>(t - 1), key, p.d);
    for (int c0 = 0; c0 < p.d; c0 += 32 * kVec * kChunkVecs) {
      float acc[kChunkVecs][kVec] = {};
      for (std::int64_t r = k; r < end; ++r) {
        accumulate_row<T, kVec>(acc, p.grad_out + static_cast<std::int64_t>(tokens[t * n + r]) * p.d, c0, p.d, lane);
      }
      TL_UNROLL
      for (int u = 0; u < kChunkVecs; ++u) {
        const int col = c0 + (u * 32 + lane) * kVec;
        if (col < p.d) {
          TL_UNROLL
          for (int e = 0; e < kVec; ++e) dst[col + e] += acc[u][e] * p.scale;
        }
      }
    }
  }
}

}  // namespace tokenless::encoder::detail
