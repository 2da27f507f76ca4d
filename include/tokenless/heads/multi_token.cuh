#pragma once
// Meta's multi-token prediction (Gloeckle et al., 2024): n heads, each one
// decoder block on the shared trunk's output stream z, then the shared final
// norm and unembedding; head i (0-based) predicts the token i + 1 ahead
// (head 0 is the ordinary next-token head: the trunk's last block in Meta's
// layout). The loss is normalised over the heads:
//
//   L = (1/n) Σ_i CE(lm_head(norm(block_i(z))), x_(t+i+1))
//
// each CE the linear cross-entropy's (its options; mean or sum over the
// tokens a head has a target for).
//
//   MultiTokenHeads<T, ...>   the training step's head side, in the
//                             memory-efficient order: for each head in turn,
//                             its block's training forward, the final norm,
//                             the fused cross-entropy's forward and backward
//                             (no [N, V] logits), the norm's and the block's
//                             backward into dL/dz, added in fp32; the next
//                             head reuses the same buffers. The trunk's
//                             backward is the caller's, from grad_z.
//
//   MtpModules<T, ...>        DeepSeek-V3's D sequential modules
//                             (heads/mtp.cuh): depth k's MtpInputs on the
//                             tokens k on and h^(k-1), its block, its norm,
//                             the shared head; L = (1/D) Σ_k CE_k (DeepSeek's
//                             λ is the caller's scale); every depth forward,
//                             then the backward from depth D down, each
//                             depth's dL/dh^(k-1) into the one below and
//                             finally into the trunk's hidden states.
//
// MultiTokenHeads' peak memory beyond the inputs and outputs (the
// workspace) does not grow with n: one head's saved activations (blocks::DecoderSaved: N·(4d + qkv +
// q + 3·ffn)·sizeof(T) + N·(2 + heads)·4 bytes dense), five [N, d] tensors
// in T (the block's delta, the head's stream, its norm, their gradients) and
// the fp32 dL/dz, the targets (4N), the cross-entropy's chunk workspace
// (linear_cross_entropy.cuh) and the block's backward workspace.
//
// Device-side checks: the tokens (each head's targets come from them,
// shifted within each sequence) in [0, vocab): the trunk's embedding refuses
// a bad id first; here it is named by read_status() and its rows are
// ignored. The blocks' own checks are theirs.
#include <tokenless/blocks/decoder.cuh>
#include <tokenless/blocks/norm.cuh>
#include <tokenless/core/cublaslt.hpp>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/kernel.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/workspace.hpp>
#include <tokenless/heads/kernel.cuh>
#include <tokenless/heads/linear_cross_entropy.cuh>
#include <tokenless/heads/mtp.cuh>

#include <algorithm>
#include <cstdint>
#include <cstdio>

