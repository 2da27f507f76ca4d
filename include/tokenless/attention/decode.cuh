#pragma once
// Decoding from a KV cache: attention of a few new queries per sequence
// (1 to 16: generation, or verifying speculative drafts) against the cache,
// and the cache's two updates, append and rollback.
//
// The cache is contiguous per sequence: k_cache and v_cache are
// [num_seqs, capacity, kv_heads, head_dim] (cache_stride elements between
// positions, 0 = kv_heads * head_dim), and cache_len [num_seqs] (device
// int32) holds each sequence's length. Lengths stay on the device: append
// adds the new tokens' count, rollback drops rejected drafts, and Decode
// reads them, with no host synchronisation anywhere.
//
// Decode's queries are the new tokens, appended first: query i of n sees
// the keys the variant gives a query at i + len - n (Causal: the cache up
// to itself; SlidingWindow: Mistral's window), the same rows a prefill of
// the whole sequence would compute. GQA query packing (a block serves a
// key/value head's whole group) and split-KV (flash-decoding) keep a batch
// of one with a long cache spread over the GPU.
#include <tokenless/attention/attention.cuh>
#include <tokenless/attention/kernel.cuh>
#include <tokenless/attention/policy.hpp>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/varlen.hpp>
#include <tokenless/core/workspace.hpp>

#include <algorithm>
#include <cstdint>

namespace tokenless::attention {

inline constexpr int kCheckCache = kFirstOperationCheck + 2;

template <class V, class T>
struct DecodeArguments {
  const T* q = nullptr;  // [q_batch.total, heads, head_dim]: the new tokens' queries
  VarlenBatch q_batch;   // new queries per sequence (uniform: the same n for all)
  const T* k_cache = nullptr;
  const T* v_cache = nullptr;
  const std::int32_t* cache_len = nullptr;  // [num_seqs], device: lengths, the new tokens included
  std::int64_t capacity = 0;                // positions a sequence's cache holds
  int heads = 0, kv_heads = 0, head_dim = 0;
  std::int64_t q_stride = 0, cache_stride = 0, out_stride = 0;  // 0: packed
  int max_queries = 16;  // new queries a sequence at most (checked on the device)
  int num_splits = 0;    // key chunks (split-KV); 0: chosen from the device and the capacity
  float scale = 0.0f;
  typename V::Params variant{};
  T* out = nullptr;      // like q
  float* lse = nullptr;  // [heads, q_batch.total]; optional
};

namespace detail {

struct DecodePlan {
  int slabs = 1, splits = 1, split_keys = 64;
};

// Rows of a (query, head) pair slab are 64; splits spread the keys over two
// waves of blocks, in chunks of at least 256 keys (untuned: flash-decoding's
// heuristic, to be measured on a GPU).
inline DecodePlan decode_plan(std::int64_t num_seqs, int kv_heads, int group, int max_queries, std::int64_t capacity,
                              int num_splits) {
  DecodePlan p;
  p.slabs = (group * max_queries + 63) / 64;
  const std::int64_t blocks = num_seqs * kv_heads * p.slabs;
  const std::int64_t want = std::max<std::int64_t>(1, (2 * std::int64_t{sm_count()} + blocks - 1) / blocks);
  const std::int64_t by_length = std::max<std::int64_t>(1, capacity / 256);
  std::int64_t splits = std::min<std::int64_t>({want, by_length, 64});
  if (num_splits > 0) splits = std::min<std::int64_t>(num_splits, (capacity + 63) / 64);  // at most one a key tile
  const std::int64_t chunk = ((capacity + splits - 1) / splits + 63) / 64 * 64;
  p.split_keys = static_cast<int>(std::max<std::int64_t>(chunk, 64));
  p.splits = static_cast<int>((capacity + p.split_keys - 1) / p.split_keys);
  if (p.splits < 1) p.splits = 1;
  return p;
}

}  // namespace detail

template <Variant V, mma::TensorCoreType T, class HD = SupportedHeadDims>
struct Decode {
  static constexpr const char* kName = "attention::Decode";
  using Arguments = DecodeArguments<V, T>;

