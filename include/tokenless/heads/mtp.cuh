#pragma once
// DeepSeek-V3's multi-token prediction module, its input side: for depth k,
// row t of a sequence combines the next token's embedding with the previous
// depth's hidden state,
//
//   e_t = Emb(ids_t) · [position_t != 0]      ids_t = x_(t+k); the embedding is zeroed at
//                                             position 0, as the released inference code does
//   c_t = concat[enorm(e_t), hnorm(h_t)]      the embedding first, as in the released code
//                                             (the paper's equation puts h first)
//   out_t = c_t · eh_projᵀ                    eh_proj: [d, 2d], no bias
//
// then one decoder block (blocks::DecoderLayer) and the shared final norm and
// head (heads::LinearCrossEntropy while training, a GEMM and an argmax while
// drafting). h^(k-1) is what the caller passes: vLLM gives depth 1 the main
// model's final (normed) hidden states and each later depth the previous
// module's output stream.
//
//   MtpInputs<P, T>          the above; keeps c and the norms' inverse rms when asked
//   MtpInputsBackward<P, T>  dL/dout to dh (the previous depth's or the trunk's),
//                            and fp32 gradients of eh_proj, both norms and the
//                            embedding table (its touched rows); its ids are
//                            the forward's, which checked them
//
// P is the norms' policy (blocks/policy.hpp). Device-side checks: the ids in
// [0, vocab) (blocks::Embedding's), named by read_status().
#include <tokenless/blocks/norm.cuh>
#include <tokenless/blocks/policy.hpp>
#include <tokenless/blocks/tokens.cuh>
#include <tokenless/core/cublaslt.hpp>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/workspace.hpp>
#include <tokenless/heads/kernel.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace tokenless::heads {

template <class T>
struct MtpInputsArguments {
  const blas::LtHandle* handle = nullptr;
  const T* embed = nullptr;               // [vocab, d]: the shared embedding
  const std::int32_t* ids = nullptr;      // [n]: row t's token x_(t+k)
  const std::int32_t* positions = nullptr;  // [n]: each row's position in its sequence
  const T* hidden = nullptr;              // [n, d]: h^(k-1)
  const T* enorm = nullptr;               // [d]
  const T* hnorm = nullptr;               // [d]
  const T* eh_proj = nullptr;             // [d, 2d]
  float eps = 1e-6f;                      // DeepSeek-V3: rms_norm_eps 1e-6
  std::int64_t n = 0, vocab = 0;
  int d = 0;
  T* out = nullptr;                       // [n, d]
  // Optional: what the backward reads, kept (else it lives in the workspace).
  T* concat = nullptr;                    // [n, 2d]: c
  float* inv_rms_e = nullptr;             // [n]
  float* inv_rms_h = nullptr;             // [n]
};

