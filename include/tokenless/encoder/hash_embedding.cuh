#pragma once
// Byte + hash n-gram embedding (BLT's encoder input), forward and backward.
//
//   out[i] = scale * (E_byte[id_i] + sum_{f, n} E_{f,n}[bucket_{f,n}(i)])
//
// ids: uint8 bytes (id = byte + offset of the policy's convention) or int32
// ids. The batch is varlen (cu_seqlens) or padded ([B, seq_len]); windows
// never cross a sequence start. Storage fp32/fp16/bf16, fp32 accumulation.
// NaN and Inf in the tables propagate to the rows that gather them.
//
// Input that only the device can see (an id outside the vocabulary, a
// cu_seqlens that is not a valid prefix sum) is checked by a kernel before the
// main one; if anything is wrong the main kernel writes nothing, and
// read_status() turns the device-side record into a Status
// (core/device_status.cuh). It synchronises the stream: it is for debugging
// and tests, not the hot path.
#include <tokenless/core/device.hpp>
#include <tokenless/core/device_algorithms.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/varlen.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/workspace.hpp>
#include <tokenless/encoder/kernel.cuh>
#include <tokenless/encoder/policy.hpp>

#include <algorithm>
#include <type_traits>
#include <utility>

namespace tokenless::encoder {

namespace detail {

template <class IdT>
inline constexpr bool kIdsNeedValidation = !std::is_same_v<IdT, std::uint8_t>;

inline Status check_common(const void* ids, const VarlenBatch& batch, std::int64_t V, int d) {
  TL_RETURN_IF_ERROR(check::not_null("ids", ids));
  TL_RETURN_IF_ERROR(check::batch("batch", batch));  // token indices are sorted as int32
  if (V <= 0) return Status::argument(StatusCode::invalid_argument, "hash_vocab", "V > 0", "%lld", static_cast<long long>(V));
  if (V > (std::int64_t{1} << 31)) {
    return Status::argument(StatusCode::unsupported, "hash_vocab", "V <= 2^31 (buckets are sorted as 32-bit keys)",
                            "%lld", static_cast<long long>(V));
  }
  return check::positive("d", d);
}

template <class Tables, int K>
inline Status check_tables(const Tables& tables, std::int64_t V, std::size_t elem_bytes) {
  if constexpr (requires { tables.fused; }) {
    TL_RETURN_IF_ERROR(check::not_null("hash_tables.fused", tables.fused));
    TL_RETURN_IF_ERROR(check::aligned("hash_tables.fused", tables.fused, elem_bytes));
    for (int t = 0; t < K; ++t) {
      if (tables.row_offset[t] < 0) {
        return Status::argument(StatusCode::invalid_argument, "hash_tables.row_offset", "offsets >= 0", "%lld at table %d",
                                static_cast<long long>(tables.row_offset[t]), t);
      }
    }
  } else {
    for (int t = 0; t < K; ++t) {
      if (!tables.table[t]) {
        return Status::argument(StatusCode::null_pointer, "hash_tables.table", "K non-null tables", "nullptr at table %d", t);
      }
      TL_RETURN_IF_ERROR(check::aligned("hash_tables.table", tables.table[t], elem_bytes));
    }
  }
  (void)V;
  return Status::ok();
}

// The deterministic path writes each gradient row without atomics, so no row
// may belong to two tables (tables tied by one pointer, or fused offsets
// closer than V, would lose updates).
template <class Tables, int K, class G>
inline Status check_disjoint(const G* byte_table, int vocab, const Tables& tables, std::int64_t V, int d) {
  struct Range {
    std::uintptr_t lo, hi;
    int table;  // -1: the byte table
  };
  Range r[K + 1];
  const auto span = [&](const G* p, std::int64_t rows, int t) {
    const auto lo = reinterpret_cast<std::uintptr_t>(p);
    return Range{lo, lo + static_cast<std::uintptr_t>(rows) * static_cast<std::uintptr_t>(d) * sizeof(G), t};
  };
  r[0] = span(byte_table, vocab, -1);
  for (int t = 0; t < K; ++t) r[t + 1] = span(tables.row(t, 0, d), V, t);
  for (int i = 1; i <= K; ++i)  // insertion sort by start: K is at most a few dozen
    for (int j = i; j > 0 && r[j].lo < r[j - 1].lo; --j) std::swap(r[j], r[j - 1]);
  for (int i = 0; i < K; ++i) {
    if (r[i].hi > r[i + 1].lo) {
      return Status::argument(StatusCode::invalid_argument, "grad_hash_tables",
                              "disjoint gradient tables on the deterministic path (its rows are written without atomics)",
                              "overlapping %s %d and table %d", r[i].table < 0 ? "byte table" : "table",
                              r[i].table < 0 ? 0 : r[i].table, r[i + 1].table);
    }
  }
  return Status::ok();
}

// 16-byte loads need every row start aligned: d a multiple of the vector
// width and 16-byte aligned bases. Otherwise the scalar path runs.
template <class T, class Tables, int K>
inline bool vectorizable(const void* out, const void* byte_table, const Tables& tables, int d) {
  constexpr int kVec = kVec16<T>;
  auto aligned = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; };
  if (d % kVec != 0 || !aligned(out) || !aligned(byte_table)) return false;
  if constexpr (requires { tables.fused; }) {
    return aligned(tables.fused);
  } else {
    for (int t = 0; t < K; ++t)
      if (!aligned(tables.table[t])) return false;
    return true;
  }
}

// Grids: a warp per token (or row, or chunk), or a thread per token, at most
// the tuning's blocks per SM (the kernels stride over the rest).
static_assert(kTuningSm80.block_threads == kThreads && kTuningSm90.block_threads == kThreads,
              "the encoder's kernels are instantiated for 256-thread blocks");
inline dim3 warp_grid(std::int64_t items) {
  return grid_for(items, kWarpsPerBlock, tuning_for(compute_capability()).blocks_per_sm);
}
inline dim3 thread_grid(std::int64_t items) {
  return grid_for(items, kThreads, tuning_for(compute_capability()).blocks_per_sm);
}

// Launches the device-side checks when there is something the host cannot check.
template <class P, class IdT>
inline Status validate(const IdT* ids, const VarlenBatch& batch, DeviceStatus* status, cudaStream_t stream) {
  TL_RETURN_IF_ERROR(reset_device_status(status, stream));
  TL_RETURN_IF_ERROR(validate_batch(batch, status, stream));
  if constexpr (!kIdsNeedValidation<IdT>) return Status::ok();
  else return launch<ValidateIdsKernel<P, IdT>>({ids, batch.total, status}, thread_grid(batch.total), stream);
}

// Turns the device-side record into a Status (synchronises `stream`).
template <class P, class IdT>
inline Status read_status(const char* op, const IdT* ids, const VarlenBatch& batch, std::int64_t capacity,
                          const DeviceStatus* status, cudaStream_t stream) {
  DeviceFailure f;
  TL_RETURN_IF_ERROR(read_device_status(status, f, stream));
  switch (f.check) {
    case 0: return Status::ok();
    case kCheckBatch: return batch_failure(op, batch, f.index, stream);
    case kCheckIds: {
      IdT v{};
      TL_CUDA_TRY(cudaMemcpy(&v, ids + f.index, sizeof v, cudaMemcpyDeviceToHost));
      return device_failure(op, StatusCode::invalid_argument, "ids", "ids in [0, vocab) (nothing was written)",
                            "%lld at position %lld (vocab %d)", static_cast<long long>(v),
                            static_cast<long long>(f.index), P::ids::kVocab);
    }
    case kCheckCapacity: {
      char seen[96];
      if (f.index == 0) std::snprintf(seen, sizeof seen, "the byte table");
      else std::snprintf(seen, sizeof seen, "hash table %lld", static_cast<long long>(f.index - 1));
      return device_failure(op, StatusCode::capacity_too_small, "capacity",
                            "room for every touched row of every table (nothing was written)",
                            "%lld, but %s touched %lld rows", static_cast<long long>(capacity), seen,
                            static_cast<long long>(f.required));
    }
    default: return Status::error(StatusCode::internal, "%s: unknown device check %d", op, f.check);
  }
}

// Workspace of the deterministic (sorted) path: (row, token) pairs before and
// after the sort, the sort's temporary storage and the reduction's partials;
// for the sparse gradient also the run counts and first slots per chunk, the
// rows per table and the overflow record.
struct SortedLayout {
  std::size_t keys_in = 0, keys_out = 0, tokens_in = 0, tokens_out = 0, sort_temp = 0, sort_temp_bytes = 0;
  std::size_t partials = 0, run_counts = 0, chunk_base = 0, totals = 0;
};

inline SortedLayout add_sorted_layout(WorkspaceLayout& w, int tables, std::int64_t n, int d, bool sparse) {
  SortedLayout l;
  const std::int64_t m = tables * n;
  l.keys_in = w.add_array<std::uint32_t>(m);
  l.keys_out = w.add_array<std::uint32_t>(m);
  l.tokens_in = w.add_array<std::int32_t>(m);
  l.tokens_out = w.add_array<std::int32_t>(m);
  std::size_t bytes = 0;
  (void)device::sort_pairs<std::uint32_t, std::int32_t>(nullptr, bytes, nullptr, nullptr, nullptr, nullptr, n);
  l.sort_temp_bytes = bytes;
  l.sort_temp = w.add(bytes);
  const std::int64_t chunk = reduce_chunk(n, tables);
  const std::int64_t chunks = (n + chunk - 1) / chunk;
  l.partials = w.add_array<float>(tables * chunks * 2 * d);
  if (sparse) {
    l.run_counts = w.add_array<std::int32_t>(tables * chunks);
    l.chunk_base = w.add_array<std::int32_t>(tables * chunks);
    l.totals = w.add_array<std::int32_t>(tables);
  }
  return l;
}

// A backward's workspace: the status record, then the sorted path's.
struct BackwardLayout {
  std::size_t status = 0, total = 0;
  SortedLayout sorted;
};

inline BackwardLayout backward_layout(int tables, std::int64_t n, int d, bool sorted, bool sparse) {
  BackwardLayout l;
  WorkspaceLayout w;
  l.status = w.add(sizeof(DeviceStatus));
  if (sorted) l.sorted = add_sorted_layout(w, tables, n, d, sparse);
  l.total = w.bytes();
  return l;
}

// The sorted path after validation: keys, a sort per table, then the
// segmented reduction into the destination kMode names. `counts`: the
// sparse gradient's rows per table.
template <WriteMode kMode, class P, class T, class IdT, class GradT>
Status run_sorted(BackwardParams<P, T, IdT, GradT> p, const SortedLayout& l, Workspace ws, bool vec,
                  std::int32_t* counts, cudaStream_t stream) {
  constexpr int K = P::tables;
  const std::int64_t n = p.batch.total;
  auto* keys_in = ws.at<std::uint32_t>(l.keys_in);
  auto* keys_out = ws.at<std::uint32_t>(l.keys_out);
  auto* tok_in = ws.at<std::int32_t>(l.tokens_in);
  auto* tok_out = ws.at<std::int32_t>(l.tokens_out);
  TL_RETURN_IF_ERROR(launch<KeysKernel<P, IdT>>({p.ids, p.batch, p.V, keys_in, tok_in, p.status}, thread_grid(n), stream));
  auto bits_for = [](std::int64_t rows) {
    int b = 1;
    while (b < 32 && (std::int64_t{1} << b) < rows) ++b;
    return b;
  };
  for (int t = 0; t <= K; ++t) {
    std::size_t bytes = l.sort_temp_bytes;
    const int bits = bits_for(t == 0 ? P::ids::kVocab : p.V);
    TL_RETURN_IF_ERROR(device::sort_pairs(ws.at<void>(l.sort_temp), bytes, keys_in + t * n, keys_out + t * n,
                                          tok_in + t * n, tok_out + t * n, n, 0, bits, stream));
  }
  const std::int64_t chunk = reduce_chunk(n, K + 1);
  const std::int64_t chunks = (n + chunk - 1) / chunk;
  const dim3 grid = warp_grid((K + 1) * chunks);
  const auto* sorted_keys = static_cast<const std::uint32_t*>(keys_out);
  if constexpr (kMode == WriteMode::sparse) {
    auto* run_counts = ws.at<std::int32_t>(l.run_counts);
    auto* chunk_base = ws.at<std::int32_t>(l.chunk_base);
    TL_RETURN_IF_ERROR(launch<CountRunsKernel<P>>({n, chunk, sorted_keys, run_counts, p.status}, grid, stream));
    TL_RETURN_IF_ERROR(launch<SparseOffsetsKernel>({K + 1, chunks, p.sparse.capacity, run_counts, chunk_base,
                                                    ws.at<std::int32_t>(l.totals), counts, p.status},
                                                   dim3(1), stream));
    p.sparse.chunk_base = chunk_base;
    p.sparse.run_counts = run_counts;
  }
  const SortedParams<P, T, IdT, GradT> sp{p, chunk, sorted_keys, tok_out, ws.at<float>(l.partials)};
  auto reduce = [&]<int kVec>() -> Status {
    // The narrowest column chunk that covers a row: more rows in flight
    // (the scalar fallback keeps one width).
    auto chunks_kernel = [&]<int kChunk>() { return launch<ReduceChunksKernel<P, T, IdT, GradT, kVec, kChunk, kMode>>(sp, grid, stream); };
    Status s;
    if constexpr (kVec == 1) s = chunks_kernel.template operator()<kChunkVecs>();
    else if (p.d <= 32 * kVec) s = chunks_kernel.template operator()<1>();
    else if (p.d <= 64 * kVec) s = chunks_kernel.template operator()<2>();
    else s = chunks_kernel.template operator()<kChunkVecs>();
    TL_RETURN_IF_ERROR(s);
    return launch<CombinePartialsKernel<P, T, IdT, GradT, kVec, kMode>>(sp, grid, stream);
  };
  return vec ? reduce.template operator()<kVec16<T>>() : reduce.template operator()<1>();
}

}  // namespace detail