  static detail::DecodePlan plan(const Arguments& a) {
    return detail::decode_plan(a.q_batch.num_seqs, a.kv_heads, a.heads / a.kv_heads, a.max_queries, a.capacity,
                               a.num_splits);
  }

  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::batch("q_batch", a.q_batch));
    TL_RETURN_IF_ERROR(check::positive("capacity", a.capacity));
    TL_RETURN_IF_ERROR(check::fits_int32("capacity", a.capacity));
    TL_RETURN_IF_ERROR(check::product_fits_int32("num_seqs * capacity", a.q_batch.num_seqs, a.capacity));
    // The key batch's shape checks, on a stand-in of the cache's extent.
    TL_RETURN_IF_ERROR(detail::check_shape<HD>(a.q_batch, VarlenBatch::uniform(a.q_batch.num_seqs, a.capacity), a.heads,
                                               a.kv_heads, a.head_dim, a.scale));
    if (a.max_queries < 1 || a.max_queries > 16) {
      return Status::argument(StatusCode::unsupported, "max_queries", "1 to 16 new queries a sequence", "%d",
                              a.max_queries);
    }
    if (a.num_splits < 0) return Status::argument(StatusCode::invalid_argument, "num_splits", ">= 0", "%d", a.num_splits);
    TL_RETURN_IF_ERROR(check::not_null("cache_len", a.cache_len));
    const detail::RowChecks rows{a.heads, a.kv_heads, a.head_dim};
    TL_RETURN_IF_ERROR(rows.q("q", a.q, a.q_stride));
    TL_RETURN_IF_ERROR(rows.kv("k_cache", a.k_cache, a.cache_stride));
    TL_RETURN_IF_ERROR(rows.kv("v_cache", a.v_cache, a.cache_stride));
    TL_RETURN_IF_ERROR(rows.q("out", a.out, a.out_stride));
    if constexpr (detail::self_attention_only<V>()) {
      return Status::error(StatusCode::unsupported, "attention::Decode: the %s variant reads the query batch's own "
                           "positions; decode with Causal or SlidingWindow", V::kName);
    }
    return check_variant<V>(a.variant);
  }

  // The status record, then the splits' partial outputs and LSEs (fp32).
  static std::size_t parts(const Arguments& a) {
    const detail::DecodePlan pl = plan(a);
    return pl.splits > 1 ? static_cast<std::size_t>(pl.splits) * static_cast<std::size_t>(a.q_batch.total) *
                               static_cast<std::size_t>(a.heads)
                         : 0;
  }
  static std::size_t workspace_size(const Arguments& a) {
    if (a.heads <= 0 || a.kv_heads <= 0 || a.head_dim <= 0 || a.q_batch.total <= 0) return kStatusBytes;
    const std::size_t n = parts(a);
    return kStatusBytes + align_up(n * static_cast<std::size_t>(a.head_dim) * sizeof(float), kWorkspaceAlignment) +
           align_up(n * sizeof(float), kWorkspaceAlignment);
  }

  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<Decode>(a, ws));
    DeviceStatus* status = status_of(ws);
    const detail::DecodePlan pl = plan(a);
    const std::size_t n = parts(a);
    float* part_out = pl.splits > 1 ? ws.at<float>(kStatusBytes) : nullptr;
    float* part_lse =
        pl.splits > 1
            ? ws.at<float>(kStatusBytes + align_up(n * static_cast<std::size_t>(a.head_dim) * sizeof(float),
                                                   kWorkspaceAlignment))
            : nullptr;
    TL_RETURN_IF_ERROR(begin_checks(status, a.q_batch, stream));
    TL_RETURN_IF_ERROR(launch<detail::DecodeCheckKernel>(
        {a.q_batch, a.cache_len, a.capacity, a.max_queries, status, kCheckCache},
        grid_for(a.q_batch.num_seqs, detail::DecodeCheckKernel::kThreads, 4), stream));
    const std::int64_t out_stride = detail::or_packed(a.out_stride, a.heads, a.head_dim);
    TL_RETURN_IF_ERROR(detail::dispatch_head_dim(HD{}, a.head_dim, [&](auto dim) {
      using K = detail::DecodeKernel<V, T, decltype(dim)::value>;
      const typename K::Params p{a.q,
                                 detail::or_packed(a.q_stride, a.heads, a.head_dim),
                                 a.q_batch,
                                 a.k_cache,
                                 a.v_cache,
                                 detail::or_packed(a.cache_stride, a.kv_heads, a.head_dim),
                                 a.capacity,
                                 a.cache_len,
                                 a.heads,
                                 a.heads / a.kv_heads,
                                 pl.slabs,
                                 pl.splits,
                                 pl.split_keys,
                                 a.scale != 0.0f ? a.scale : 1.0f / std::sqrt(static_cast<float>(a.head_dim)),
                                 a.variant,
                                 a.out,
                                 out_stride,
                                 a.lse,
                                 part_out,
                                 part_lse,
                                 status};
      TL_RETURN_IF_ERROR(set_max_dynamic_smem<K>(K::kSmemBytes));
      const std::int64_t blocks = a.q_batch.num_seqs * a.kv_heads * pl.slabs;
      return launch<K>(p, dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(pl.splits)), stream, K::kSmemBytes);
    }));
    if (pl.splits == 1) return Status::ok();
    using C = detail::CombineKernel<T>;
    return launch<C>({part_out, part_lse, a.q_batch.total, a.heads, a.head_dim, pl.splits, a.out, out_stride, a.lse,
                      status},
                     grid_for(a.q_batch.total * a.heads, C::kThreads / 32, 16), stream);
  }

  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    DeviceFailure f;
    TL_RETURN_IF_ERROR(read_device_status(status_of(ws), f, stream));
    if (f.check == 0) return Status::ok();
    if (f.check == kCheckBatch) return batch_failure(kName, a.q_batch, f.index, stream, "q_batch.cu_seqlens");
    if (f.check == kCheckCache) {
      std::int32_t len = 0;
      TL_CUDA_TRY(cudaMemcpyAsync(&len, a.cache_len + f.index, sizeof len, cudaMemcpyDeviceToHost, stream));
      std::int32_t lo = 0, hi = 0;
      if (a.q_batch.varlen()) {
        TL_CUDA_TRY(cudaMemcpyAsync(&lo, a.q_batch.cu_seqlens + f.index, sizeof lo, cudaMemcpyDeviceToHost, stream));
        TL_CUDA_TRY(cudaMemcpyAsync(&hi, a.q_batch.cu_seqlens + f.index + 1, sizeof hi, cudaMemcpyDeviceToHost, stream));
      } else {
        hi = static_cast<std::int32_t>(a.q_batch.total / a.q_batch.num_seqs);
      }
      TL_CUDA_TRY(cudaStreamSynchronize(stream));
      char expected[128];
      std::snprintf(expected, sizeof expected,
                    "at most max_queries (%d) new queries, and new queries <= cache_len <= capacity (%lld)",
                    a.max_queries, static_cast<long long>(a.capacity));
      return device_failure(kName, StatusCode::invalid_argument, "cache_len", expected,
                            "sequence %lld: %d new queries, cache_len %d", static_cast<long long>(f.index), hi - lo,
                            len);
    }
    return Status::error(StatusCode::internal, "%s: unknown device check %d", kName, f.check);
  }
};