namespace detail {

template <class T>
Status check_mtp(const MtpInputsArguments<T>& a) {
  TL_RETURN_IF_ERROR(check::positive("n", a.n));
  TL_RETURN_IF_ERROR(check::fits_int32("n", a.n));
  TL_RETURN_IF_ERROR(check::positive("vocab", a.vocab));
  TL_RETURN_IF_ERROR(check::fits_int32("vocab", a.vocab));
  TL_RETURN_IF_ERROR(check::positive("d", a.d));
  TL_RETURN_IF_ERROR(check::product_fits_int32("n * 2d", a.n, 2 * std::int64_t{a.d}));
  if (!a.handle) return Status::argument(StatusCode::null_pointer, "handle", "a created LtHandle", "none");
  TL_RETURN_IF_ERROR(check::not_null({{"embed", a.embed},
                                      {"ids", a.ids},
                                      {"positions", a.positions},
                                      {"hidden", a.hidden},
                                      {"enorm", a.enorm},
                                      {"hnorm", a.hnorm},
                                      {"eh_proj", a.eh_proj}}));
  if (!(a.eps >= 0.0f) || !std::isfinite(a.eps)) {
    return Status::argument(StatusCode::invalid_argument, "eps", "a finite eps >= 0", "%g", static_cast<double>(a.eps));
  }
  return Status::ok();
}

inline blas::Gemm::Arguments mtp_gemm(const blas::LtHandle* h, DType dt, std::int64_t m, std::int64_t n,
                                      std::int64_t k, const void* A, std::int64_t lda, bool ta, const void* B,
                                      std::int64_t ldb, bool tb, void* D, bool d_fp32, float beta) {
  blas::Gemm::Arguments g;
  g.handle = h;
  g.dtype = dt;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a = A;
  g.lda = lda;
  g.trans_a = ta;
  g.b = B;
  g.ldb = ldb;
  g.trans_b = tb;
  g.d = D;
  g.ldd = n;
  g.d_fp32 = d_fp32 && dt != DType::f32;
  g.beta = beta;
  return g;
}

// c = [enorm(masked Emb(ids)), hnorm(h)]: both halves, and their inverse rms.
template <class P, class T>
Status mtp_concat(const MtpInputsArguments<T>& a, T* c, float* inv_e, float* inv_h, Workspace embed_ws,
                  cudaStream_t stream) {
  const std::int64_t ld = 2 * std::int64_t{a.d};
  TL_RETURN_IF_ERROR(blocks::Embedding<T>::run(
      {.table = a.embed, .ids = a.ids, .n = a.n, .vocab = a.vocab, .d = a.d, .out = c, .out_stride = ld}, embed_ws,
      stream));
  TL_RETURN_IF_ERROR(launch<ZeroFirstRowsKernel<T>>({a.positions, a.n, a.d, c, ld, status_of(embed_ws)},
                                                    grid_for(a.n, ZeroFirstRowsKernel<T>::kThreads / 32, 8), stream));
  // enorm in place: each row is read whole before it is written.
  TL_RETURN_IF_ERROR(blocks::RmsNorm<P, T>::run({.x = c, .weight = a.enorm, .rows = a.n, .d = a.d, .eps = a.eps,
                                                 .x_stride = ld, .out_stride = ld, .out = c, .inv_rms = inv_e},
                                                {}, stream));
  return blocks::RmsNorm<P, T>::run({.x = a.hidden, .weight = a.hnorm, .rows = a.n, .d = a.d, .eps = a.eps,
                                     .out_stride = ld, .out = c + a.d, .inv_rms = inv_h},
                                    {}, stream);
}

}  // namespace detail

template <blocks::NormPolicy P, StorageFloat T>
struct MtpInputs {
  static constexpr const char* kName = "heads::MtpInputs";
  using Arguments = MtpInputsArguments<T>;
  // c and the inverse rms are formed in the workspace and copied to the kept
  // buffers past the id check, so that a bad id writes nothing.
  struct Layout {
    std::size_t scalars, concat, inv_e, inv_h, gemm, bytes;
  };
  static Layout layout(const Arguments& a) {
    const std::int64_t n = std::max<std::int64_t>(a.n, 0), d = std::max(a.d, 0);
    WorkspaceLayout w;
    Layout l{};
    w.add(kStatusBytes);  // the embedding's id check
    l.scalars = w.add_array<float>(8);
    l.concat = w.add_array<T>(n * 2 * d);
    l.inv_e = w.add_array<float>(n);
    l.inv_h = w.add_array<float>(n);
    l.gemm = w.add(blas::Gemm::workspace_size({}));
    l.bytes = w.bytes();
    return l;
  }
  static Status can_implement(const Arguments& a) {
    TL_RETURN_IF_ERROR(detail::check_mtp(a));
    return check::not_null("out", a.out);
  }
  static std::size_t workspace_size(const Arguments& a) { return layout(a).bytes; }
  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<MtpInputs>(a, ws));
    const Layout l = layout(a);
    T* c = ws.at<T>(l.concat);
    float* inv_e = ws.at<float>(l.inv_e);
    float* inv_h = ws.at<float>(l.inv_h);
    DeviceStatus* status = status_of(ws);
    TL_RETURN_IF_ERROR(detail::mtp_concat<P, T>(a, c, inv_e, inv_h, {ws.ptr, kStatusBytes}, stream));
    // The GEMM gated on the id check ({alpha, beta} = {0, 1}: out as it was).
    float* scalars = ws.at<float>(l.scalars);
    TL_RETURN_IF_ERROR(launch<detail::GateKernel>({scalars, false, status}, dim3(1), stream));
    auto g = detail::mtp_gemm(a.handle, dtype_traits<T>::id, a.n, a.d, 2 * std::int64_t{a.d}, c, 2 * std::int64_t{a.d},
                              false, a.eh_proj, 2 * std::int64_t{a.d}, true, a.out, false, 0.0f);
    g.device_scalars = scalars;
    TL_RETURN_IF_ERROR(blas::Gemm::run(g, {ws.at<void>(l.gemm), ws.bytes - l.gemm}, stream));
    const std::int64_t n2d = a.n * 2 * std::int64_t{a.d};
    if (a.concat) {
      TL_RETURN_IF_ERROR(launch<detail::CopyKernel<T>>({c, n2d, a.concat, status},
                                                       grid_for(n2d, detail::CopyKernel<T>::kThreads, 4), stream));
    }
    const float* srcs[2] = {inv_e, inv_h};
    float* dsts[2] = {a.inv_rms_e, a.inv_rms_h};
    for (int k = 0; k < 2; ++k) {
      if (!dsts[k]) continue;
      TL_RETURN_IF_ERROR(launch<detail::CopyKernel<float>>({srcs[k], a.n, dsts[k], status},
                                                           grid_for(a.n, detail::CopyKernel<float>::kThreads, 4), stream));
    }
    return Status::ok();
  }
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    return blocks::Embedding<T>::read_status({.table = a.embed, .ids = a.ids, .n = a.n, .vocab = a.vocab, .d = a.d},
                                             {ws.ptr, kStatusBytes}, stream);
  }
};