template <EmbeddingPolicy P, StorageFloat T, class IdT = std::uint8_t>
struct HashEmbeddingForward {
  static_assert(std::is_same_v<IdT, std::uint8_t> || std::is_same_v<IdT, std::int32_t>,
                "ids are uint8 bytes or int32 ids");
  static constexpr int K = P::tables;
  static constexpr const char* kName = "encoder::HashEmbeddingForward";
  using Tables = typename P::layout::template Tables<const T, K>;

  struct Arguments {
    const IdT* ids = nullptr;      // [batch.total]
    VarlenBatch batch;             // packed (cu_seqlens) or equal lengths
    const T* byte_table = nullptr; // [P::ids::kVocab, d]
    Tables hash_tables;            // K tables of [hash_vocab, d]
    std::int64_t hash_vocab = 0;   // V
    int d = 0;
    float scale = 1.0f;            // optional output scale
    T* output = nullptr;           // [batch.total, d]
  };

  static bool needs_validation(const Arguments& a) { return detail::kIdsNeedValidation<IdT> || a.batch.varlen(); }

  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_common(a.ids, a.batch, a.hash_vocab, a.d));
    TL_RETURN_IF_ERROR(check::not_null("byte_table", a.byte_table));
    TL_RETURN_IF_ERROR(check::aligned("byte_table", a.byte_table, sizeof(T)));
    TL_RETURN_IF_ERROR((detail::check_tables<Tables, K>(a.hash_tables, a.hash_vocab, sizeof(T))));
    TL_RETURN_IF_ERROR(check::not_null("output", a.output));
    TL_RETURN_IF_ERROR(check::aligned("output", a.output, sizeof(T)));
    TL_RETURN_IF_ERROR(check::finite("scale", a.scale));
    return Status::ok();
  }

  static std::size_t workspace_size(const Arguments& a) {
    return needs_validation(a) ? align_up(sizeof(DeviceStatus), kWorkspaceAlignment) : 0;
  }

  static Status run(const Arguments& a, Workspace ws = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<HashEmbeddingForward>(a, ws));
    DeviceStatus* status = needs_validation(a) ? status_of(ws) : nullptr;
    if (status) TL_RETURN_IF_ERROR((detail::validate<P, IdT>(a.ids, a.batch, status, stream)));
    const detail::ForwardParams<P, T, IdT> p{a.ids, a.batch, a.byte_table, a.hash_tables, a.hash_vocab,
                                             a.d, a.scale, a.output, status};
    const dim3 grid = detail::warp_grid(a.batch.total);
    if (!detail::vectorizable<T, Tables, K>(a.output, a.byte_table, a.hash_tables, a.d)) {
      return launch<detail::ForwardKernel<P, T, IdT, 1, detail::kChunkVecs>>(p, grid, stream);
    }
    // The narrowest chunk that covers a row: fewer accumulators, more rows in flight.
    constexpr int kRow = 32 * kVec16<T>;
    if (a.d <= kRow) return launch<detail::ForwardKernel<P, T, IdT, kVec16<T>, 1>>(p, grid, stream);
    if (a.d <= 2 * kRow) return launch<detail::ForwardKernel<P, T, IdT, kVec16<T>, 2>>(p, grid, stream);
    return launch<detail::ForwardKernel<P, T, IdT, kVec16<T>, detail::kChunkVecs>>(p, grid, stream);
  }

  // The device-side checks of the last run(). Synchronises `stream`.
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    if (!needs_validation(a)) return Status::ok();
    return detail::read_status<P, IdT>(kName, a.ids, a.batch, 0, ws.at<DeviceStatus>(0), stream);
  }
};

