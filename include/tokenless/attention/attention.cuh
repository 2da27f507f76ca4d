#pragma once
// The attention core's operations: Forward and Backward, for any variant
// (attention/policy.hpp), fp16 or bf16 storage with fp32 accumulation.
//
//   q [q_batch.total, heads, head_dim], k and v [k_batch.total, kv_heads,
//   head_dim], each with its own row stride (elements between positions), so
//   that they may point into a fused QKV projection's output; out like q.
//   Sequence b of q_batch attends to sequence b of k_batch (separate
//   VarlenBatches; uniform ones are the padded [B, S] form). GQA/MQA: query
//   head h reads key/value head h / (heads / kv_heads).
//
// The forward saves the log-sum-exp (natural log) per query and head,
// [heads, q_batch.total]; a query that sees no key writes zeros and an LSE
// of -inf. NaN or Inf in q, k or v propagates to the rows that read it, as
// in PyTorch. The backward (dQ, dK, dV) uses no atomics: it is bit-identical
// from run to run (the deterministic mode is the only mode).
//
// Device-side checks: both batches' cu_seqlens (and a Documents variant's
// document offsets); read_status() names the bad entry. Nothing is written
// when a check fails.
#include <tokenless/attention/kernel.cuh>
#include <tokenless/attention/policy.hpp>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/mma.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/varlen.hpp>
#include <tokenless/core/workspace.hpp>

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace tokenless::attention {

// Device-side check ids (kCheckBatch is the query batch's).
inline constexpr int kCheckKeyBatch = kFirstOperationCheck;
inline constexpr int kCheckDocuments = kFirstOperationCheck + 1;

template <class V, class T>
struct ForwardArguments {
  const T* q = nullptr;
  const T* k = nullptr;
  const T* v = nullptr;
  VarlenBatch q_batch, k_batch;
  int heads = 0, kv_heads = 0, head_dim = 0;
  // Elements between positions; 0: packed (heads * head_dim for q and out,
  // kv_heads * head_dim for k and v).
  std::int64_t q_stride = 0, k_stride = 0, v_stride = 0, out_stride = 0;
  float scale = 0.0f;  // softmax scale; 0: 1 / sqrt(head_dim)
  typename V::Params variant{};
  T* out = nullptr;      // [q_batch.total, heads, head_dim] (out_stride)
  float* lse = nullptr;  // [heads, q_batch.total]; optional (the backward needs it)
};

template <class V, class T>
struct BackwardArguments {
  const T* q = nullptr;
  const T* k = nullptr;
  const T* v = nullptr;
  const T* out = nullptr;       // the forward's output
  const T* grad_out = nullptr;  // dL/d out, like out
  const float* lse = nullptr;   // the forward's LSE
  VarlenBatch q_batch, k_batch;
  int heads = 0, kv_heads = 0, head_dim = 0;
  std::int64_t q_stride = 0, k_stride = 0, v_stride = 0, out_stride = 0, grad_out_stride = 0;
  std::int64_t grad_q_stride = 0, grad_k_stride = 0, grad_v_stride = 0;
  float scale = 0.0f;
  typename V::Params variant{};
  T* grad_q = nullptr;  // written, like q
  T* grad_k = nullptr;  // written, like k
  T* grad_v = nullptr;  // written, like v
};

namespace detail {

inline std::int64_t or_packed(std::int64_t stride, int heads, int head_dim) {
  return stride ? stride : static_cast<std::int64_t>(heads) * head_dim;
}

inline Status check_rows(const char* name, const void* p, std::int64_t stride, int heads, int head_dim) {
  TL_RETURN_IF_ERROR(check::not_null(name, p));
  TL_RETURN_IF_ERROR(check::aligned(name, p, 16));  // 16-byte copies
  const std::int64_t row = static_cast<std::int64_t>(heads) * head_dim;
  if (stride < row || stride % 8 != 0) {
    return Status::error(StatusCode::invalid_argument,
                         "argument '%s': expected a row stride >= heads * head_dim (%lld) and a multiple of 8 elements "
                         "(16 bytes; rows must not overlap), got %lld",
                         name, static_cast<long long>(row), static_cast<long long>(stride));
  }
  return Status::ok();
}

// The row checks of the query-shaped ([*, heads, head_dim]) and key-shaped
// ([*, kv_heads, head_dim]) tensors of an operation; stride 0 is packed.
struct RowChecks {
  int heads, kv_heads, head_dim;
  Status q(const char* name, const void* p, std::int64_t stride) const {
    return check_rows(name, p, or_packed(stride, heads, head_dim), heads, head_dim);
  }
  Status kv(const char* name, const void* p, std::int64_t stride) const {
    return check_rows(name, p, or_packed(stride, kv_heads, head_dim), kv_heads, head_dim);
  }
  // q, k, v and out, the tensors the forward and the backward share.
  template <class A>
  Status qkv_out(const A& a) const {
    TL_RETURN_IF_ERROR(q("q", a.q, a.q_stride));
    TL_RETURN_IF_ERROR(kv("k", a.k, a.k_stride));
    TL_RETURN_IF_ERROR(kv("v", a.v, a.v_stride));
    return q("out", a.out, a.out_stride);
  }
};

template <class HD>
inline Status check_shape(const VarlenBatch& qb, const VarlenBatch& kb, int heads, int kv_heads, int head_dim,
                          float scale) {
  TL_RETURN_IF_ERROR(check::batch("q_batch", qb));
  TL_RETURN_IF_ERROR(check::batch("k_batch", kb));
  if (qb.num_seqs != kb.num_seqs) {
    return Status::error(StatusCode::shape_mismatch,
                         "argument 'k_batch.num_seqs': expected the query batch's %lld sequences, got %lld",
                         static_cast<long long>(qb.num_seqs), static_cast<long long>(kb.num_seqs));
  }
  TL_RETURN_IF_ERROR(check::positive("heads", heads));
  TL_RETURN_IF_ERROR(check::positive("kv_heads", kv_heads));
  if (heads % kv_heads != 0) {
    return Status::argument(StatusCode::invalid_argument, "heads", "a multiple of kv_heads", "%d heads, %d kv_heads",
                            heads, kv_heads);
  }
  if (heads > 65535) return Status::argument(StatusCode::overflow, "heads", "at most 65535 (the grid's y)", "%d", heads);
  if (!HD::contains(head_dim)) {
    return Status::argument(StatusCode::unsupported, "head_dim", "64, 96 or 128 (those this operation instantiates)",
                            "%d (not yet supported)", head_dim);
  }
  return check::finite("scale", scale);
}

// The variants that read the same positions as queries and keys.
template <class V>
constexpr bool self_attention_only() {
  return requires(const typename V::Params& p) { p.docs; };
}

template <class V>
inline Status check_variant_batches(const typename V::Params& vp, const VarlenBatch& qb, const VarlenBatch& kb) {
  TL_RETURN_IF_ERROR(check_variant<V>(vp));
  if constexpr (self_attention_only<V>()) {
    if (qb.total != kb.total || qb.cu_seqlens != kb.cu_seqlens) {
      return Status::error(StatusCode::shape_mismatch,
                           "argument 'k_batch': a Documents variant is self-attention: expected the query batch");
    }
    TL_RETURN_IF_ERROR(check::equal("variant.docs.total", vp.docs.total, qb.total));
  }
  return Status::ok();
}

template <class V>
inline Status validate_batches(const typename V::Params& vp, const VarlenBatch& qb, const VarlenBatch& kb,
                               DeviceStatus* status, cudaStream_t stream) {
  TL_RETURN_IF_ERROR(begin_checks(status, qb, stream));
  if (kb.cu_seqlens != qb.cu_seqlens) TL_RETURN_IF_ERROR(validate_batch(kb, status, stream, kCheckKeyBatch));
  if constexpr (self_attention_only<V>()) TL_RETURN_IF_ERROR(validate_batch(vp.docs, status, stream, kCheckDocuments));
  return Status::ok();
}

template <class V>
inline Status read_batches(const char* op, const typename V::Params& vp, const VarlenBatch& qb, const VarlenBatch& kb,
                           Workspace ws, cudaStream_t stream) {
  DeviceFailure f;
  TL_RETURN_IF_ERROR(read_device_status(status_of(ws), f, stream));
  switch (f.check) {
    case 0: return Status::ok();
    case kCheckBatch: return batch_failure(op, qb, f.index, stream, "q_batch.cu_seqlens");
    case kCheckKeyBatch: return batch_failure(op, kb, f.index, stream, "k_batch.cu_seqlens");
    case kCheckDocuments:
      if constexpr (self_attention_only<V>()) return batch_failure(op, vp.docs, f.index, stream, "variant.docs.cu_seqlens");
      [[fallthrough]];
    default: return Status::error(StatusCode::internal, "%s: unknown device check %d", op, f.check);
  }
}

// Calls f(std::integral_constant<int, D>) for the runtime head dim.
template <int... kDims, class F>
inline Status dispatch_head_dim(HeadDims<kDims...>, int d, F&& f) {
  Status s = Status::error(StatusCode::unsupported, "head_dim %d is not instantiated", d);
  (void)((d == kDims ? (s = f(std::integral_constant<int, kDims>{}), true) : false) || ...);
  return s;
}

template <class K>
inline Status launch_tiles(const typename K::Params& params, std::int64_t tiles, int heads, cudaStream_t stream) {
  TL_RETURN_IF_ERROR(set_max_dynamic_smem<K>(K::kSmemBytes));
  return launch<K>(params, dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(heads)), stream, K::kSmemBytes);
}

template <class V, class T>
inline Problem<V, T> problem_of(const T* q, const T* k, const T* v, const VarlenBatch& qb, const VarlenBatch& kb,
                                int heads, int kv_heads, int head_dim, std::int64_t qs, std::int64_t ks,
                                std::int64_t vs, float scale, const typename V::Params& vp) {
  return {q,
          k,
          v,
          or_packed(qs, heads, head_dim),
          or_packed(ks, kv_heads, head_dim),
          or_packed(vs, kv_heads, head_dim),
          qb,
          kb,
          heads,
          heads / kv_heads,
          scale != 0.0f ? scale : 1.0f / std::sqrt(static_cast<float>(head_dim)),
          vp};
}

}  // namespace detail