// ------------------------------------------------------------------ the cache's updates
namespace detail {

// Sequence b needs len[b] + new[b] <= capacity (append) or 0 <= drop[b] <=
// len[b] (rollback); the first failure is recorded, with what was needed.
struct CacheCheckKernel {
  struct Params {
    VarlenBatch added;           // append: the new tokens; rollback: unused
    const std::int32_t* drop;    // rollback: tokens to drop
    const std::int32_t* cache_len;
    std::int64_t num_seqs, capacity;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  static constexpr bool kReportsStatus = true;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.num_seqs, [&](std::int64_t b) {
      const std::int64_t len = p.cache_len[b];
      if (p.drop) {
        const std::int64_t d = p.drop[b];
        if (d < 0 || d > len) device_fail(p.status, kCheckCache, b);
      } else if (len < 0 || len + p.added.length(b) > p.capacity) {
        device_fail(p.status, kCheckCache, b);
      }
    });
  }
};

// Copies every new token's K and V rows to its sequence's end: a warp a token.
template <class T>
struct AppendKernel {
  struct Params {
    const T* k_new;
    const T* v_new;
    std::int64_t k_new_stride, v_new_stride;
    VarlenBatch added;
    T* k_cache;
    T* v_cache;
    std::int64_t cache_stride, capacity;
    const std::int32_t* cache_len;
    int row;  // kv_heads * head_dim elements
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::warp_items(p.added.total, [&](std::int64_t t, int lane) {
      const std::int64_t b = p.added.seq_of(t);
      const std::int64_t dst = (b * p.capacity + p.cache_len[b] + (t - p.added.start(b))) * p.cache_stride;
      for (int c = lane; c < p.row; c += 32) {
        p.k_cache[dst + c] = p.k_new[t * p.k_new_stride + c];
        p.v_cache[dst + c] = p.v_new[t * p.v_new_stride + c];
      }
    });
  }
};

