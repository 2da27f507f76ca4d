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
#include <tokenless/core/block.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/functional.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/vec.hpp>
#include <tokenless/encoder/policy.hpp>

#include <cstdint>
#include <type_traits>

namespace tokenless::encoder::detail {

inline constexpr int kWarpsPerBlock = 8;
inline constexpr int kThreads = kWarpsPerBlock * 32;
// The encoder's device-side checks, after core's batch check.
enum : int { kCheckIds = kFirstOperationCheck, kCheckCapacity };
inline constexpr int kChunkVecs = 4;  // vectors per lane per column chunk: bounds the fp32 accumulators

template <class Ids, class IdT>
TL_DEVICE TL_FORCEINLINE std::int32_t load_id(const IdT* ids, std::int64_t i) {
  if constexpr (std::is_same_v<IdT, std::uint8_t>) return static_cast<std::int32_t>(ids[i]) + Ids::kOffset;
  else return static_cast<std::int32_t>(ids[i]);
}

// Start of the sequence that token `tok` belongs to.
TL_DEVICE TL_FORCEINLINE std::int64_t sequence_start(std::int64_t tok, const VarlenBatch& batch) {
  return batch.start(batch.seq_of(tok));
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
  VarlenBatch batch;
  const T* byte_table;
  typename P::layout::template Tables<const T, P::tables> tables;
  std::int64_t V;
  int d;
  float scale;
  T* out;
  DeviceStatus* status;  // null when there is nothing to validate
};

template <class T, int kVec, int kChunk>
TL_DEVICE TL_FORCEINLINE void accumulate_row(float (&acc)[kChunk][kVec], const T* row, int c0, int d, int lane) {
  TL_UNROLL
  for (int u = 0; u < kChunk; ++u) {
    const int col = c0 + (u * 32 + lane) * kVec;
    if (col < d) {
      const Vec<T, kVec> x = *reinterpret_cast<const Vec<T, kVec>*>(row + col);
      TL_UNROLL
      for (int e = 0; e < kVec; ++e) acc[u][e] += to_float(x.v[e]);
    }
  }
}

// Rows gathered per group: each lane keeps kGatherLoads 16-byte loads in
// flight whatever the row width (a 256-wide bf16 row is one vector per lane,
// so narrow rows gather more tables at once).
inline constexpr int kGatherLoads = 12;

template <class P, class T, class IdT, int kVec, int kChunk>
struct ForwardKernel {
  using Params = ForwardParams<P, T, IdT>;
  static constexpr int kThreads = detail::kThreads;
  static constexpr int kMinBlocks = 2;
  TL_DEVICE void operator()(const Params& p) const {
    constexpr int K = P::tables;
    constexpr int kGroup = kGatherLoads / kChunk;
    work::warp_items(p.batch.total, [&](std::int64_t tok, int lane) {
      const std::int64_t start = sequence_start(tok, p.batch);
      const std::int64_t mine = lane < K ? table_bucket<P>(p.ids, tok, start, lane, p.V) : 0;
      const std::int64_t id = load_id<typename P::ids>(p.ids, tok);
      const T* byte_row = p.byte_table + id * p.d;
      T* out_row = p.out + tok * p.d;
      for (int c0 = 0; c0 < p.d; c0 += 32 * kVec * kChunk) {
        float acc[kChunk][kVec] = {};
        accumulate_row<T, kVec, kChunk>(acc, byte_row, c0, p.d, lane);
        TL_UNROLL_N(1)  // one group's loads in flight at a time: BLT's default policy has 18 tables
        for (int t0 = 0; t0 < K; t0 += kGroup) {
          TL_UNROLL
          for (int g = 0; g < kGroup; ++g) {
            const int t = t0 + g;
            const std::int64_t b = __shfl_sync(0xffffffffu, mine, t < K ? t : 0);
            if (t < K) accumulate_row<T, kVec, kChunk>(acc, p.tables.row(t, b, p.d), c0, p.d, lane);
          }
        }
        TL_UNROLL
        for (int u = 0; u < kChunk; ++u) {
          const int col = c0 + (u * 32 + lane) * kVec;
          if (col < p.d) {
            Vec<T, kVec> y;
            TL_UNROLL
            for (int e = 0; e < kVec; ++e) y.v[e] = from_float<T>(acc[u][e] * p.scale);
            *reinterpret_cast<Vec<T, kVec>*>(out_row + col) = y;
          }
        }
      }
    });
  }
};

// Records the first id outside the vocabulary (int32 ids only: a byte plus
// the offset always fits).
template <class P, class IdT>
struct ValidateIdsKernel {
  struct Params {
    const IdT* ids;
    std::int64_t n;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  static constexpr bool kReportsStatus = true;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.n, [&](std::int64_t i) {
      const std::int64_t id = p.ids[i];
      if (id < 0 || id >= P::ids::kVocab) device_fail(p.status, kCheckIds, i);
    });
  }
};