template <Variant V, mma::TensorCoreType T, class HD = SupportedHeadDims>
struct Forward {
  static constexpr const char* kName = "attention::Forward";
  using Arguments = ForwardArguments<V, T>;

  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_shape<HD>(a.q_batch, a.k_batch, a.heads, a.kv_heads, a.head_dim, a.scale));
    TL_RETURN_IF_ERROR((detail::RowChecks{a.heads, a.kv_heads, a.head_dim}.qkv_out(a)));
    if (a.lse) TL_RETURN_IF_ERROR(check::aligned("lse", a.lse, alignof(float)));
    return detail::check_variant_batches<V>(a.variant, a.q_batch, a.k_batch);
  }
  static std::size_t workspace_size(const Arguments&) { return kStatusBytes; }

  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<Forward>(a, ws));
    DeviceStatus* status = status_of(ws);
    TL_RETURN_IF_ERROR(detail::validate_batches<V>(a.variant, a.q_batch, a.k_batch, status, stream));
    return detail::dispatch_head_dim(HD{}, a.head_dim, [&](auto dim) {
      using K = detail::ForwardKernel<V, T, decltype(dim)::value>;
      const typename K::Params p{
          detail::problem_of<V, T>(a.q, a.k, a.v, a.q_batch, a.k_batch, a.heads, a.kv_heads, a.head_dim, a.q_stride,
                                   a.k_stride, a.v_stride, a.scale, a.variant),
          a.out, detail::or_packed(a.out_stride, a.heads, a.head_dim), a.lse, status};
      return detail::launch_tiles<K>(p, detail::tile_count(a.q_batch, K::kBQ), a.heads, stream);
    });
  }
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    return detail::read_batches<V>(kName, a.variant, a.q_batch, a.k_batch, ws, stream);
  }
};