namespace tokenless::heads {

namespace detail {

// A block's training-forward state (blocks::DecoderSaved, first = true: no
// h0) as offsets in a workspace layout; the MoE's state is placed apart.
struct SavedAt {
  std::size_t inv1, h1, qkv, o, lse, mid, inv2, h2, gu, act, moe;
};
template <class T>
SavedAt add_saved(WorkspaceLayout& w, const blocks::DecoderShape& s, std::int64_t n) {
  const std::int64_t d = std::max(s.hidden, 0);
  const bool moe = s.experts > 0;
  SavedAt p{};
  p.inv1 = w.add_array<float>(n);
  p.h1 = w.add_array<T>(n * d);
  p.qkv = w.add_array<T>(n * std::max<std::int64_t>(s.qkv_dim(), 0));
  p.o = w.add_array<T>(n * std::max<std::int64_t>(s.q_dim(), 0));
  p.lse = w.add_array<float>(n * std::max(s.heads, 0));
  p.mid = w.add_array<T>(n * d);
  p.inv2 = w.add_array<float>(n);
  p.h2 = w.add_array<T>(n * d);
  p.gu = w.add_array<T>(moe ? 0 : n * 2 * std::int64_t{std::max(s.ffn, 0)});
  p.act = w.add_array<T>(moe ? 0 : n * std::max(s.ffn, 0));
  return p;
}
template <class T>
blocks::DecoderSaved<T> saved_at(Workspace ws, const SavedAt& p, bool moe) {
  blocks::DecoderSaved<T> s;
  s.inv_rms1 = ws.at<float>(p.inv1);
  s.h1 = ws.at<T>(p.h1);
  s.qkv = ws.at<T>(p.qkv);
  s.o = ws.at<T>(p.o);
  s.lse = ws.at<float>(p.lse);
  s.mid = ws.at<T>(p.mid);
  s.inv_rms2 = ws.at<float>(p.inv2);
  s.h2 = ws.at<T>(p.h2);
  if (moe) {
    s.moe = ws.at<void>(p.moe);
  } else {
    s.gu = ws.at<T>(p.gu);
    s.act = ws.at<T>(p.act);
  }
  return s;
}

// The token check of both operations, named with the token that failed it.
inline Status read_tokens_status(const char* op, const std::int32_t* tokens, std::int64_t vocab,
                                 const DeviceStatus* status, cudaStream_t stream) {
  DeviceFailure f;
  TL_RETURN_IF_ERROR(read_device_status(status, f, stream));
  if (f.check == 0) return Status::ok();
  if (f.check != kCheckTokens) return Status::error(StatusCode::internal, "%s: unknown device check %d", op, f.check);
  std::int32_t id = 0;
  TL_CUDA_TRY(cudaMemcpyAsync(&id, tokens + f.index, sizeof id, cudaMemcpyDeviceToHost, stream));
  TL_CUDA_TRY(cudaStreamSynchronize(stream));
  char expected[96];
  std::snprintf(expected, sizeof expected, "tokens in [0, %lld) (their rows were ignored)", static_cast<long long>(vocab));
  return device_failure(op, StatusCode::invalid_argument, "tokens", expected, "tokens[%lld] = %d",
                        static_cast<long long>(f.index), id);
}

}  // namespace detail

// Up to 8 heads (Meta trained 2 to 8).
inline constexpr int kMaxHeads = 8;

template <mma::TensorCoreType T, blocks::NormPolicy N = blocks::NormThenCast, blocks::RopeLayout L = blocks::RopeHalf,
          blocks::ActivationPolicy A = blocks::Silu, class HD = attention::SupportedHeadDims>
struct MultiTokenHeads {
  static constexpr const char* kName = "heads::MultiTokenHeads";
  using Layer = blocks::DecoderLayer<T, N, L, A, HD>;
  using LayerBwd = blocks::DecoderLayerBackward<T, N, L, A, HD>;
  using Norm = blocks::RmsNorm<N, T>;
  using NormBwd = blocks::RmsNormBackward<N, T>;
  using Ce = LinearCrossEntropy<T>;
  using CeBwd = LinearCrossEntropyBackward<T>;

  struct Arguments {
    const blas::LtHandle* handle = nullptr;
    blocks::DecoderShape shape;
    int n_heads = 0;
    blocks::DecoderWeights<T> heads[kMaxHeads];  // head i's block
    const float* inv_freq = nullptr;             // [rot_dim / 2], device
    VarlenBatch batch;                           // the trunk's tokens, per sequence
    const T* z = nullptr;                        // [batch.total, hidden]: the trunk's output stream
    const std::int32_t* tokens = nullptr;        // [batch.total]: the sequence's ids (targets: shifted)
    const T* norm = nullptr;                     // [hidden]: the shared final norm
    const T* lm_head = nullptr;                  // [vocab, hidden]: the shared unembedding
    std::int64_t vocab = 0;
    CrossEntropyOptions options{};               // mean or sum (each head's CE)
    float* loss = nullptr;                       // [1]: (1/n) Σ_i CE_i
    float* head_loss = nullptr;                  // [n_heads], optional: each CE_i
    T* grad_z = nullptr;                         // [batch.total, hidden], optional: dL/dz
    blocks::DecoderGrads head_grads[kMaxHeads]{};  // fp32, each optional
    float* grad_norm = nullptr;                  // [hidden] fp32, optional (summed over the heads)
    float* grad_lm_head = nullptr;               // [vocab, hidden] fp32, optional (summed over the heads)
    bool accumulate = false;                     // add into the fp32 weight gradients
  };

  static std::int64_t tokens(const Arguments& a) { return std::max<std::int64_t>(a.batch.total, 0); }
  static bool backward(const Arguments& a) {
    if (a.grad_z || a.grad_norm || a.grad_lm_head) return true;
    for (int i = 0; i < a.n_heads && i < kMaxHeads; ++i) {
      const auto& g = a.head_grads[i];
      if (g.attn_norm || g.wqkv || g.wo || g.mlp_norm || g.w_gate_up || g.w_down || g.router) return true;
    }
    return false;
  }

  struct Layout {
    std::size_t status, labels, scalars, head_loss, delta, stream, y, inv_f, ce_lse, dy, d_stream, d_z, acc, sub, bytes;
    detail::SavedAt saved;
  };

