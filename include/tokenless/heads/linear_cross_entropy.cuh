#pragma once
// Fused linear cross-entropy (policy.hpp has the semantics): the loss of
// h · Wᵀ (+ b) against labels without the [N, V] logits in memory.
//
//   LinearCrossEntropy<T>          the loss (mean, sum or per token), the
//                                  z-loss, each token's lse and log-prob
//   LinearCrossEntropyBackward<T>  dH, dW and db (fp32, written or
//                                  accumulated), from the forward's lse
//
// Schedule: the tokens in chunks of chunk_rows, the vocabulary in chunks of
// chunk_cols. Each chunk's logits come from one cuBLASLt GEMM in fp32 (from
// 16-bit h and W; no 16-bit rounding of the logits), then a warp a row folds
// them into the row's online log-sum-exp. The backward recomputes each
// chunk's logits, turns them into dz (in T), and runs the two GEMMs dH += dz ·
// W_c (fp32 accumulator, cast once a row chunk) and dW_c += dzᵀ · H (fp32,
// accumulated over the row chunks: never rounded to 16 bits, unlike Liger's
// bf16 accumulation); db is dz's column sums.
//
// Memory beyond the inputs and outputs (the workspace): chunk_rows ·
// chunk_cols · (4 + sizeof(T)) bytes of logits and dz, chunk_rows · d · 4 of
// the dH accumulator (16-bit T), 5 floats a token, cuBLASLt's workspace. At
// the default 4096 × 4096 chunks and d 4096: 160 MiB (bf16), whatever N and
// V; that is O(N + V·0 + chunk), within the O(N·d + V·d) of the inputs.
//
// Device-side checks: labels in [0, V) or ignore_index. A bad label is named
// by read_status(), and nothing is written: the GEMMs run with {alpha, beta}
// = {0, 1}, dz is zeros (so db's column sums add nothing), and every other
// kernel stops at the check.
#include <tokenless/bottleneck/concepts.cuh>
#include <tokenless/core/cublaslt.hpp>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/workspace.hpp>
#include <tokenless/heads/kernel.cuh>
#include <tokenless/heads/policy.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace tokenless::heads {

template <class T>
struct LinearCrossEntropyArguments {
  const blas::LtHandle* handle = nullptr;
  const T* h = nullptr;          // [n, d]: the final hidden states (after the final norm)
  const T* weight = nullptr;     // [vocab, d]: lm_head.weight
  const T* bias = nullptr;       // [vocab], optional
  const std::int32_t* labels = nullptr;  // [n], device: a class or ignore_index
  const float* token_weights = nullptr;  // [n], optional: per-token loss weights
  std::int64_t n = 0, vocab = 0;
  int d = 0;
  CrossEntropyOptions options{};
  float* loss = nullptr;     // [1] (mean, sum) or [n] (none)
  float* z_loss = nullptr;   // optional, like loss: the z-loss part of it
  float* lse = nullptr;      // [n]: log Σ exp z (the backward reads it)
  float* logprob = nullptr;  // [n], optional: z_label − lse (0 where ignored)
  int chunk_rows = 0, chunk_cols = 0;  // 0: the tuning's
};