// len[b] += added or -= drop, after every copy has read the old length.
struct LengthsKernel {
  struct Params {
    VarlenBatch added;
    const std::int32_t* drop;
    std::int32_t* cache_len;
    std::int64_t num_seqs;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.num_seqs, [&](std::int64_t b) {
      p.cache_len[b] += p.drop ? -p.drop[b] : static_cast<std::int32_t>(p.added.length(b));
    });
  }
};

inline Status read_cache_status(const char* op, const VarlenBatch* added, const std::int32_t* drop,
                                const std::int32_t* cache_len, std::int64_t capacity, Workspace ws,
                                cudaStream_t stream) {
  DeviceFailure f;
  TL_RETURN_IF_ERROR(read_device_status(status_of(ws), f, stream));
  if (f.check == 0) return Status::ok();
  if (added && f.check == kCheckBatch) return batch_failure(op, *added, f.index, stream, "added.cu_seqlens");
  if (f.check != kCheckCache) return Status::error(StatusCode::internal, "%s: unknown device check %d", op, f.check);
  std::int32_t len = 0, d = 0, lo = 0, hi = 0;
  TL_CUDA_TRY(cudaMemcpyAsync(&len, cache_len + f.index, sizeof len, cudaMemcpyDeviceToHost, stream));
  if (drop) TL_CUDA_TRY(cudaMemcpyAsync(&d, drop + f.index, sizeof d, cudaMemcpyDeviceToHost, stream));
  if (added && added->varlen()) {
    TL_CUDA_TRY(cudaMemcpyAsync(&lo, added->cu_seqlens + f.index, sizeof lo, cudaMemcpyDeviceToHost, stream));
    TL_CUDA_TRY(cudaMemcpyAsync(&hi, added->cu_seqlens + f.index + 1, sizeof hi, cudaMemcpyDeviceToHost, stream));
  } else if (added) {
    hi = static_cast<std::int32_t>(added->total / added->num_seqs);
  }
  TL_CUDA_TRY(cudaStreamSynchronize(stream));
  if (drop) {
    return device_failure(op, StatusCode::invalid_argument, "drop", "0 <= drop[b] <= cache_len[b] (nothing was changed)",
                          "drop[%lld] = %d with cache_len %d", static_cast<long long>(f.index), d, len);
  }
  char expected[96];
  std::snprintf(expected, sizeof expected, "cache_len + new tokens <= capacity (%lld) (nothing was written)",
                static_cast<long long>(capacity));
  return device_failure(op, StatusCode::capacity_too_small, "capacity", expected,
                        "sequence %lld: cache_len %d + %d new tokens", static_cast<long long>(f.index), len, hi - lo);
}

}  // namespace detail