  // Head i's block over z (its training forward; buffers at `l` in `ws`).
  static typename Layer::Arguments layer_args(const Arguments& a, int i, const Layout& l, Workspace ws) {
    typename Layer::Arguments f;
    f.handle = a.handle;
    f.shape = a.shape;
    f.w = a.heads[i];
    f.inv_freq = a.inv_freq;
    f.batch = a.batch;
    f.x = const_cast<T*>(a.z);  // read only: a training forward reads x without updating it
    f.delta = ws.at<T>(l.delta);
    f.first = true;             // z is a whole stream: nothing to add
    f.attend = blocks::Attend::prefill;
    f.saved = detail::saved_at<T>(ws, l.saved, a.shape.experts > 0);
    return f;
  }
  static typename Ce::Arguments ce_args(const Arguments& a, const Layout& l, Workspace ws, int i) {
    typename Ce::Arguments c;
    c.handle = a.handle;
    c.h = ws.at<T>(l.y);
    c.weight = a.lm_head;
    c.labels = ws.at<std::int32_t>(l.labels);
    c.n = tokens(a);
    c.vocab = a.vocab;
    c.d = a.shape.hidden;
    c.options = a.options;
    c.loss = ws.at<float>(l.head_loss) + i;
    c.lse = ws.at<float>(l.ce_lse);
    return c;
  }
  static typename CeBwd::Arguments ce_bwd_args(const Arguments& a, const Layout& l, Workspace ws, int i) {
    typename CeBwd::Arguments b;
    b.forward = ce_args(a, l, ws, i);
    b.grad_loss = ws.at<float>(l.scalars);  // 1/n
    b.grad_h = ws.at<T>(l.dy);
    b.grad_weight = a.grad_lm_head;
    b.accumulate = a.accumulate || i > 0;
    return b;
  }
  static typename LayerBwd::Arguments layer_bwd_args(const Arguments& a, int i, const Layout& l, Workspace ws) {
    typename LayerBwd::Arguments b;
    b.forward = layer_args(a, i, l, ws);
    b.grad = ws.at<T>(l.d_stream);
    b.grad_in = ws.at<T>(l.d_z);
    b.grads = a.head_grads[i];
    b.accumulate = a.accumulate;
    return b;
  }

  static Layout layout(const Arguments& a) {
    const std::int64_t n = tokens(a), d = std::max(a.shape.hidden, 0);
    const blocks::DecoderShape& s = a.shape;
    const bool bwd = backward(a);
    WorkspaceLayout w;
    Layout l{};
    l.status = w.add(kStatusBytes);
    l.labels = w.add_array<std::int32_t>(n);
    l.scalars = w.add_array<float>(4);
    l.head_loss = w.add_array<float>(kMaxHeads);
    l.saved = detail::add_saved<T>(w, s, n);
    l.delta = w.add_array<T>(n * d);
    l.stream = w.add_array<T>(n * d);
    l.y = w.add_array<T>(n * d);
    l.inv_f = w.add_array<float>(n);
    l.ce_lse = w.add_array<float>(n);
    l.dy = w.add_array<T>(bwd ? n * d : 0);
    l.d_stream = w.add_array<T>(bwd ? n * d : 0);
    l.d_z = w.add_array<T>(bwd ? n * d : 0);
    l.acc = w.add_array<float>(a.grad_z ? n * d : 0);
    // The MoE's saved state after the rest (its size needs the arguments at an address).
    const Workspace fake{reinterpret_cast<void*>(std::uintptr_t{kWorkspaceAlignment}), ~std::size_t{0} >> 4};
    std::size_t moe_bytes = 0, sub = 0;
    if (a.n_heads > 0 && n > 0 && d > 0) {
      const auto f = layer_args(a, 0, l, fake);
      moe_bytes = Layer::moe_saved_bytes(f);
      sub = std::max(Layer::workspace_size(f), Ce::workspace_size(ce_args(a, l, fake, 0)));
      if (bwd) {
        sub = std::max(sub, CeBwd::workspace_size(ce_bwd_args(a, l, fake, 0)));
        sub = std::max(sub, LayerBwd::workspace_size(layer_bwd_args(a, 0, l, fake)));
      }
    }
    l.saved.moe = w.add(moe_bytes);
    l.sub = w.add(sub);
    l.bytes = w.bytes();
    return l;
  }