namespace detail {

inline std::int64_t rows_of(std::int64_t n, int chunk_rows) {
  return std::min<std::int64_t>(n, chunk_rows > 0 ? chunk_rows : tuning_for(compute_capability()).chunk_rows);
}
inline std::int64_t cols_of(std::int64_t vocab, int chunk_cols) {
  return std::min<std::int64_t>(vocab, chunk_cols > 0 ? chunk_cols : tuning_for(compute_capability()).chunk_cols);
}

template <class T>
Status check_arguments(const LinearCrossEntropyArguments<T>& a) {
  TL_RETURN_IF_ERROR(check::positive("n", a.n));
  TL_RETURN_IF_ERROR(check::positive("vocab", a.vocab));
  TL_RETURN_IF_ERROR(check::positive("d", a.d));
  TL_RETURN_IF_ERROR(check::fits_int32("vocab", a.vocab));
  TL_RETURN_IF_ERROR(check::fits_int32("n", a.n));
  if (!a.handle) return Status::argument(StatusCode::null_pointer, "handle", "a created LtHandle", "none");
  TL_RETURN_IF_ERROR(check::not_null({{"h", a.h}, {"weight", a.weight}, {"labels", a.labels}, {"lse", a.lse}}));
  const std::size_t row_align = std::is_same_v<T, float> ? 4 : 2;
  TL_RETURN_IF_ERROR(check::aligned("h", a.h, row_align));
  TL_RETURN_IF_ERROR(check::aligned("weight", a.weight, row_align));
  TL_RETURN_IF_ERROR(check_options(a.options));
  if (a.chunk_rows < 0 || a.chunk_cols < 0) {
    return Status::argument(StatusCode::invalid_argument, "chunk_rows, chunk_cols", ">= 0 (0: the tuning's)",
                            "%d, %d", a.chunk_rows, a.chunk_cols);
  }
  TL_RETURN_IF_ERROR(check::product_fits_int32("chunk_rows * chunk_cols", rows_of(a.n, a.chunk_rows),
                                               cols_of(a.vocab, a.chunk_cols)));
  return Status::ok();
}

template <class T>
blas::Gemm::Arguments gemm_args(const blas::LtHandle* handle, std::int64_t m, std::int64_t n, std::int64_t k,
                                const void* a, std::int64_t lda, bool ta, const void* b, std::int64_t ldb, bool tb,
                                void* d, std::int64_t ldd, bool d_fp32, const float* scalars) {
  blas::Gemm::Arguments g;
  g.handle = handle;
  g.dtype = dtype_traits<T>::id;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a = a;
  g.lda = lda;
  g.trans_a = ta;
  g.b = b;
  g.ldb = ldb;
  g.trans_b = tb;
  g.d = d;
  g.ldd = ldd;
  g.d_fp32 = d_fp32 && !std::is_same_v<T, float>;
  g.device_scalars = scalars;
  return g;
}

// Runs f(row0, rows, col0, cols) over the chunks, rows outer.
template <class F>
Status for_each_chunk(std::int64_t n, std::int64_t vocab, std::int64_t cr, std::int64_t cc, F&& f) {
  for (std::int64_t r0 = 0; r0 < n; r0 += cr) {
    for (std::int64_t c0 = 0; c0 < vocab; c0 += cc) {
      TL_RETURN_IF_ERROR(f(r0, std::min(cr, n - r0), c0, static_cast<int>(std::min(cc, vocab - c0))));
    }
  }
  return Status::ok();
}

}  // namespace detail

template <StorageFloat T>
struct LinearCrossEntropy {
  static constexpr const char* kName = "heads::LinearCrossEntropy";
  using Arguments = LinearCrossEntropyArguments<T>;

  struct Layout {
    std::size_t scalars, totals, logits, state, loss, z_loss, gemm, bytes;
  };
  static Layout layout(const Arguments& a) {
    const std::int64_t n = a.n > 0 ? a.n : 0, cr = a.n > 0 ? detail::rows_of(a.n, a.chunk_rows) : 0,
                       cc = a.vocab > 0 ? detail::cols_of(a.vocab, a.chunk_cols) : 0;
    const bool reduced = a.options.reduction != Reduction::none;
    WorkspaceLayout w;
    Layout l{};
    w.add(kStatusBytes);
    l.scalars = w.add_array<float>(8);
    l.totals = w.add_array<float>(4);
    l.logits = w.add_array<float>(cr * cc);
    l.state = w.add_array<float>(4 * cr);
    l.loss = w.add_array<float>(reduced ? n : 0);
    l.z_loss = w.add_array<float>(reduced && a.z_loss ? n : 0);
    l.gemm = w.add(blas::Gemm::workspace_size({}));
    l.bytes = w.bytes();
    return l;
  }
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_arguments(a));
    TL_RETURN_IF_ERROR(check::not_null("loss", a.loss));
    const std::int64_t cr = detail::rows_of(a.n, a.chunk_rows), cc = detail::cols_of(a.vocab, a.chunk_cols);
    T* p = reinterpret_cast<T*>(std::uintptr_t{kWorkspaceAlignment});
    return blas::Gemm::can_implement(detail::gemm_args<T>(a.handle, cr, cc, a.d, a.h, a.d, false, a.weight, a.d, true,
                                                          p, cc, true, nullptr));
  }
  static std::size_t workspace_size(const Arguments& a) { return layout(a).bytes; }

  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<LinearCrossEntropy>(a, ws));
    const Layout l = layout(a);
    DeviceStatus* status = status_of(ws);
    float* scalars = ws.at<float>(l.scalars);
    const CrossEntropyOptions& o = a.options;
    TL_RETURN_IF_ERROR(reset_device_status(status, stream));
    TL_RETURN_IF_ERROR(launch<detail::CheckLabelsKernel>({a.labels, a.n, a.vocab, o.ignore_index, status},
                                                         grid_for(a.n, detail::CheckLabelsKernel::kThreads, 4), stream));
    TL_RETURN_IF_ERROR(launch<detail::GateKernel>({scalars, false, status}, dim3(1), stream));
    const std::int64_t cr = detail::rows_of(a.n, a.chunk_rows), cc = detail::cols_of(a.vocab, a.chunk_cols);
    float* logits = ws.at<float>(l.logits);
    float* st = ws.at<float>(l.state);
    const detail::RowState state{st, st + cr, st + 2 * cr, st + 3 * cr};
    const Workspace gemm_ws{ws.at<void>(l.gemm), ws.bytes - l.gemm};
    const bool reduced = o.reduction != Reduction::none;
    float* loss_tok = reduced ? ws.at<float>(l.loss) : a.loss;
    float* z_tok = a.z_loss ? (reduced ? ws.at<float>(l.z_loss) : a.z_loss) : nullptr;
    TL_RETURN_IF_ERROR(detail::for_each_chunk(
        a.n, a.vocab, cr, cc, [&](std::int64_t r0, std::int64_t rows, std::int64_t c0, int cols) -> Status {
          TL_RETURN_IF_ERROR(blas::Gemm::run(
              detail::gemm_args<T>(a.handle, rows, cols, a.d, a.h + r0 * a.d, a.d, false, a.weight + c0 * a.d, a.d,
                                   true, logits, cols, true, scalars),
              gemm_ws, stream));
          using K = detail::RowStatsKernel<T>;
          TL_RETURN_IF_ERROR(launch<K>({{logits, cols, rows, r0, cols, c0, a.bias}, a.labels, state, c0 == 0, status},
                                       grid_for(rows, K::kThreads / 32, 8), stream));
          if (c0 + cols < a.vocab) return Status::ok();
          return launch<detail::FinishKernel>(
              {state, rows, r0, a.vocab, a.labels, a.token_weights, o, a.lse, a.logprob, loss_tok, z_tok, status},
              grid_for(rows, detail::FinishKernel::kThreads, 4), stream);
        }));
    if (!reduced) return Status::ok();
    return launch<detail::ReduceKernel>({loss_tok, z_tok, a.labels, a.token_weights, o.ignore_index, a.n, o.reduction,
                                         ws.at<float>(l.totals), a.loss, a.z_loss, status},
                                        dim3(1), stream);
  }
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    return detail::read_labels_status(kName, a.labels, a.vocab, a.options.ignore_index, ws, stream);
  }
};