// Appends new tokens' K and V (a VarlenBatch of them: n_b for sequence b,
// from a fused projection's rows if strided) to each sequence's cache and
// adds n_b to its length. A sequence the capacity cannot hold refuses the
// whole append: nothing is written, and read_status() names it.
template <mma::TensorCoreType T>
struct KvCacheAppend {
  static constexpr const char* kName = "attention::KvCacheAppend";
  struct Arguments {
    const T* k_new = nullptr;  // [added.total, kv_heads, head_dim]
    const T* v_new = nullptr;
    VarlenBatch added;         // new tokens per sequence (an empty sequence adds none)
    T* k_cache = nullptr;      // [num_seqs, capacity, kv_heads, head_dim]
    T* v_cache = nullptr;
    std::int32_t* cache_len = nullptr;  // [num_seqs], device, updated
    std::int64_t capacity = 0;
    int kv_heads = 0, head_dim = 0;
    std::int64_t k_new_stride = 0, v_new_stride = 0, cache_stride = 0;  // 0: packed
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::batch("added", a.added));
    TL_RETURN_IF_ERROR(check::positive("capacity", a.capacity));
    TL_RETURN_IF_ERROR(check::positive("kv_heads", a.kv_heads));
    TL_RETURN_IF_ERROR(check::positive("head_dim", a.head_dim));
    TL_RETURN_IF_ERROR(check::product_fits_int32("num_seqs * capacity", a.added.num_seqs, a.capacity));
    TL_RETURN_IF_ERROR(check::not_null("cache_len", a.cache_len));
    const detail::RowChecks rows{a.kv_heads, a.kv_heads, a.head_dim};
    TL_RETURN_IF_ERROR(rows.kv("k_new", a.k_new, a.k_new_stride));
    TL_RETURN_IF_ERROR(rows.kv("v_new", a.v_new, a.v_new_stride));
    TL_RETURN_IF_ERROR(rows.kv("k_cache", a.k_cache, a.cache_stride));
    return rows.kv("v_cache", a.v_cache, a.cache_stride);
  }
  static std::size_t workspace_size(const Arguments&) { return kStatusBytes; }
  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<KvCacheAppend>(a, ws));
    DeviceStatus* status = status_of(ws);
    TL_RETURN_IF_ERROR(begin_checks(status, a.added, stream));
    TL_RETURN_IF_ERROR(launch<detail::CacheCheckKernel>(
        {a.added, nullptr, a.cache_len, a.added.num_seqs, a.capacity, status},
        grid_for(a.added.num_seqs, detail::CacheCheckKernel::kThreads, 4), stream));
    using K = detail::AppendKernel<T>;
    TL_RETURN_IF_ERROR(launch<K>({a.k_new, a.v_new, detail::or_packed(a.k_new_stride, a.kv_heads, a.head_dim),
                                  detail::or_packed(a.v_new_stride, a.kv_heads, a.head_dim), a.added, a.k_cache,
                                  a.v_cache, detail::or_packed(a.cache_stride, a.kv_heads, a.head_dim), a.capacity,
                                  a.cache_len, a.kv_heads * a.head_dim, status},
                                 grid_for(a.added.total, K::kThreads / 32, 16), stream));
    return launch<detail::LengthsKernel>({a.added, nullptr, a.cache_len, a.added.num_seqs, status},
                                         grid_for(a.added.num_seqs, detail::LengthsKernel::kThreads, 4), stream);
  }
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    return detail::read_cache_status(kName, &a.added, nullptr, a.cache_len, a.capacity, ws, stream);
  }
};

// Drops each sequence's last drop[b] tokens (rejected drafts): the lengths
// shrink, the rows stay and are overwritten by the next append.
struct KvCacheRollback {
  static constexpr const char* kName = "attention::KvCacheRollback";
  struct Arguments {
    std::int32_t* cache_len = nullptr;   // [num_seqs], device, updated
    const std::int32_t* drop = nullptr;  // [num_seqs], device: tokens to drop (0 keeps all)
    std::int64_t num_seqs = 0;
  };
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(check::not_null({{"cache_len", a.cache_len}, {"drop", a.drop}}));
    TL_RETURN_IF_ERROR(check::positive("num_seqs", a.num_seqs));
    return check::fits_int32("num_seqs", a.num_seqs);
  }
  static std::size_t workspace_size(const Arguments&) { return kStatusBytes; }
  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<KvCacheRollback>(a, ws));
    DeviceStatus* status = status_of(ws);
    TL_RETURN_IF_ERROR(reset_device_status(status, stream));
    TL_RETURN_IF_ERROR(launch<detail::CacheCheckKernel>({{}, a.drop, a.cache_len, a.num_seqs, 0, status},
                                                        grid_for(a.num_seqs, detail::CacheCheckKernel::kThreads, 4),
                                                        stream));
    return launch<detail::LengthsKernel>({{}, a.drop, a.cache_len, a.num_seqs, status},
                                         grid_for(a.num_seqs, detail::LengthsKernel::kThreads, 4), stream);
  }
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    return detail::read_cache_status(kName, nullptr, a.drop, a.cache_len, 0, ws, stream);
  }
};

}  // namespace tokenless::attention