// Gradients accumulate (+=) into the gradient tables by default, as framework
// .grad buffers do. With accumulate = false the tables receive a fresh dense
// gradient instead (every row written once, untouched rows zero, nothing
// read: what PyTorch's backward gives a parameter whose .grad is None), so
// there is nothing to zero beforehand. GradT is fp32 by default;
// bf16 or fp16 tables (what PyTorch gives 16-bit parameters) need the
// deterministic path, which sums each row in fp32 and rounds it once.
template <EmbeddingPolicy P, StorageFloat T, class IdT = std::uint8_t, StorageFloat GradT = float>
struct HashEmbeddingBackward {
  static constexpr int K = P::tables;
  static constexpr const char* kName = "encoder::HashEmbeddingBackward";
  using GradTables = typename P::layout::template Tables<GradT, K>;

  struct Arguments {
    const IdT* ids = nullptr;
    VarlenBatch batch;
    const T* grad_output = nullptr;    // [batch.total, d]
    GradT* grad_byte_table = nullptr;  // [P::ids::kVocab, d]
    GradTables grad_hash_tables;       // K tables of [hash_vocab, d]
    std::int64_t hash_vocab = 0;
    int d = 0;
    float scale = 1.0f;                // the forward's output scale
    bool deterministic = false;        // sort + segmented reduce instead of atomics
    bool accumulate = true;            // false: overwrite every row of the gradient tables
  };