template <Variant V, mma::TensorCoreType T, class HD = SupportedHeadDims>
struct Backward {
  static constexpr const char* kName = "attention::Backward";
  using Arguments = BackwardArguments<V, T>;

  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_shape<HD>(a.q_batch, a.k_batch, a.heads, a.kv_heads, a.head_dim, a.scale));
    const detail::RowChecks rows{a.heads, a.kv_heads, a.head_dim};
    TL_RETURN_IF_ERROR(rows.qkv_out(a));
    TL_RETURN_IF_ERROR(rows.q("grad_out", a.grad_out, a.grad_out_stride));
    TL_RETURN_IF_ERROR(check::not_null("lse", a.lse));
    TL_RETURN_IF_ERROR(rows.q("grad_q", a.grad_q, a.grad_q_stride));
    TL_RETURN_IF_ERROR(rows.kv("grad_k", a.grad_k, a.grad_k_stride));
    TL_RETURN_IF_ERROR(rows.kv("grad_v", a.grad_v, a.grad_v_stride));
    return detail::check_variant_batches<V>(a.variant, a.q_batch, a.k_batch);
  }
  // The status record, then D = rowsum(dO * O) for every query and head.
  static constexpr std::size_t kDotAt = kStatusBytes;
  static std::size_t workspace_size(const Arguments& a) {
    return kDotAt + align_up(static_cast<std::size_t>(a.q_batch.total) * static_cast<std::size_t>(a.heads > 0 ? a.heads : 0) *
                                 sizeof(float),
                             kWorkspaceAlignment);
  }

  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<Backward>(a, ws));
    DeviceStatus* status = status_of(ws);
    float* dot = ws.at<float>(kDotAt);
    TL_RETURN_IF_ERROR(detail::validate_batches<V>(a.variant, a.q_batch, a.k_batch, status, stream));
    const std::int64_t out_stride = detail::or_packed(a.out_stride, a.heads, a.head_dim);
    const std::int64_t grad_out_stride = detail::or_packed(a.grad_out_stride, a.heads, a.head_dim);
    using RowDot = detail::RowDotKernel<T>;
    TL_RETURN_IF_ERROR(launch<RowDot>({a.out, a.grad_out, out_stride, grad_out_stride, a.q_batch.total, a.heads,
                                       a.head_dim, dot, status},
                                      grid_for(a.q_batch.total * a.heads, RowDot::kThreads / 32, 16), stream));
    return detail::dispatch_head_dim(HD{}, a.head_dim, [&](auto dim) {
      constexpr int D = decltype(dim)::value;
      using KQ = detail::GradQKernel<V, T, D>;
      using KKV = detail::GradKVKernel<V, T, D>;
      typename KQ::Params p{detail::problem_of<V, T>(a.q, a.k, a.v, a.q_batch, a.k_batch, a.heads, a.kv_heads,
                                                     a.head_dim, a.q_stride, a.k_stride, a.v_stride, a.scale,
                                                     a.variant),
                            a.grad_out,
                            grad_out_stride,
                            a.lse,
                            dot,
                            a.grad_q,
                            nullptr,
                            detail::or_packed(a.grad_q_stride, a.heads, a.head_dim),
                            0,
                            status};
      TL_RETURN_IF_ERROR(detail::launch_tiles<KQ>(p, detail::tile_count(a.q_batch, KQ::kBQ), a.heads, stream));
      p.grad = a.grad_k;
      p.grad_v = a.grad_v;
      p.grad_stride = detail::or_packed(a.grad_k_stride, a.kv_heads, a.head_dim);
      p.grad_v_stride = detail::or_packed(a.grad_v_stride, a.kv_heads, a.head_dim);
      return detail::launch_tiles<KKV>(p, detail::tile_count(a.k_batch, KKV::kBK), a.kv_heads, stream);
    });
  }
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    return detail::read_batches<V>(kName, a.variant, a.q_batch, a.k_batch, ws, stream);
  }
};

}  // namespace tokenless::attention