  static Status can_implement(const Arguments& a) {
    if (a.n_heads < 1 || a.n_heads > kMaxHeads) {
      return Status::argument(a.n_heads < 1 ? StatusCode::invalid_argument : StatusCode::unsupported, "n_heads",
                              "1 to 8 heads", "%d", a.n_heads);
    }
    TL_RETURN_IF_ERROR(check::batch("batch", a.batch));
    TL_RETURN_IF_ERROR(check::positive("vocab", a.vocab));
    TL_RETURN_IF_ERROR(check::not_null({{"z", a.z}, {"tokens", a.tokens}, {"norm", a.norm}, {"lm_head", a.lm_head},
                                        {"loss", a.loss}}));
    if (a.options.reduction == Reduction::none) {
      return Status::argument(StatusCode::invalid_argument, "options.reduction", "mean or sum (a loss a head)", "none");
    }
    if (a.grad_z) TL_RETURN_IF_ERROR(check::aligned("grad_z", a.grad_z, 16));
    const Layout l = layout(a);
    const Workspace fake{reinterpret_cast<void*>(std::uintptr_t{kWorkspaceAlignment}), l.bytes};
    for (int i = 0; i < a.n_heads; ++i) {
      if (!a.heads[i].wqkv) {
        char what[32];
        std::snprintf(what, sizeof what, "heads[%d].wqkv", i);
        return Status::argument(StatusCode::null_pointer, what, "every head's block weights", "none");
      }
      TL_RETURN_IF_ERROR(Layer::can_implement(layer_args(a, i, l, fake)));
    }
    TL_RETURN_IF_ERROR(Ce::can_implement(ce_args(a, l, fake, 0)));
    if (backward(a)) TL_RETURN_IF_ERROR(CeBwd::can_implement(ce_bwd_args(a, l, fake, 0)));
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments& a) { return layout(a).bytes; }

  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<MultiTokenHeads>(a, ws));
    const Layout l = layout(a);
    const std::int64_t n = tokens(a);
    const int d = a.shape.hidden;
    DeviceStatus* status = ws.at<DeviceStatus>(l.status);
    const Workspace sub{ws.at<void>(l.sub), ws.bytes - l.sub};
    const bool bwd = backward(a);
    TL_RETURN_IF_ERROR(reset_device_status(status, stream));
    const float inv_n = 1.0f / static_cast<float>(a.n_heads);
    TL_CUDA_TRY(cudaMemcpyAsync(ws.at<float>(l.scalars), &inv_n, sizeof inv_n, cudaMemcpyHostToDevice, stream));
    for (int i = 0; i < a.n_heads; ++i) {
      // Head i's targets: the tokens i + 1 on.
      TL_RETURN_IF_ERROR(launch<detail::ShiftLabelsKernel>(
          {a.tokens, a.batch, i + 1, a.vocab, a.options.ignore_index, ws.at<std::int32_t>(l.labels), status},
          grid_for(n, detail::ShiftLabelsKernel::kThreads, 4), stream));
      const auto f = layer_args(a, i, l, ws);
      TL_RETURN_IF_ERROR(Layer::run(f, {sub.ptr, Layer::workspace_size(f)}, stream));
      // The head's stream (mid + delta) and its final norm.
      TL_RETURN_IF_ERROR(Norm::run({.x = ws.at<T>(l.delta),
                                    .residual = ws.at<T>(l.saved.mid),
                                    .weight = a.norm,
                                    .rows = n,
                                    .d = d,
                                    .eps = a.shape.eps,
                                    .out = ws.at<T>(l.y),
                                    .residual_out = ws.at<T>(l.stream),
                                    .inv_rms = ws.at<float>(l.inv_f)},
                                   {}, stream));
      const auto c = ce_args(a, l, ws, i);
      TL_RETURN_IF_ERROR(Ce::run(c, {sub.ptr, Ce::workspace_size(c)}, stream));
      if (!bwd) continue;
      const auto cb = ce_bwd_args(a, l, ws, i);
      TL_RETURN_IF_ERROR(CeBwd::run(cb, {sub.ptr, CeBwd::workspace_size(cb)}, stream));
      TL_RETURN_IF_ERROR(NormBwd::run({.h = ws.at<T>(l.stream),
                                       .inv_rms = ws.at<float>(l.inv_f),
                                       .weight = a.norm,
                                       .grad_out = ws.at<T>(l.dy),
                                       .rows = n,
                                       .d = d,
                                       .grad_h = ws.at<T>(l.d_stream),
                                       .grad_weight = a.grad_norm,
                                       .accumulate_weight = a.accumulate || i > 0},
                                      {}, stream));
      const auto lb = layer_bwd_args(a, i, l, ws);
      TL_RETURN_IF_ERROR(LayerBwd::run(lb, {sub.ptr, LayerBwd::workspace_size(lb)}, stream));
      if (a.grad_z) {
        using K = detail::AccumulateKernel<T>;
        TL_RETURN_IF_ERROR(launch<K>({ws.at<T>(l.d_z), n * d, i == 0, ws.at<float>(l.acc)},
                                     grid_for(n * d, K::kThreads, 4), stream));
      }
    }
    TL_RETURN_IF_ERROR(launch<detail::ScaledSumKernel>({ws.at<float>(l.head_loss), a.n_heads, inv_n, a.loss}, dim3(1),
                                                       stream));
    if (a.head_loss) {
      TL_CUDA_TRY(cudaMemcpyAsync(a.head_loss, ws.at<float>(l.head_loss), a.n_heads * sizeof(float),
                                  cudaMemcpyDeviceToDevice, stream));
    }
    if (!a.grad_z) return Status::ok();
    using C = detail::CastRowsKernel<T>;
    return launch<C>({ws.at<float>(l.acc), n, d, a.grad_z, d, nullptr}, grid_for(n, C::kThreads / 32, 8), stream);
  }

  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    return detail::read_tokens_status(kName, a.tokens, a.vocab, ws.at<DeviceStatus>(layout(a).status), stream);
  }
};