template <StorageFloat T>
struct LinearCrossEntropyBackward {
  static constexpr const char* kName = "heads::LinearCrossEntropyBackward";
  struct Arguments {
    LinearCrossEntropyArguments<T> forward;  // as given to the forward (its lse read; its outputs unused)
    const float* grad_loss = nullptr;        // [1] (mean, sum) or [n] (none): dL/dloss, device
    T* grad_h = nullptr;                     // [n, d], optional
    float* grad_weight = nullptr;            // [vocab, d] fp32, optional
    float* grad_bias = nullptr;              // [vocab] fp32, optional
    bool accumulate = false;                 // add into grad_weight and grad_bias
  };
  static constexpr bool kFp32 = std::is_same_v<T, float>;
  struct Layout {
    std::size_t scalars, totals, logits, dz, dh, gemm, bytes;
  };
  static Layout layout(const Arguments& b) {
    const auto& a = b.forward;
    const std::int64_t cr = a.n > 0 ? detail::rows_of(a.n, a.chunk_rows) : 0,
                       cc = a.vocab > 0 ? detail::cols_of(a.vocab, a.chunk_cols) : 0;
    WorkspaceLayout w;
    Layout l{};
    w.add(kStatusBytes);
    l.scalars = w.add_array<float>(8);
    l.totals = w.add_array<float>(4);
    l.logits = w.add_array<float>(cr * cc);
    l.dz = w.add_array<T>(kFp32 ? 0 : cr * cc);
    l.dh = w.add_array<float>(kFp32 || !b.grad_h ? 0 : cr * std::max(a.d, 0));
    l.gemm = w.add(blas::Gemm::workspace_size({}));
    l.bytes = w.bytes();
    return l;
  }
  static Status can_implement(const Arguments& b) {
    const auto& a = b.forward;
    TL_RETURN_IF_ERROR(detail::check_arguments(a));
    TL_RETURN_IF_ERROR(check::not_null("grad_loss", b.grad_loss));
    if (!b.grad_h && !b.grad_weight && !b.grad_bias) {
      return Status::argument(StatusCode::null_pointer, "grad_h, grad_weight, grad_bias", "at least one gradient",
                              "none");
    }
    if (b.grad_bias && !a.bias) {
      return Status::argument(StatusCode::invalid_argument, "grad_bias", "nullptr without a bias", "a pointer");
    }
    if (b.grad_h) TL_RETURN_IF_ERROR(check::aligned("grad_h", b.grad_h, alignof(T)));
    if (b.grad_weight) TL_RETURN_IF_ERROR(check::aligned("grad_weight", b.grad_weight, alignof(float)));
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments& b) { return layout(b).bytes; }