template <class P, class T, class IdT, class GradT = float>
struct BackwardParams {
  const IdT* ids;
  VarlenBatch batch;
  const T* grad_out;
  GradT* grad_byte;
  typename P::layout::template Tables<GradT, P::tables> grad_tables;
  std::int64_t V;
  int d;
  float scale;
  DeviceStatus* status;
  // The sparse gradient (WriteMode::sparse): table t's touched rows are
  // rows[t * capacity + u] and their gradients values[(t * capacity + u) * d].
  struct Sparse {
    std::int32_t* rows = nullptr;
    GradT* values = nullptr;
    std::int64_t capacity = 0;
    const std::int32_t* chunk_base = nullptr;  // runs of its table that start before each chunk
    const std::int32_t* run_counts = nullptr;  // runs that start in each chunk
  } sparse{};
};

// Where the deterministic path's row sums go: added to the dense tables,
// assigned to them (a fresh dense gradient), or to a list of touched rows.
enum class WriteMode { accumulate, assign, sparse };

// Hopper has 16-byte atomics (red.global.add.v4.f32): a quarter of the
// atomic operations, each one L2 transaction. Rows are 16-byte aligned
// whenever kVec > 1 (the launcher checks).
template <int kVec>
TL_DEVICE TL_FORCEINLINE void atomic_add_vec(float* dst, const float (&v)[kVec]) {
#if defined(TOKENLESS_BACKEND_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr bool kWide = kVec % 4 == 0;
#else
  constexpr bool kWide = false;
#endif
  if constexpr (kWide) {
    TL_UNROLL
    for (int e = 0; e < kVec; e += 4)
      atomicAdd(reinterpret_cast<float4*>(dst + e), make_float4(v[e], v[e + 1], v[e + 2], v[e + 3]));
  } else {
    TL_UNROLL
    for (int e = 0; e < kVec; ++e) atomicAdd(dst + e, v[e]);
  }
}

template <class T, int kVec>
TL_DEVICE TL_FORCEINLINE void scatter_row(float* row, const float (&g)[kChunkVecs][kVec], int c0, int d, int lane) {
  TL_UNROLL
  for (int u = 0; u < kChunkVecs; ++u) {
    const int col = c0 + (u * 32 + lane) * kVec;
    if (col < d) atomic_add_vec<kVec>(row + col, g[u]);
  }
}

