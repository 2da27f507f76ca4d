#pragma once
// The byte head (policy.hpp has the semantics): BLT's final norm and
// 260-way output layer, fused with everything that reads the logits.
//
//   ByteHead<P, T>          one kernel: the norm, the logits (registers and
//                           shared memory only), and any of the entropy (the
//                           patcher's entropies_in), the cross-entropy (every
//                           option of the linear cross-entropy) with its dz
//                           when dL/dloss is given, the argmax or a sample
//   ByteHeadBackward<P, T>  from that dz: dW and db (fp32, written or
//                           accumulated), dh through the norm, the norm
//                           weight's gradient (fp32)
//
// P is the norm's policy (blocks::NormThenCast for transformers' BLT port and
// the Llama family, blocks::ScaleInFp32); a null norm_weight means no norm.
//
// Memory: the forward needs none beyond its outputs (and 2 floats a token
// for a reduced loss); dz is [n, vocab] in T. The backward recomputes the
// normalised rows a chunk of rows at a time: 2 · chunk_rows · d · sizeof(T)
// + 4 · chunk_rows bytes (64 MiB at the default 16384 rows, d 1024, bf16),
// plus cuBLASLt's workspace.
//
// Device-side checks: labels in [0, vocab) or ignore_index; a bad label is
// named by read_status() and nothing is written.
#include <tokenless/blocks/norm.cuh>
#include <tokenless/blocks/policy.hpp>
#include <tokenless/bottleneck/concepts.cuh>
#include <tokenless/core/cublaslt.hpp>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/workspace.hpp>
#include <tokenless/heads/byte_head_kernel.cuh>
#include <tokenless/heads/kernel.cuh>
#include <tokenless/heads/policy.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace tokenless::heads {

namespace detail {

// What the forward and backward share: the head's weights and shape.
template <class T>
Status check_byte_head_shape(std::int64_t n, int vocab, int d, const T* h, const T* norm_weight, const T* weight,
                             float eps) {
  TL_RETURN_IF_ERROR(check::positive("n", n));
  TL_RETURN_IF_ERROR(check::fits_int32("n", n));
  TL_RETURN_IF_ERROR(check::positive("vocab", vocab));
  if (vocab > kByteHeadMaxVocab) {
    return Status::argument(StatusCode::unsupported, "vocab", "at most 288 (the byte head keeps a row's logits in one block; "
                            "use LinearCrossEntropy beyond)", "%d", vocab);
  }
  TL_RETURN_IF_ERROR(check::positive("d", d));
  if (d % 8 != 0) return Status::argument(StatusCode::invalid_argument, "d", "a multiple of 8", "%d", d);
  TL_RETURN_IF_ERROR(check::product_fits_int32("n * d", n, d));
  TL_RETURN_IF_ERROR(check::product_fits_int32("n * vocab", n, vocab));
  TL_RETURN_IF_ERROR(check::not_null({{"h", h}, {"weight", weight}}));
  TL_RETURN_IF_ERROR(check::aligned("h", h, 16));
  TL_RETURN_IF_ERROR(check::aligned("weight", weight, 16));
  if (norm_weight) {
    TL_RETURN_IF_ERROR(check::aligned("norm_weight", norm_weight, 16));
    if (!(eps >= 0.0f) || !std::isfinite(eps)) {
      return Status::argument(StatusCode::invalid_argument, "eps", "a finite eps >= 0", "%g", static_cast<double>(eps));
    }
  }
  return Status::ok();
}

}  // namespace detail