  static Status run(const Arguments& b, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<LinearCrossEntropyBackward>(b, ws));
    const auto& a = b.forward;
    const CrossEntropyOptions& o = a.options;
    const Layout l = layout(b);
    DeviceStatus* status = status_of(ws);
    float* scalars = ws.at<float>(l.scalars);
    float* totals = ws.at<float>(l.totals);
    TL_RETURN_IF_ERROR(reset_device_status(status, stream));
    TL_RETURN_IF_ERROR(launch<detail::CheckLabelsKernel>({a.labels, a.n, a.vocab, o.ignore_index, status},
                                                         grid_for(a.n, detail::CheckLabelsKernel::kThreads, 4), stream));
    TL_RETURN_IF_ERROR(launch<detail::GateKernel>({scalars, b.accumulate, status}, dim3(1), stream));
    // Σ w for the mean's scale (the same fixed-order sum as the forward's).
    TL_RETURN_IF_ERROR(launch<detail::ReduceKernel>({nullptr, nullptr, a.labels, a.token_weights, o.ignore_index, a.n,
                                                     o.reduction, totals, nullptr, nullptr, status},
                                                    dim3(1), stream));
    // db: zeroed (past the checks) unless accumulating, then every chunk's column sums added.
    if (b.grad_bias && !b.accumulate) {
      TL_RETURN_IF_ERROR(launch<detail::ZeroKernel>({b.grad_bias, a.vocab, status},
                                                    grid_for(a.vocab, detail::ZeroKernel::kThreads, 4), stream));
    }
    const std::int64_t cr = detail::rows_of(a.n, a.chunk_rows), cc = detail::cols_of(a.vocab, a.chunk_cols);
    float* logits = ws.at<float>(l.logits);
    T* dz = kFp32 ? reinterpret_cast<T*>(logits) : ws.at<T>(l.dz);  // fp32: dz over the logits it came from
    float* dh = ws.at<float>(l.dh);
    const Workspace gemm_ws{ws.at<void>(l.gemm), ws.bytes - l.gemm};
    auto gemm = [&](const blas::Gemm::Arguments& g) { return blas::Gemm::run(g, gemm_ws, stream); };
    return detail::for_each_chunk(
        a.n, a.vocab, cr, cc, [&](std::int64_t r0, std::int64_t rows, std::int64_t c0, int cols) -> Status {
          const T* h = a.h + r0 * a.d;
          const T* w = a.weight + c0 * a.d;
          TL_RETURN_IF_ERROR(gemm(detail::gemm_args<T>(a.handle, rows, cols, a.d, h, a.d, false, w, a.d, true, logits,
                                                       cols, true, scalars)));
          using K = detail::GradLogitsKernel<T>;
          TL_RETURN_IF_ERROR(launch<K>({{logits, cols, rows, r0, cols, c0, a.bias}, a.labels, a.token_weights, a.lse,
                                        b.grad_loss, totals, o, a.vocab, dz, cols, status},
                                       grid_for(rows, K::kThreads / 32, 8), stream));
          // dW_c (+)= dzᵀ · H_c: written by the first row chunk unless accumulating.
          if (b.grad_weight) {
            TL_RETURN_IF_ERROR(gemm(detail::gemm_args<T>(a.handle, cols, a.d, rows, dz, cols, true, h, a.d, false,
                                                         b.grad_weight + c0 * a.d, a.d, true,
                                                         r0 == 0 ? scalars + 2 : scalars + 4)));
          }
          if (b.grad_bias) {
            TL_RETURN_IF_ERROR(bottleneck::ColumnSum<T>::run(
                {.x = dz, .rows = rows, .d = cols, .x_stride = cols, .accumulate = true, .out = b.grad_bias + c0},
                {}, stream));
          }
          if (!b.grad_h) return Status::ok();
          // dH (+)= dz · W_c: fp32 over the vocabulary's chunks, then cast (fp32 T: straight into grad_h).
          float* acc = kFp32 ? reinterpret_cast<float*>(b.grad_h + r0 * a.d) : dh;
          TL_RETURN_IF_ERROR(gemm(detail::gemm_args<T>(a.handle, rows, a.d, cols, dz, cols, false, w, a.d, false, acc,
                                                       a.d, true, c0 == 0 ? scalars : scalars + 4)));
          if (kFp32 || c0 + cols < a.vocab) return Status::ok();
          using C = detail::CastRowsKernel<T>;
          return launch<C>({dh, rows, a.d, b.grad_h + r0 * a.d, a.d, status}, grid_for(rows, C::kThreads / 32, 8),
                           stream);
        });
  }
  static Status read_status(const Arguments& b, Workspace ws, cudaStream_t stream = nullptr) {
    return detail::read_labels_status(kName, b.forward.labels, b.forward.vocab, b.forward.options.ignore_index, ws,
                                      stream);
  }
};

}  // namespace tokenless::heads