// DeepSeek-V3's modules as a training operation (the header's second part).
inline constexpr int kMaxModules = 4;

template <class T>
struct MtpModuleWeights {
  const T* enorm = nullptr;        // [hidden]
  const T* hnorm = nullptr;        // [hidden]
  const T* eh_proj = nullptr;      // [hidden, 2 hidden]
  const T* shared_norm = nullptr;  // [hidden]: shared_head.norm
  blocks::DecoderWeights<T> block;
};
struct MtpModuleGrads {  // fp32, each optional
  float* enorm = nullptr;
  float* hnorm = nullptr;
  float* eh_proj = nullptr;
  float* shared_norm = nullptr;
  blocks::DecoderGrads block;
};

template <mma::TensorCoreType T, blocks::NormPolicy N = blocks::NormThenCast, blocks::RopeLayout L = blocks::RopeHalf,
          blocks::ActivationPolicy A = blocks::Silu, class HD = attention::SupportedHeadDims>
struct MtpModules {
  static constexpr const char* kName = "heads::MtpModules";
  using Layer = blocks::DecoderLayer<T, N, L, A, HD>;
  using LayerBwd = blocks::DecoderLayerBackward<T, N, L, A, HD>;
  using Norm = blocks::RmsNorm<N, T>;
  using NormBwd = blocks::RmsNormBackward<N, T>;
  using Ce = LinearCrossEntropy<T>;
  using CeBwd = LinearCrossEntropyBackward<T>;
  using In = MtpInputs<N, T>;
  using InBwd = MtpInputsBackward<N, T>;

  struct Arguments {
    const blas::LtHandle* handle = nullptr;
    blocks::DecoderShape shape;
    int depth = 0;                            // D modules
    MtpModuleWeights<T> modules[kMaxModules];
    const float* inv_freq = nullptr;
    VarlenBatch batch;
    const std::int32_t* tokens = nullptr;     // [batch.total]
    const T* hidden = nullptr;                // [batch.total, hidden]: h^0, the main model's (vLLM: after its final norm)
    const T* embed = nullptr;                 // [vocab, hidden]: the shared embedding
    const T* lm_head = nullptr;               // [vocab, hidden]: the shared head
    std::int64_t vocab = 0;
    CrossEntropyOptions options{};            // mean or sum
    float* loss = nullptr;                    // [1]: (1/D) Σ_k CE_k
    float* module_loss = nullptr;             // [depth], optional
    T* grad_hidden = nullptr;                 // [batch.total, hidden], optional: dL/dh^0
    MtpModuleGrads grads[kMaxModules]{};
    float* grad_embed = nullptr;              // [vocab, hidden] fp32, optional: added to (the trunk's shares it)
    float* grad_lm_head = nullptr;            // [vocab, hidden] fp32, optional
    bool accumulate = false;                  // add into the fp32 weight gradients
  };

  static std::int64_t tokens(const Arguments& a) { return std::max<std::int64_t>(a.batch.total, 0); }
  static bool backward(const Arguments& a) {
    if (a.grad_hidden || a.grad_embed || a.grad_lm_head) return true;
    for (int k = 0; k < a.depth && k < kMaxModules; ++k) {
      const auto& g = a.grads[k];
      const auto& b = g.block;
      if (g.enorm || g.hnorm || g.eh_proj || g.shared_norm || b.attn_norm || b.wqkv || b.wo || b.mlp_norm ||
          b.w_gate_up || b.w_down || b.router) {
        return true;
      }
    }
    return false;
  }