template <blocks::NormPolicy P, StorageFloat T>
struct ByteHead {
  static constexpr const char* kName = "heads::ByteHead";
  struct Arguments {
    const T* h = nullptr;            // [n, d]: the last layer's output, before the final norm
    const T* norm_weight = nullptr;  // [d]: the final norm's weight; nullptr: h is used as it is
    float eps = 1e-5f;               // BLT: norm_eps 1e-5
    const T* weight = nullptr;       // [vocab, d]: the output projection
    const T* bias = nullptr;         // [vocab], optional (BLT has none)
    std::int64_t n = 0;
    int vocab = 260;
    int d = 0;
    // Any of these (at least one):
    float* entropy = nullptr;        // [n]: nats; the patcher's entropies_in
    std::int32_t* next = nullptr;    // [n]: argmax or sample of each row
    Sampling sampling{};
    // [n], device, optional: row i's draw offset in place of sampling.offset
    // (a batch of streams at different positions, each keyed by its own).
    const std::int64_t* sample_offsets = nullptr;
    const std::int32_t* labels = nullptr;  // [n]: with loss, the cross-entropy
    const float* token_weights = nullptr;  // [n], optional
    CrossEntropyOptions options{};
    float* loss = nullptr;     // [1] (mean, sum) or [n] (none)
    float* z_loss = nullptr;   // optional, like loss
    float* lse = nullptr;      // [n], optional
    float* logprob = nullptr;  // [n], optional (0 where ignored)
    const float* grad_loss = nullptr;  // optional, device: dL/dloss ([1], or [n] with none); then dz
    T* grad_logits = nullptr;          // [n, vocab]: dz, for ByteHeadBackward
    float* inv_rms = nullptr;          // [n], optional: the norm's
  };

  static bool reduced(const Arguments& a) { return a.options.reduction != Reduction::none; }
  struct Layout {
    std::size_t totals, loss, z_loss, bytes;
  };
  static Layout layout(const Arguments& a) {
    const std::int64_t n = a.labels && reduced(a) && a.n > 0 ? a.n : 0;
    WorkspaceLayout w;
    Layout l{};
    w.add(kStatusBytes);
    l.totals = w.add_array<float>(4);
    l.loss = w.add_array<float>(n);
    l.z_loss = w.add_array<float>(a.z_loss ? n : 0);
    l.bytes = w.bytes();
    return l;
  }
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_byte_head_shape(a.n, a.vocab, a.d, a.h, a.norm_weight, a.weight, a.eps));
    if (!a.entropy && !a.next && !a.labels && !a.lse && !a.inv_rms) {
      return Status::argument(StatusCode::null_pointer, "entropy, next, labels, lse, inv_rms", "at least one output",
                              "none");
    }
    if (a.labels) {
      TL_RETURN_IF_ERROR(check::not_null("loss", a.loss));
      TL_RETURN_IF_ERROR(detail::check_options(a.options));
    } else if (a.loss || a.z_loss || a.logprob || a.grad_logits || a.grad_loss || a.token_weights) {
      return Status::argument(StatusCode::null_pointer, "labels", "labels for a loss, log-prob or dz", "none");
    }
    if (!a.grad_logits != !a.grad_loss) {
      return Status::argument(StatusCode::null_pointer, a.grad_logits ? "grad_loss" : "grad_logits",
                              "grad_loss and grad_logits together", "one of them");
    }
    if (a.grad_logits) TL_RETURN_IF_ERROR(check::aligned("grad_logits", a.grad_logits, alignof(T)));
    if (a.next) TL_RETURN_IF_ERROR(check_sampling(a.sampling));
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments& a) { return layout(a).bytes; }

  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<ByteHead>(a, ws));
    const Layout l = layout(a);
    DeviceStatus* status = status_of(ws);
    const CrossEntropyOptions& o = a.options;
    float* totals = ws.at<float>(l.totals);
    TL_RETURN_IF_ERROR(reset_device_status(status, stream));
    float* loss_tok = nullptr;
    float* z_tok = nullptr;
    if (a.labels) {
      TL_RETURN_IF_ERROR(launch<detail::CheckLabelsKernel>({a.labels, a.n, a.vocab, o.ignore_index, status},
                                                           grid_for(a.n, detail::CheckLabelsKernel::kThreads, 4),
                                                           stream));
      loss_tok = reduced(a) ? ws.at<float>(l.loss) : a.loss;
      z_tok = a.z_loss ? (reduced(a) ? ws.at<float>(l.z_loss) : a.z_loss) : nullptr;
      if (a.grad_logits && o.reduction == Reduction::mean) {  // Σ w before dz's scale
        TL_RETURN_IF_ERROR(launch<detail::ReduceKernel>({nullptr, nullptr, a.labels, a.token_weights, o.ignore_index,
                                                         a.n, o.reduction, totals, nullptr, nullptr, status},
                                                        dim3(1), stream));
      }
    }
    using K = detail::ByteHeadKernel<P, T>;
    TL_RETURN_IF_ERROR(set_max_dynamic_smem<K>(K::kSmemBytes));
    const auto blocks = static_cast<unsigned>((a.n + K::kRows - 1) / K::kRows);
    TL_RETURN_IF_ERROR(launch<K>({a.h, a.norm_weight, a.eps, a.weight, a.bias, a.n, a.vocab, a.d, a.labels,
                                  a.token_weights, o, a.grad_loss, totals, loss_tok, z_tok, a.lse, a.logprob,
                                  a.grad_logits, a.entropy, a.inv_rms, a.next, a.sampling, a.sample_offsets, status},
                                 dim3(blocks), stream, K::kSmemBytes));
    if (!a.labels || !reduced(a)) return Status::ok();
    return launch<detail::ReduceKernel>({loss_tok, z_tok, a.labels, a.token_weights, o.ignore_index, a.n, o.reduction,
                                         totals, a.loss, a.z_loss, status},
                                        dim3(1), stream);
  }
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    if (!a.labels) return Status::ok();
    return detail::read_labels_status(kName, a.labels, a.vocab, a.options.ignore_index, ws, stream);
  }
};