  static bool needs_validation(const Arguments& a) { return detail::kIdsNeedValidation<IdT> || a.batch.varlen(); }

  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_common(a.ids, a.batch, a.hash_vocab, a.d));
    TL_RETURN_IF_ERROR(check::not_null("grad_output", a.grad_output));
    TL_RETURN_IF_ERROR(check::aligned("grad_output", a.grad_output, sizeof(T)));
    TL_RETURN_IF_ERROR(check::not_null("grad_byte_table", a.grad_byte_table));
    TL_RETURN_IF_ERROR(check::aligned("grad_byte_table", a.grad_byte_table, sizeof(GradT)));
    TL_RETURN_IF_ERROR((detail::check_tables<GradTables, K>(a.grad_hash_tables, a.hash_vocab, sizeof(GradT))));
    if (!std::is_same_v<GradT, float> && !a.deterministic) {
      return Status::argument(StatusCode::unsupported, "deterministic",
                              "true for 16-bit gradient tables (atomics would round a row at every addition)",
                              "false");
    }
    TL_RETURN_IF_ERROR(check::finite("scale", a.scale));
    if (a.deterministic) {
      TL_RETURN_IF_ERROR(check::product_fits_int32("(tables + 1) * batch.total", K + 1, a.batch.total));
      TL_RETURN_IF_ERROR((detail::check_disjoint<GradTables, K>(a.grad_byte_table, P::ids::kVocab, a.grad_hash_tables,
                                                               a.hash_vocab, a.d)));
    }
    return Status::ok();
  }

  static detail::BackwardLayout layout(const Arguments& a) {
    return detail::backward_layout(K + 1, a.batch.total, a.d, a.deterministic, false);
  }

  static std::size_t workspace_size(const Arguments& a) {
    return a.deterministic || needs_validation(a) ? layout(a).total : 0;
  }

  static Status run(const Arguments& a, Workspace ws = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<HashEmbeddingBackward>(a, ws));
    const std::size_t need = workspace_size(a);
    const detail::BackwardLayout l = need ? layout(a) : detail::BackwardLayout{};
    DeviceStatus* status = needs_validation(a) ? ws.at<DeviceStatus>(l.status) : nullptr;
    if (status) TL_RETURN_IF_ERROR((detail::validate<P, IdT>(a.ids, a.batch, status, stream)));
    detail::BackwardParams<P, T, IdT, GradT> p{a.ids, a.batch, a.grad_output, a.grad_byte_table,
                                               a.grad_hash_tables, a.hash_vocab, a.d, a.scale, status};
    // Vector loads of the gradient, and vector stores (on Hopper, 16-byte
    // atomics) into the gradient tables when their rows are 16-byte aligned.
    const bool vec = a.d % kVec16<T> == 0 && reinterpret_cast<std::uintptr_t>(a.grad_output) % 16 == 0 &&
                     detail::vectorizable<float, GradTables, K>(a.grad_byte_table, a.grad_byte_table,
                                                                a.grad_hash_tables, a.d);
    if constexpr (std::is_same_v<GradT, float>) {
      if (!a.deterministic) {
        if (!a.accumulate) {
          const dim3 zgrid = detail::warp_grid(P::ids::kVocab + K * a.hash_vocab);
          TL_RETURN_IF_ERROR(vec ? launch<detail::ZeroTablesKernel<P, T, IdT, 4>>(p, zgrid, stream)
                                 : launch<detail::ZeroTablesKernel<P, T, IdT, 1>>(p, zgrid, stream));
        }
        const dim3 grid = detail::warp_grid(a.batch.total);
        if (vec) return launch<detail::BackwardAtomicKernel<P, T, IdT, kVec16<T>>>(p, grid, stream);
        return launch<detail::BackwardAtomicKernel<P, T, IdT, 1>>(p, grid, stream);
      }
    }
    if (a.accumulate) return detail::run_sorted<detail::WriteMode::accumulate>(p, l.sorted, ws, vec, nullptr, stream);
    return detail::run_sorted<detail::WriteMode::assign>(p, l.sorted, ws, vec, nullptr, stream);
  }

  // The device-side checks of the last run(). Synchronises `stream`.
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    if (!needs_validation(a)) return Status::ok();
    return detail::read_status<P, IdT>(kName, a.ids, a.batch, 0, ws.at<DeviceStatus>(layout(a).status), stream);
  }
};