  // Per depth: what its backward reads (kept through the forward of the deeper ones).
  struct Depth {
    std::size_t ids, pos, labels, x, concat, inv_e, inv_h, delta, stream, y, inv_f, ce_lse;
    detail::SavedAt saved;
  };
  struct Layout {
    std::size_t status, scalars, module_loss, dy, d_stream, d_x, d_h[2], sub, bytes;
    Depth dep[kMaxModules];
  };

  static typename In::Arguments in_args(const Arguments& a, int k, const Layout& l, Workspace ws) {
    const Depth& p = l.dep[k];
    const auto& m = a.modules[k];
    typename In::Arguments in;
    in.handle = a.handle;
    in.embed = a.embed;
    in.ids = ws.at<std::int32_t>(p.ids);
    in.positions = ws.at<std::int32_t>(p.pos);
    in.hidden = k == 0 ? a.hidden : ws.at<T>(l.dep[k - 1].stream);
    in.enorm = m.enorm;
    in.hnorm = m.hnorm;
    in.eh_proj = m.eh_proj;
    in.eps = a.shape.eps;
    in.n = tokens(a);
    in.vocab = a.vocab;
    in.d = a.shape.hidden;
    in.out = ws.at<T>(p.x);
    in.concat = ws.at<T>(p.concat);
    in.inv_rms_e = ws.at<float>(p.inv_e);
    in.inv_rms_h = ws.at<float>(p.inv_h);
    return in;
  }
  static typename Layer::Arguments layer_args(const Arguments& a, int k, const Layout& l, Workspace ws) {
    const Depth& p = l.dep[k];
    typename Layer::Arguments f;
    f.handle = a.handle;
    f.shape = a.shape;
    f.w = a.modules[k].block;
    f.inv_freq = a.inv_freq;
    f.batch = a.batch;
    f.x = ws.at<T>(p.x);
    f.delta = ws.at<T>(p.delta);
    f.first = true;
    f.attend = blocks::Attend::prefill;
    f.saved = detail::saved_at<T>(ws, p.saved, a.shape.experts > 0);
    return f;
  }
  static typename Ce::Arguments ce_args(const Arguments& a, int k, const Layout& l, Workspace ws) {
    const Depth& p = l.dep[k];
    typename Ce::Arguments c;
    c.handle = a.handle;
    c.h = ws.at<T>(p.y);
    c.weight = a.lm_head;
    c.labels = ws.at<std::int32_t>(p.labels);
    c.n = tokens(a);
    c.vocab = a.vocab;
    c.d = a.shape.hidden;
    c.options = a.options;
    c.loss = ws.at<float>(l.module_loss) + k;
    c.lse = ws.at<float>(p.ce_lse);
    return c;
  }
  static typename CeBwd::Arguments ce_bwd_args(const Arguments& a, int k, const Layout& l, Workspace ws) {
    typename CeBwd::Arguments b;
    b.forward = ce_args(a, k, l, ws);
    b.grad_loss = ws.at<float>(l.scalars);  // 1/D
    b.grad_h = ws.at<T>(l.dy);
    b.grad_weight = a.grad_lm_head;
    b.accumulate = a.accumulate || k != a.depth - 1;  // the deepest first
    return b;
  }
  static typename LayerBwd::Arguments layer_bwd_args(const Arguments& a, int k, const Layout& l, Workspace ws) {
    typename LayerBwd::Arguments b;
    b.forward = layer_args(a, k, l, ws);
    b.grad = ws.at<T>(l.d_stream);
    b.grad_in = ws.at<T>(l.d_x);
    b.grads = a.grads[k].block;
    b.accumulate = a.accumulate;
    return b;
  }
  // dL/dh^(k-1): the trunk's (grad_hidden) for the first module, else a
  // buffer the module below reads (two, alternating).
  static T* grad_below(const Arguments& a, int k, const Layout& l, Workspace ws) {
    return k == 0 && a.grad_hidden ? a.grad_hidden : ws.at<T>(l.d_h[k & 1]);
  }
  static typename InBwd::Arguments in_bwd_args(const Arguments& a, int k, const Layout& l, Workspace ws) {
    typename InBwd::Arguments b;
    b.forward = in_args(a, k, l, ws);
    b.grad_out = ws.at<T>(l.d_x);
    // The first module's dL/dh^0 only when the trunk or its hnorm wants it.
    b.grad_hidden = k == 0 && !a.grad_hidden && !a.grads[0].hnorm ? nullptr : grad_below(a, k, l, ws);
    b.grad_eh_proj = a.grads[k].eh_proj;
    b.grad_enorm = a.grads[k].enorm;
    b.grad_hnorm = a.grads[k].hnorm;
    b.grad_embed = a.grad_embed;
    b.accumulate = a.accumulate;
    return b;
  }