template <blocks::NormPolicy P, StorageFloat T>
struct ByteHeadBackward {
  static constexpr const char* kName = "heads::ByteHeadBackward";
  struct Arguments {
    const blas::LtHandle* handle = nullptr;
    const T* h = nullptr;            // as given to the forward
    const T* norm_weight = nullptr;
    float eps = 1e-5f;
    const T* weight = nullptr;
    std::int64_t n = 0;
    int vocab = 260;
    int d = 0;
    const T* grad_logits = nullptr;  // [n, vocab]: the forward's dz
    T* grad_h = nullptr;                  // [n, d], optional
    float* grad_norm_weight = nullptr;    // [d] fp32, optional (needs grad_h's pass)
    float* grad_weight = nullptr;         // [vocab, d] fp32, optional
    float* grad_bias = nullptr;           // [vocab] fp32, optional
    bool accumulate = false;              // add into the fp32 gradients
    int chunk_rows = 0;                   // 0: the tuning's
  };
  static std::int64_t rows_of(const Arguments& b) {
    const int c = b.chunk_rows > 0 ? b.chunk_rows : byte_head_tuning_for(compute_capability()).backward_chunk_rows;
    return std::min<std::int64_t>(std::max<std::int64_t>(b.n, 0), c);
  }
  struct Layout {
    std::size_t normed, grad_normed, inv, gemm, bytes;
  };
  static Layout layout(const Arguments& b) {
    const std::int64_t cr = rows_of(b), d = std::max(b.d, 0);
    const bool norm = b.norm_weight != nullptr;
    WorkspaceLayout w;
    Layout l{};
    l.normed = w.add_array<T>(norm ? cr * d : 0);
    l.grad_normed = w.add_array<T>(norm && b.grad_h ? cr * d : 0);
    l.inv = w.add_array<float>(norm ? cr : 0);
    l.gemm = w.add(blas::Gemm::workspace_size({}));
    l.bytes = w.bytes();
    return l;
  }
  static Status can_implement(const Arguments& b) {
    TL_RETURN_IF_ERROR(detail::check_byte_head_shape(b.n, b.vocab, b.d, b.h, b.norm_weight, b.weight, b.eps));
    if (!b.handle) return Status::argument(StatusCode::null_pointer, "handle", "a created LtHandle", "none");
    TL_RETURN_IF_ERROR(check::not_null("grad_logits", b.grad_logits));
    TL_RETURN_IF_ERROR(check::aligned("grad_logits", b.grad_logits, alignof(T)));
    if (!b.grad_h && !b.grad_weight && !b.grad_bias) {
      return Status::argument(StatusCode::null_pointer, "grad_h, grad_weight, grad_bias", "at least one gradient",
                              "none");
    }
    if (b.grad_norm_weight && (!b.norm_weight || !b.grad_h)) {
      return Status::argument(StatusCode::invalid_argument, "grad_norm_weight", "a norm weight and grad_h beside it",
                              b.norm_weight ? "no grad_h" : "no norm_weight");
    }
    if (b.grad_h) TL_RETURN_IF_ERROR(check::aligned("grad_h", b.grad_h, 16));
    if (b.chunk_rows < 0) {
      return Status::argument(StatusCode::invalid_argument, "chunk_rows", ">= 0 (0: the tuning's)", "%d", b.chunk_rows);
    }
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments& b) { return layout(b).bytes; }