// The backward as a sparse gradient: for the byte table (t = 0) and each hash
// table (t = 1..K), the rows the batch touched, in ascending order, and their
// gradients, each the sum of its tokens' rows in token order times scale (the
// deterministic path's sums, bit for bit: the same rows as a fresh dense
// gradient). A step over 4K bytes of BLT-1B then writes a few thousand rows
// per table instead of 6 x 500,002; a lazy or sparse optimiser applies them.
//
//   counts [K + 1]                  rows touched per table (device)
//   rows   [(K + 1) * capacity]     table t's in rows[t * capacity, + counts[t])
//   values [(K + 1) * capacity, d]  their gradients, GradT (fp32 or 16-bit)
//
// capacity = min(batch.total, max(hash_vocab, vocab)) always suffices (the
// byte table alone can touch all of its 260 rows). When a table touches more
// rows than capacity, nothing is written and read_status() reports the table
// and the rows it needs (StatusCode::capacity_too_small).
template <EmbeddingPolicy P, StorageFloat T, class IdT = std::uint8_t, StorageFloat GradT = float>
struct HashEmbeddingSparseBackward {
  static constexpr int K = P::tables;
  static constexpr const char* kName = "encoder::HashEmbeddingSparseBackward";

  struct Arguments {
    const IdT* ids = nullptr;
    VarlenBatch batch;
    const T* grad_output = nullptr;  // [batch.total, d]
    std::int64_t hash_vocab = 0;
    int d = 0;
    float scale = 1.0f;              // the forward's output scale
    std::int64_t capacity = 0;       // rows per table in rows and values
    std::int32_t* counts = nullptr;  // [K + 1]
    std::int32_t* rows = nullptr;    // [(K + 1) * capacity]
    GradT* values = nullptr;         // [(K + 1) * capacity, d]
  };

  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_common(a.ids, a.batch, a.hash_vocab, a.d));
    TL_RETURN_IF_ERROR(check::not_null("grad_output", a.grad_output));
    TL_RETURN_IF_ERROR(check::aligned("grad_output", a.grad_output, sizeof(T)));
    TL_RETURN_IF_ERROR(check::positive("capacity", a.capacity));
    TL_RETURN_IF_ERROR(check::not_null({{"counts", a.counts}, {"rows", a.rows}}));
    TL_RETURN_IF_ERROR(check::aligned("rows", a.rows, sizeof(std::int32_t)));
    TL_RETURN_IF_ERROR(check::not_null("values", a.values));
    TL_RETURN_IF_ERROR(check::aligned("values", a.values, sizeof(GradT)));
    TL_RETURN_IF_ERROR(check::finite("scale", a.scale));
    TL_RETURN_IF_ERROR(check::product_fits_int32("(tables + 1) * batch.total", K + 1, a.batch.total));
    return Status::ok();
  }

  static detail::BackwardLayout layout(const Arguments& a) {
    return detail::backward_layout(K + 1, a.batch.total, a.d, true, true);
  }

  static std::size_t workspace_size(const Arguments& a) { return layout(a).total; }

  static Status run(const Arguments& a, Workspace ws = {}, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<HashEmbeddingSparseBackward>(a, ws));
    const detail::BackwardLayout l = layout(a);
    // The status is always kept: the capacity is checked on the device.
    auto* status = ws.at<DeviceStatus>(l.status);
    TL_RETURN_IF_ERROR((detail::validate<P, IdT>(a.ids, a.batch, status, stream)));
    detail::BackwardParams<P, T, IdT, GradT> p{a.ids, a.batch, a.grad_output, nullptr, {},
                                               a.hash_vocab, a.d, a.scale, status};
    p.sparse.rows = a.rows;
    p.sparse.values = a.values;
    p.sparse.capacity = a.capacity;
    auto aligned = [](const void* q) { return reinterpret_cast<std::uintptr_t>(q) % 16 == 0; };
    const bool vec = a.d % kVec16<T> == 0 && aligned(a.grad_output) && aligned(a.values);
    return detail::run_sorted<detail::WriteMode::sparse>(p, l.sorted, ws, vec, a.counts, stream);
  }

  // The device-side checks of the last run(): ids and seqlens, then the
  // capacity. Synchronises `stream`.
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    return detail::read_status<P, IdT>(kName, a.ids, a.batch, a.capacity, ws.at<DeviceStatus>(layout(a).status), stream);
  }
};

}  // namespace tokenless::encoder