  static Layout layout(const Arguments& a) {
    const std::int64_t n = tokens(a), d = std::max(a.shape.hidden, 0);
    const blocks::DecoderShape& s = a.shape;
    const int D = std::clamp(a.depth, 0, kMaxModules);
    const bool bwd = backward(a);
    WorkspaceLayout w;
    Layout l{};
    l.status = w.add(kStatusBytes);
    l.scalars = w.add_array<float>(4);
    l.module_loss = w.add_array<float>(kMaxModules);
    for (int k = 0; k < D; ++k) {
      Depth& p = l.dep[k];
      p.ids = w.add_array<std::int32_t>(n);
      p.pos = w.add_array<std::int32_t>(n);
      p.labels = w.add_array<std::int32_t>(n);
      p.x = w.add_array<T>(n * d);
      p.concat = w.add_array<T>(n * 2 * d);
      p.inv_e = w.add_array<float>(n);
      p.inv_h = w.add_array<float>(n);
      p.saved = detail::add_saved<T>(w, s, n);
      p.delta = w.add_array<T>(n * d);
      p.stream = w.add_array<T>(n * d);
      p.y = w.add_array<T>(n * d);
      p.inv_f = w.add_array<float>(n);
      p.ce_lse = w.add_array<float>(n);
    }
    l.dy = w.add_array<T>(bwd ? n * d : 0);
    l.d_stream = w.add_array<T>(bwd ? n * d : 0);
    l.d_x = w.add_array<T>(bwd ? n * d : 0);
    l.d_h[0] = w.add_array<T>(bwd ? n * d : 0);
    l.d_h[1] = w.add_array<T>(bwd ? n * d : 0);
    const Workspace fake{reinterpret_cast<void*>(std::uintptr_t{kWorkspaceAlignment}), ~std::size_t{0} >> 4};
    std::size_t sub = 0;
    if (D > 0 && n > 0 && d > 0) {
      const auto moe_bytes = Layer::moe_saved_bytes(layer_args(a, 0, l, fake));
      for (int k = 0; k < D; ++k) l.dep[k].saved.moe = w.add(moe_bytes);
      sub = std::max({Layer::workspace_size(layer_args(a, 0, l, fake)), Ce::workspace_size(ce_args(a, 0, l, fake)),
                      In::workspace_size(in_args(a, 0, l, fake))});
      if (bwd) {
        sub = std::max({sub, CeBwd::workspace_size(ce_bwd_args(a, 0, l, fake)),
                        LayerBwd::workspace_size(layer_bwd_args(a, 0, l, fake)),
                        InBwd::workspace_size(in_bwd_args(a, 0, l, fake))});
      }
    }
    l.sub = w.add(sub);
    l.bytes = w.bytes();
    return l;
  }