  static Status run(const Arguments& b, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<ByteHeadBackward>(b, ws));
    const Layout l = layout(b);
    const std::int64_t cr = rows_of(b);
    const bool norm = b.norm_weight != nullptr;
    const Workspace gemm_ws{ws.at<void>(l.gemm), ws.bytes - l.gemm};
    auto gemm = [&](std::int64_t m, std::int64_t nn, std::int64_t k, const void* A, std::int64_t lda, bool ta,
                    const void* B, std::int64_t ldb, void* D, bool d_fp32, float beta) {
      blas::Gemm::Arguments g;
      g.handle = b.handle;
      g.dtype = dtype_traits<T>::id;
      g.m = m;
      g.n = nn;
      g.k = k;
      g.a = A;
      g.lda = lda;
      g.trans_a = ta;
      g.b = B;
      g.ldb = ldb;
      g.d = D;
      g.ldd = nn;
      g.d_fp32 = d_fp32 && !std::is_same_v<T, float>;
      g.beta = beta;
      return blas::Gemm::run(g, gemm_ws, stream);
    };
    for (std::int64_t r0 = 0; r0 < b.n; r0 += cr) {
      const std::int64_t rows = std::min(cr, b.n - r0);
      const bool add = b.accumulate || r0 > 0;
      const T* h = b.h + r0 * b.d;
      const T* dz = b.grad_logits + r0 * b.vocab;
      float* inv = ws.at<float>(l.inv);
      // The rows the logits were formed from: RmsNorm's, the bits the forward fed its GEMM.
      const T* y = h;
      if (norm) {
        T* normed = ws.at<T>(l.normed);
        TL_RETURN_IF_ERROR(blocks::RmsNorm<P, T>::run(
            {.x = h, .weight = b.norm_weight, .rows = rows, .d = b.d, .eps = b.eps, .out = normed, .inv_rms = inv}, {},
            stream));
        y = normed;
      }
      if (b.grad_weight) {  // dW (+)= dzᵀ · y
        TL_RETURN_IF_ERROR(gemm(b.vocab, b.d, rows, dz, b.vocab, true, y, b.d, b.grad_weight, true, add ? 1.0f : 0.0f));
      }
      if (b.grad_bias) {
        TL_RETURN_IF_ERROR(bottleneck::ColumnSum<T>::run(
            {.x = dz, .rows = rows, .d = b.vocab, .accumulate = add, .out = b.grad_bias}, {}, stream));
      }
      if (!b.grad_h) continue;
      // dy = dz · W, then through the norm (straight into grad_h without one).
      T* dy = norm ? ws.at<T>(l.grad_normed) : b.grad_h + r0 * b.d;
      TL_RETURN_IF_ERROR(gemm(rows, b.d, b.vocab, dz, b.vocab, false, b.weight, b.d, dy, false, 0.0f));
      if (!norm) continue;
      TL_RETURN_IF_ERROR(blocks::RmsNormBackward<P, T>::run({.h = h,
                                                             .inv_rms = inv,
                                                             .weight = b.norm_weight,
                                                             .grad_out = dy,
                                                             .rows = rows,
                                                             .d = b.d,
                                                             .grad_h = b.grad_h + r0 * b.d,
                                                             .grad_weight = b.grad_norm_weight,
                                                             .accumulate_weight = add},
                                                            {}, stream));
    }
    return Status::ok();
  }
  static Status read_status(const Arguments&, Workspace, cudaStream_t = nullptr) { return Status::ok(); }
};

}  // namespace tokenless::heads