// (fp32 tables only: 16-bit atomics would round a row at every addition.)
template <class P, class T, class IdT, int kVec>
struct BackwardAtomicKernel {
  using Params = BackwardParams<P, T, IdT>;
  static constexpr int kThreads = detail::kThreads;
  static constexpr int kMinBlocks = 2;
  TL_DEVICE void operator()(const Params& p) const {
    constexpr int K = P::tables;
    work::warp_items(p.batch.total, [&](std::int64_t tok, int lane) {
      const std::int64_t start = sequence_start(tok, p.batch);
      const std::int64_t mine = lane < K ? table_bucket<P>(p.ids, tok, start, lane, p.V) : 0;
      const std::int64_t id = load_id<typename P::ids>(p.ids, tok);
      const T* g_row = p.grad_out + tok * p.d;
      for (int c0 = 0; c0 < p.d; c0 += 32 * kVec * kChunkVecs) {
        float g[kChunkVecs][kVec] = {};
        accumulate_row<T, kVec, kChunkVecs>(g, g_row, c0, p.d, lane);
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
    });
  }
};

// Deterministic path, step 1: key (row within its table) and value (token)
// for table 0 = the byte table and tables 1..K = the hash tables.
template <class P, class IdT>
struct KeysKernel {
  struct Params {
    const IdT* ids;
    VarlenBatch batch;
    std::int64_t V;
    std::uint32_t* keys;
    std::int32_t* tokens;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  // BLT's 18 tables unrolled: ptxas's own target (40 registers) spilled;
  // four blocks per SM allow 64.
  static constexpr int kMinBlocks = 4;
  TL_DEVICE void operator()(const Params& p) const {
    constexpr int K = P::tables;
    const std::int64_t n = p.batch.total;
    work::thread_items(n, [&](std::int64_t tok) {
      const std::int64_t start = sequence_start(tok, p.batch);
      p.keys[tok] = static_cast<std::uint32_t>(load_id<typename P::ids>(p.ids, tok));
      p.tokens[tok] = static_cast<std::int32_t>(tok);
      TL_UNROLL
      for (int t = 0; t < K; ++t) {
        p.keys[(t + 1) * n + tok] = static_cast<std::uint32_t>(table_bucket<P>(p.ids, tok, start, t, p.V));
        p.tokens[(t + 1) * n + tok] = static_cast<std::int32_t>(tok);
      }
    });
  }
};

// Step 3. The sorted (row, token) pairs of each table are cut into chunks of
// `chunk` positions (reduce_chunk: small enough that there are thousands of
// chunks, since a warp walks its chunk's runs one after the other; at most
// 1024), and each chunk into pieces of equal row. Pass A: a
// warp per chunk sums each piece in token order; a piece that is a whole run
// is added to its row, which it alone owns; a piece of a run that crosses a
// chunk boundary goes to the chunk's partial slot (slot 0: the piece that
// continues a run, slot 1: the piece that starts one). Pass B: a warp per
// crossing run adds its partials in chunk order. Fixed chunking and fixed
// order make the result bit-identical from run to run, and no warp walks more
// than one chunk of rows, however hot a byte is.
inline constexpr std::int64_t kMinReduceChunk = 32, kMaxReduceChunk = 1024;
// Rows in flight per lane for a column chunk of kChunk vectors: 6, 6 or 4
// 16-byte loads (more spill under the 128-register cap of two blocks per SM).
template <int kChunk>
inline constexpr int kReduceRows = kChunk == 1 ? 6 : kChunk == 2 ? 3 : 1;
inline constexpr std::int64_t kReduceWarps = 8192;  // chunks wanted over all tables

// A power of two between 32 and 1024 that depends only on n and the table
// count, so the result stays bit-identical on every device.
inline std::int64_t reduce_chunk(std::int64_t n, int tables) {
  const std::int64_t want = (n * tables + kReduceWarps - 1) / kReduceWarps;
  std::int64_t c = kMinReduceChunk;
  while (c < want && c < kMaxReduceChunk) c *= 2;
  return c;
}

TL_DEVICE TL_FORCEINLINE bool run_starts_at(const std::uint32_t* keys, std::int64_t k) {
  return k == 0 || keys[k - 1] != keys[k];
}

template <class P, class T, class IdT, class GradT>
TL_DEVICE TL_FORCEINLINE GradT* gradient_row(const BackwardParams<P, T, IdT, GradT>& p, std::int64_t table,
                                             std::uint32_t key) {
  return table == 0 ? p.grad_byte + static_cast<std::int64_t>(key) * p.d
                    : p.grad_tables.row(static_cast<int>(table - 1), key, p.d);
}

// The row that receives a run's sum: the run's row of the dense table, or
// the run's slot (its ordinal among table t's runs) in the sparse gradient.
template <WriteMode kMode, class P, class T, class IdT, class GradT>
TL_DEVICE TL_FORCEINLINE GradT* destination_row(const BackwardParams<P, T, IdT, GradT>& p, std::int64_t table,
                                                std::uint32_t key, std::int64_t ordinal) {
  if constexpr (kMode == WriteMode::sparse) return p.sparse.values + (table * p.sparse.capacity + ordinal) * p.d;
  else return gradient_row(p, table, key);
}

// Rows of gradient table t of the deterministic path (0: the byte table).
template <class P, class T, class IdT, class GradT>
TL_DEVICE TL_FORCEINLINE std::int64_t table_rows(const BackwardParams<P, T, IdT, GradT>& p, std::int64_t table) {
  return table == 0 ? P::ids::kVocab : p.V;
}

// kVec consecutive elements at an address aligned to kVec elements, moved in
// pieces of at most 16 bytes (a 16-byte aligned base is all the launcher checks).
template <class G, int kVec>
inline constexpr int kPiece = kVec < kVec16<G> ? kVec : kVec16<G>;

template <class G, int kVec>
TL_DEVICE TL_FORCEINLINE void load_vec(const G* src, float (&v)[kVec]) {
  constexpr int W = kPiece<G, kVec>;
  TL_UNROLL
  for (int q = 0; q < kVec; q += W) {
    const Vec<G, W> x = *reinterpret_cast<const Vec<G, W>*>(src + q);
    TL_UNROLL
    for (int e = 0; e < W; ++e) v[q + e] = to_float(x.v[e]);
  }
}

template <class G, int kVec>
TL_DEVICE TL_FORCEINLINE void store_vec(G* dst, const float (&v)[kVec]) {
  constexpr int W = kPiece<G, kVec>;
  TL_UNROLL
  for (int q = 0; q < kVec; q += W) {
    Vec<G, W> y;
    TL_UNROLL
    for (int e = 0; e < W; ++e) y.v[e] = from_float<G>(v[q + e]);
    *reinterpret_cast<Vec<G, W>*>(dst + q) = y;
  }
}

// Writes v * scale to a gradient row, or adds it (fp32 tables add in fp32;
// 16-bit tables add in fp32 and round once per row visit: per run, or per
// crossing run).
template <bool kAssign, class G, int kVec>
TL_DEVICE TL_FORCEINLINE void write_gradient(G* dst, float (&v)[kVec], float scale) {
  float old[kVec] = {};
  if constexpr (!kAssign) load_vec<G, kVec>(dst, old);
  TL_UNROLL
  for (int e = 0; e < kVec; ++e) v[e] = old[e] + v[e] * scale;
  store_vec<G, kVec>(dst, v);
}

// Assign mode: zeroes rows [lo, hi) of gradient table t, a warp's vectors at a time.
template <int kVec, class P, class T, class IdT, class GradT>
TL_DEVICE void zero_rows(const BackwardParams<P, T, IdT, GradT>& p, std::int64_t table, std::int64_t lo,
                         std::int64_t hi, int lane) {
  const float zero[kVec] = {};
  for (std::int64_t r = lo; r < hi; ++r) {
    GradT* row = gradient_row(p, table, static_cast<std::uint32_t>(r));
    for (int col = lane * kVec; col < p.d; col += 32 * kVec) store_vec<GradT, kVec>(row + col, zero);
  }
}

// kAssign (accumulate = false): the tables receive the gradient rather than
// add it, and every row is written exactly once: the sum of its tokens, or
// zero. The rows between two consecutive keys of a table are zeroed by the
// warp that handles the later key's run start, those after the last key by
// the warp that handles its end, so no row is written twice and none is read.
//
// A run's rows are summed kRows at a time: the loads of kRows gradient rows
// are issued before any is added (kReduceRows: 4 to 6 16-byte loads in
// flight per lane), and the additions stay in token order, so
// the sums are those of the one-row-at-a-time loop, bit for bit. kChunk
// vectors per lane cover one column chunk of a row (1, 2 or 4: the narrowest
// that covers d).
// The sorted pairs the reduction passes read, with the backward's parameters.
template <class P, class T, class IdT, class GradT>
struct SortedParams : BackwardParams<P, T, IdT, GradT> {
  std::int64_t chunk;
  const std::uint32_t* sorted_keys;
  const std::int32_t* sorted_tokens;
  float* partials;
};

template <class P, class T, class IdT, class GradT, int kVec, int kChunk, WriteMode kMode>
struct ReduceChunksKernel {
  using Params = SortedParams<P, T, IdT, GradT>;
  static constexpr int kThreads = detail::kThreads;
  static constexpr int kMinBlocks = 2;
  TL_DEVICE void operator()(const Params& p) const {
    constexpr int K = P::tables;
    constexpr bool kAssign = kMode != WriteMode::accumulate;
    const std::int64_t n = p.batch.total;
    const std::int64_t chunks = (n + p.chunk - 1) / p.chunk;
    work::warp_items((K + 1) * chunks, [&](std::int64_t w, int lane) {
      const std::int64_t t = w / chunks, j = w % chunks;
      const std::uint32_t* keys = p.sorted_keys + t * n;
      const std::int32_t* tokens = p.sorted_tokens + t * n;
      const std::int64_t c_begin = j * p.chunk, c_end = c_begin + p.chunk < n ? c_begin + p.chunk : n;
      std::int64_t ordinal = 0;  // sparse: the current run's slot
      if constexpr (kMode == WriteMode::sparse) ordinal = p.sparse.chunk_base[t * chunks + j] - 1;
      for (std::int64_t k = c_begin; k < c_end;) {
        const std::uint32_t key = keys[k];
        std::int64_t end = k + 1;
        while (end < c_end && keys[end] == key) ++end;
        const bool starts = run_starts_at(keys, k), ends = end == n || keys[end] != key;
        if constexpr (kMode == WriteMode::assign) {
          if (starts) zero_rows<kVec>(p, t, k == 0 ? 0 : std::int64_t{keys[k - 1]} + 1, key, lane);
          if (end == n) zero_rows<kVec>(p, t, std::int64_t{key} + 1, table_rows(p, t), lane);
        }
        if constexpr (kMode == WriteMode::sparse) {
          if (starts) {
            ++ordinal;
            if (lane == 0) p.sparse.rows[t * p.sparse.capacity + ordinal] = static_cast<std::int32_t>(key);
          }
        }
        const bool whole = starts && ends;  // a whole run: this warp owns the row
        GradT* row = whole ? destination_row<kMode>(p, t, key, ordinal) : nullptr;
        float* part = whole ? nullptr : p.partials + ((t * chunks + j) * 2 + (starts ? 1 : 0)) * p.d;
        constexpr int kRows = kReduceRows<kChunk>;
        for (int c0 = 0; c0 < p.d; c0 += 32 * kVec * kChunk) {
          float acc[kChunk][kVec] = {};
          for (std::int64_t r0 = k; r0 < end; r0 += kRows) {
            Vec<T, kVec> x[kRows][kChunk];
            TL_UNROLL
            for (int i = 0; i < kRows; ++i) {
              if (r0 + i < end) {
                const T* g_row = p.grad_out + static_cast<std::int64_t>(tokens[r0 + i]) * p.d;
                TL_UNROLL
                for (int u = 0; u < kChunk; ++u) {
                  const int col = c0 + (u * 32 + lane) * kVec;
                  if (col < p.d) x[i][u] = *reinterpret_cast<const Vec<T, kVec>*>(g_row + col);
                }
              }
            }
            TL_UNROLL
            for (int i = 0; i < kRows; ++i) {
              if (r0 + i < end) {
                TL_UNROLL
                for (int u = 0; u < kChunk; ++u) {
                  if (c0 + (u * 32 + lane) * kVec < p.d) {
                    TL_UNROLL
                    for (int e = 0; e < kVec; ++e) acc[u][e] += to_float(x[i][u].v[e]);
                  }
                }
              }
            }
          }
          TL_UNROLL
          for (int u = 0; u < kChunk; ++u) {
            const int col = c0 + (u * 32 + lane) * kVec;
            if (col < p.d) {
              if (whole) write_gradient<kAssign, GradT, kVec>(row + col, acc[u], p.scale);
              else store_vec<float, kVec>(part + col, acc[u]);
            }
          }
        }
        k = end;
      }
    });
  }
};

template <class P, class T, class IdT, class GradT, int kVec, WriteMode kMode>
struct CombinePartialsKernel {
  using Params = SortedParams<P, T, IdT, GradT>;
  static constexpr int kThreads = detail::kThreads;
  static constexpr int kMinBlocks = 2;
  TL_DEVICE void operator()(const Params& p) const {
    constexpr int K = P::tables;
    constexpr bool kAssign = kMode != WriteMode::accumulate;
    const std::int64_t n = p.batch.total, chunk = p.chunk;
    const std::int64_t chunks = (n + chunk - 1) / chunk;
    work::warp_items((K + 1) * chunks, [&](std::int64_t w, int lane) {
      const std::int64_t t = w / chunks, j = w % chunks;
      if (j + 1 >= chunks) return;
      const std::uint32_t* keys = p.sorted_keys + t * n;
      const std::int64_t last = (j + 1) * chunk - 1;
      const std::uint32_t key = keys[last];
      if (keys[last + 1] != key) return;  // no run crosses the end of chunk j
      // The crossing run must start in chunk j, or an earlier chunk owns it.
      if (!(keys[j * chunk] != key || run_starts_at(keys, j * chunk))) return;
      std::int64_t j_end = j + 1;
      while (j_end + 1 < chunks && keys[(j_end + 1) * chunk] == key) ++j_end;
      std::int64_t ordinal = 0;  // sparse: the last run that starts in chunk j is this one
      if constexpr (kMode == WriteMode::sparse)
        ordinal = p.sparse.chunk_base[t * chunks + j] + p.sparse.run_counts[t * chunks + j] - 1;
      GradT* dst = destination_row<kMode>(p, t, key, ordinal);
      for (int col = lane * kVec; col < p.d; col += 32 * kVec) {
        float acc[kVec];
        load_vec<float, kVec>(p.partials + ((t * chunks + j) * 2 + 1) * p.d + col, acc);
        for (std::int64_t m = j + 1; m <= j_end; ++m) {
          float x[kVec];
          load_vec<float, kVec>(p.partials + ((t * chunks + m) * 2 + 0) * p.d + col, x);
          TL_UNROLL
          for (int e = 0; e < kVec; ++e) acc[e] += x[e];
        }
        write_gradient<kAssign, GradT, kVec>(dst + col, acc, p.scale);
      }
    });
  }
};

// Sparse gradient, before the reduction: a warp per chunk counts the runs
// that start in it.
template <class P>
struct CountRunsKernel {
  struct Params {
    std::int64_t n, chunk;
    const std::uint32_t* sorted_keys;
    std::int32_t* run_counts;
    DeviceStatus* status;
  };
  static constexpr int kThreads = detail::kThreads;
  TL_DEVICE void operator()(const Params& p) const {
    constexpr int K = P::tables;
    const std::int64_t n = p.n, chunk = p.chunk;
    const std::int64_t chunks = (n + chunk - 1) / chunk;
    work::warp_items((K + 1) * chunks, [&](std::int64_t w, int lane) {
      const std::int64_t t = w / chunks, j = w % chunks;
      const std::uint32_t* keys = p.sorted_keys + t * n;
      const std::int64_t c_end = (j + 1) * chunk < n ? (j + 1) * chunk : n;
      std::int32_t count = 0;
      for (std::int64_t k0 = j * chunk; k0 < c_end; k0 += 32) {  // warp-uniform trips: the vote needs every lane
        const std::int64_t k = k0 + lane;
        count += __popc(__ballot_sync(0xffffffffu, k < c_end && run_starts_at(keys, k)));
      }
      if (lane == 0) p.run_counts[w] = count;
    });
  }
};

// Sparse gradient: one block scans the run counts of every table into each
// chunk's first slot, and checks the capacity. Only when every table fits
// are the counts written; otherwise the status records the table with the
// most rows (kCheckCapacity, required = its rows) and the reduction, which
// the kernel layer stops, writes nothing.
struct SparseOffsetsKernel {
  struct Params {
    int tables;
    std::int64_t chunks, capacity;
    const std::int32_t* run_counts;
    std::int32_t* chunk_base;
    std::int32_t* totals;
    std::int32_t* counts;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  using Scan = block::Scan<std::int32_t, kThreads>;
  using SharedStorage = typename Scan::TempStorage;
  TL_DEVICE void operator()(const Params& p, SharedStorage& scan_ts) const {
    for (int t = 0; t < p.tables; ++t) {
      std::int32_t carry = 0;
      for (std::int64_t j0 = 0; j0 < p.chunks; j0 += kThreads) {
        const std::int64_t j = j0 + threadIdx.x;
        const std::int32_t c = j < p.chunks ? p.run_counts[t * p.chunks + j] : 0;
        std::int32_t sum;
        const std::int32_t before = Scan::exclusive(c, Sum{}, std::int32_t{0}, sum, scan_ts);
        if (j < p.chunks) p.chunk_base[t * p.chunks + j] = carry + before;
        carry += sum;
        __syncthreads();  // the scan storage is reused
      }
      if (threadIdx.x == 0) p.totals[t] = carry;
    }
    if (threadIdx.x == 0) {
      std::int64_t worst = 0, table = 0;
      for (int t = 0; t < p.tables; ++t) {
        if (p.totals[t] > worst) {
          worst = p.totals[t];
          table = t;
        }
      }
      if (worst > p.capacity) {
        p.status->required = worst;
        device_fail(p.status, kCheckCapacity, table);
      } else {
        for (int t = 0; t < p.tables; ++t) p.counts[t] = p.totals[t];
      }
    }
  }
};

// Assign mode on the atomic path: the tables are zeroed first (by a kernel,
// not a memset, so that bad input still leaves them untouched).
template <class P, class T, class IdT, int kVec>
struct ZeroTablesKernel {
  using Params = BackwardParams<P, T, IdT>;
  static constexpr int kThreads = detail::kThreads;
  TL_DEVICE void operator()(const Params& p) const {
    const std::int64_t rows = P::ids::kVocab + P::tables * p.V;  // the byte table's, then each hash table's
    work::warp_items(rows, [&](std::int64_t r, int lane) {
      const std::int64_t h = r - P::ids::kVocab;
      const std::int64_t table = h < 0 ? 0 : 1 + h / p.V, row = h < 0 ? r : h % p.V;
      zero_rows<kVec>(p, table, row, row + 1, lane);
    });
  }
};

}  // namespace tokenless::encoder::detail