  static Status can_implement(const Arguments& a) {
    if (a.depth < 1 || a.depth > kMaxModules) {
      return Status::argument(a.depth < 1 ? StatusCode::invalid_argument : StatusCode::unsupported, "depth",
                              "1 to 4 modules", "%d", a.depth);
    }
    TL_RETURN_IF_ERROR(check::batch("batch", a.batch));
    TL_RETURN_IF_ERROR(check::positive("vocab", a.vocab));
    TL_RETURN_IF_ERROR(check::not_null({{"tokens", a.tokens}, {"hidden", a.hidden}, {"embed", a.embed},
                                        {"lm_head", a.lm_head}, {"loss", a.loss}}));
    if (a.options.reduction == Reduction::none) {
      return Status::argument(StatusCode::invalid_argument, "options.reduction", "mean or sum (a loss a module)", "none");
    }
    if (a.grad_hidden) TL_RETURN_IF_ERROR(check::aligned("grad_hidden", a.grad_hidden, 16));
    const Layout l = layout(a);
    const Workspace fake{reinterpret_cast<void*>(std::uintptr_t{kWorkspaceAlignment}), l.bytes};
    for (int k = 0; k < a.depth; ++k) {
      const auto& m = a.modules[k];
      if (!m.shared_norm || !m.block.wqkv) {
        char what[48];
        std::snprintf(what, sizeof what, "modules[%d].%s", k, m.shared_norm ? "block.wqkv" : "shared_norm");
        return Status::argument(StatusCode::null_pointer, what, "every module's weights", "none");
      }
      TL_RETURN_IF_ERROR(In::can_implement(in_args(a, k, l, fake)));
      TL_RETURN_IF_ERROR(Layer::can_implement(layer_args(a, k, l, fake)));
    }
    TL_RETURN_IF_ERROR(Ce::can_implement(ce_args(a, 0, l, fake)));
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments& a) { return layout(a).bytes; }

  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<MtpModules>(a, ws));
    const Layout l = layout(a);
    const std::int64_t n = tokens(a);
    const int d = a.shape.hidden, D = a.depth;
    DeviceStatus* status = ws.at<DeviceStatus>(l.status);
    const Workspace sub{ws.at<void>(l.sub), ws.bytes - l.sub};
    TL_RETURN_IF_ERROR(reset_device_status(status, stream));
    const float inv_d = 1.0f / static_cast<float>(D);
    TL_CUDA_TRY(cudaMemcpyAsync(ws.at<float>(l.scalars), &inv_d, sizeof inv_d, cudaMemcpyHostToDevice, stream));
    // Every depth forward (the deeper ones read the shallower streams).
    for (int k = 0; k < D; ++k) {
      const Depth& p = l.dep[k];
      TL_RETURN_IF_ERROR(launch<detail::ShiftModuleKernel>(
          {a.tokens, a.batch, k + 1, a.vocab, a.options.ignore_index, ws.at<std::int32_t>(p.ids),
           ws.at<std::int32_t>(p.pos), ws.at<std::int32_t>(p.labels), status},
          grid_for(n, detail::ShiftModuleKernel::kThreads, 4), stream));
      const auto in = in_args(a, k, l, ws);
      TL_RETURN_IF_ERROR(In::run(in, {sub.ptr, In::workspace_size(in)}, stream));
      const auto f = layer_args(a, k, l, ws);
      TL_RETURN_IF_ERROR(Layer::run(f, {sub.ptr, Layer::workspace_size(f)}, stream));
      TL_RETURN_IF_ERROR(Norm::run({.x = ws.at<T>(p.delta),
                                    .residual = ws.at<T>(p.saved.mid),
                                    .weight = a.modules[k].shared_norm,
                                    .rows = n,
                                    .d = d,
                                    .eps = a.shape.eps,
                                    .out = ws.at<T>(p.y),
                                    .residual_out = ws.at<T>(p.stream),
                                    .inv_rms = ws.at<float>(p.inv_f)},
                                   {}, stream));
      const auto c = ce_args(a, k, l, ws);
      TL_RETURN_IF_ERROR(Ce::run(c, {sub.ptr, Ce::workspace_size(c)}, stream));
    }
    TL_RETURN_IF_ERROR(launch<detail::ScaledSumKernel>({ws.at<float>(l.module_loss), D, inv_d, a.loss}, dim3(1), stream));
    if (a.module_loss) {
      TL_CUDA_TRY(cudaMemcpyAsync(a.module_loss, ws.at<float>(l.module_loss), D * sizeof(float), cudaMemcpyDeviceToDevice,
                                  stream));
    }
    if (!backward(a)) return Status::ok();
    // The backward, deepest first: depth k's dL/dh^k comes from depth k + 1.
    for (int k = D - 1; k >= 0; --k) {
      const Depth& p = l.dep[k];
      const auto cb = ce_bwd_args(a, k, l, ws);
      TL_RETURN_IF_ERROR(CeBwd::run(cb, {sub.ptr, CeBwd::workspace_size(cb)}, stream));
      TL_RETURN_IF_ERROR(NormBwd::run({.h = ws.at<T>(p.stream),
                                       .inv_rms = ws.at<float>(p.inv_f),
                                       .weight = a.modules[k].shared_norm,
                                       .grad_out = ws.at<T>(l.dy),
                                       .grad_residual = k + 1 < D ? grad_below(a, k + 1, l, ws) : nullptr,
                                       .rows = n,
                                       .d = d,
                                       .grad_h = ws.at<T>(l.d_stream),
                                       .grad_weight = a.grads[k].shared_norm,
                                       .accumulate_weight = a.accumulate},
                                      {}, stream));
      const auto lb = layer_bwd_args(a, k, l, ws);
      TL_RETURN_IF_ERROR(LayerBwd::run(lb, {sub.ptr, LayerBwd::workspace_size(lb)}, stream));
      const auto ib = in_bwd_args(a, k, l, ws);
      if (!ib.grad_hidden && !ib.grad_eh_proj && !ib.grad_enorm && !ib.grad_embed) continue;
      TL_RETURN_IF_ERROR(InBwd::run(ib, {sub.ptr, InBwd::workspace_size(ib)}, stream));
    }
    return Status::ok();
  }

  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    return detail::read_tokens_status(kName, a.tokens, a.vocab, ws.at<DeviceStatus>(layout(a).status), stream);
  }
};

}  // namespace tokenless::heads