template <blocks::NormPolicy P, StorageFloat T>
struct MtpInputsBackward {
  static constexpr const char* kName = "heads::MtpInputsBackward";
  struct Arguments {
    MtpInputsArguments<T> forward;     // as given to the forward, with concat and both inverse rms kept
    const T* grad_out = nullptr;       // [n, d]
    T* grad_hidden = nullptr;          // [n, d], optional: dL/dh^(k-1)
    float* grad_eh_proj = nullptr;     // [d, 2d] fp32, optional
    float* grad_enorm = nullptr;       // [d] fp32, optional
    float* grad_hnorm = nullptr;       // [d] fp32, optional (needs grad_hidden's pass)
    float* grad_embed = nullptr;       // [vocab, d] fp32, optional: the touched rows
    bool accumulate = false;           // add into the fp32 gradients (the embedding's: always added,
                                       // as the trunk's embedding gradient shares the table)
  };
  using Forward = MtpInputs<P, T>;
  using EmbedBwd = blocks::EmbeddingBackward<T>;
  struct Layout {
    std::size_t d_concat, e, d_e, embed, gemm, bytes;
  };
  static typename EmbedBwd::Arguments embed_args(const Arguments& b, const T* d_e) {
    const auto& a = b.forward;
    return {.ids = a.ids, .grad_out = d_e, .n = a.n, .vocab = a.vocab, .d = a.d, .grad_table = b.grad_embed};
  }
  static Layout layout(const Arguments& b) {
    const auto& a = b.forward;
    const std::int64_t n = std::max<std::int64_t>(a.n, 0), d = std::max(a.d, 0);
    const bool embed = b.grad_embed || b.grad_enorm;
    WorkspaceLayout w;
    Layout l{};
    w.add(kStatusBytes);
    l.d_concat = w.add_array<T>(n * 2 * d);
    l.e = w.add_array<T>(embed ? n * d : 0);
    l.d_e = w.add_array<T>(embed ? n * d : 0);
    l.embed = w.add(b.grad_embed && a.n > 0 && a.vocab > 0 ? EmbedBwd::workspace_size(embed_args(b, nullptr)) : 0);
    l.gemm = w.add(blas::Gemm::workspace_size({}));
    l.bytes = w.bytes();
    return l;
  }
  static Status can_implement(const Arguments& b) {
    const auto& a = b.forward;
    TL_RETURN_IF_ERROR(detail::check_mtp(a));
    TL_RETURN_IF_ERROR(check::not_null({{"grad_out", b.grad_out},
                                        {"forward.concat", a.concat},
                                        {"forward.inv_rms_e", a.inv_rms_e},
                                        {"forward.inv_rms_h", a.inv_rms_h}}));
    if (!b.grad_hidden && !b.grad_eh_proj && !b.grad_enorm && !b.grad_embed) {
      return Status::argument(StatusCode::null_pointer, "grad_hidden, grad_eh_proj, grad_enorm, grad_embed",
                              "at least one gradient", "none");
    }
    if (b.grad_hnorm && !b.grad_hidden) {
      return Status::argument(StatusCode::invalid_argument, "grad_hnorm", "grad_hidden beside it", "no grad_hidden");
    }
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments& b) { return layout(b).bytes; }
  static Status run(const Arguments& b, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<MtpInputsBackward>(b, ws));
    const auto& a = b.forward;
    const Layout l = layout(b);
    const std::int64_t d = a.d, ld = 2 * d;
    const DType dt = dtype_traits<T>::id;
    const Workspace gemm_ws{ws.at<void>(l.gemm), ws.bytes - l.gemm};
    // d eh_proj (+)= grad_outᵀ · c;  dc = grad_out · eh_proj.
    if (b.grad_eh_proj) {
      TL_RETURN_IF_ERROR(blas::Gemm::run(detail::mtp_gemm(a.handle, dt, d, ld, a.n, b.grad_out, d, true, a.concat, ld,
                                                          false, b.grad_eh_proj, true, b.accumulate ? 1.0f : 0.0f),
                                         gemm_ws, stream));
    }
    if (!b.grad_hidden && !b.grad_enorm && !b.grad_embed) return Status::ok();
    T* dc = ws.at<T>(l.d_concat);
    TL_RETURN_IF_ERROR(blas::Gemm::run(detail::mtp_gemm(a.handle, dt, a.n, ld, d, b.grad_out, d, false, a.eh_proj, ld,
                                                        false, dc, false, 0.0f),
                                       gemm_ws, stream));
    if (b.grad_hidden) {
      TL_RETURN_IF_ERROR(blocks::RmsNormBackward<P, T>::run({.h = a.hidden,
                                                             .inv_rms = a.inv_rms_h,
                                                             .weight = a.hnorm,
                                                             .grad_out = dc + d,
                                                             .rows = a.n,
                                                             .d = a.d,
                                                             .grad_out_stride = ld,
                                                             .grad_h = b.grad_hidden,
                                                             .grad_weight = b.grad_hnorm,
                                                             .accumulate_weight = b.accumulate},
                                                            {}, stream));
    }
    if (!b.grad_enorm && !b.grad_embed) return Status::ok();
    // The embedding side: e again (masked), through enorm's backward, the
    // mask's (zero rows get no gradient), into the table's touched rows.
    T* e = ws.at<T>(l.e);
    T* d_e = ws.at<T>(l.d_e);
    const Workspace status_ws{ws.ptr, kStatusBytes};
    TL_RETURN_IF_ERROR(blocks::Embedding<T>::run(
        {.table = a.embed, .ids = a.ids, .n = a.n, .vocab = a.vocab, .d = a.d, .out = e}, status_ws, stream));
    TL_RETURN_IF_ERROR(launch<detail::ZeroFirstRowsKernel<T>>(
        {a.positions, a.n, a.d, e, d, status_of(status_ws)}, grid_for(a.n, detail::ZeroFirstRowsKernel<T>::kThreads / 32, 8),
        stream));
    TL_RETURN_IF_ERROR(blocks::RmsNormBackward<P, T>::run({.h = e,
                                                           .inv_rms = a.inv_rms_e,
                                                           .weight = a.enorm,
                                                           .grad_out = dc,
                                                           .rows = a.n,
                                                           .d = a.d,
                                                           .grad_out_stride = ld,
                                                           .grad_h = d_e,
                                                           .grad_weight = b.grad_enorm,
                                                           .accumulate_weight = b.accumulate},
                                                          {}, stream));
    if (!b.grad_embed) return Status::ok();
    TL_RETURN_IF_ERROR(launch<detail::ZeroFirstRowsKernel<T>>(
        {a.positions, a.n, a.d, d_e, d, status_of(status_ws)},
        grid_for(a.n, detail::ZeroFirstRowsKernel<T>::kThreads / 32, 8), stream));
    const auto eb = embed_args(b, d_e);
    return EmbedBwd::run(eb, {ws.at<void>(l.embed), EmbedBwd::workspace_size(eb)}, stream);
  }
  static Status read_status(const Arguments& b, Workspace ws, cudaStream_t stream = nullptr) {
    const auto& a = b.forward;
    return blocks::Embedding<T>::read_status({.table = a.embed, .ids = a.ids, .n = a.n, .vocab = a.vocab, .d = a.d},
                                             {ws.ptr, kStatusBytes}, stream);
  }
};

}  // namespace tokenless::heads
