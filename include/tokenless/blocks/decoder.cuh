#pragma once
// A pre-norm decoder layer (Llama 3, Mistral, Mixtral, Phi-3), assembled
// from the library's operations, with one workspace plan and no allocation:
//
//   x += delta                          (the previous layer's MLP output; fused
//   h  = RmsNorm(x)                      into the norm, as RmsNorm's residual)
//   qkv = h · Wqkvᵀ                     (one GEMM: q, k, v rows stacked)
//   q, k = Rope(q, k)                   (in place, in the fused row; positions
//                                        continue the cache: offset = cache_len)
//   cache += k, v                       (KvCacheAppend)
//   o  = attention(q, k, v)             (prefill: Forward over the step's own
//                                        tokens; decode: Decode over the cache)
//   delta = o · Woᵀ
//   x += delta;  h = RmsNorm(x)
//   delta = Mlp(h)                      (SwiGLU: h · W_guᵀ, act(gate) · up,
//                                        · W_downᵀ; or Mixtral's Moe)
//
// The layer's output is the pair (x, delta): the residual add of its MLP is
// left to the next layer's first norm (or the model's final one), so that no
// pass over the stream is spent on it. Every add and every GEMM output is
// rounded to T where transformers' bf16 model rounds it.
//
// Storage is fp16 or bf16 (the attention core's), accumulation fp32. GEMMs
// go through blas::Gemm: cuBLASLt on a GPU, a host loop on the CPU executor.
//
// Attention modes:
//   prefill  the step's tokens attend to themselves (Causal, or Mistral's
//            SlidingWindow when shape.window > 0); with a cache, they are
//            also appended to it, which must then be empty (a first chunk);
//   decode   1 to max_queries (<= 16) new tokens a sequence are appended and
//            attend to the whole cache (generation, or speculative drafts).
// Without a cache (k_cache null) prefill is the training/scoring forward.
//
// Device-side checks (no host sync in run()): the batch's cu_seqlens, the
// cache's capacity and lengths. read_status() names the first failing step.
#include <tokenless/attention/attention.cuh>
#include <tokenless/attention/decode.cuh>
#include <tokenless/attention/policy.hpp>
#include <tokenless/blocks/activation.cuh>
#include <tokenless/blocks/moe.cuh>
#include <tokenless/blocks/norm.cuh>
#include <tokenless/blocks/policy.hpp>
#include <tokenless/blocks/rope.cuh>
#include <tokenless/core/cublaslt.hpp>
#include <tokenless/core/device_status.cuh>
#include <tokenless/core/dtype.hpp>
#include <tokenless/core/mma.cuh>
#include <tokenless/core/operation.hpp>
#include <tokenless/core/validate.hpp>
#include <tokenless/core/varlen.hpp>
#include <tokenless/core/workspace.hpp>

#include <cstdint>
#include <type_traits>

namespace tokenless::blocks {

// Device pointers, in io::ModelWeights' packed layout.
template <class T>
struct DecoderWeights {
  const T* attn_norm = nullptr;  // [hidden]
  const T* wqkv = nullptr;       // [qkv_dim, hidden]: q, k, v rows stacked
  const T* wo = nullptr;         // [hidden, q_dim]
  const T* mlp_norm = nullptr;   // [hidden]
  const T* w_gate_up = nullptr;  // [2 ffn, hidden] (gate rows first), or [experts, 2 ffn, hidden]
  const T* w_down = nullptr;     // [hidden, ffn], or [experts, hidden, ffn]
  const T* router = nullptr;     // [experts, hidden] (Mixtral)
};

enum class Attend : std::uint8_t { prefill, decode };

namespace detail {
// A prefill that fills a cache starts it: every sequence's cache_len is 0.
inline constexpr int kCheckEmptyCache = kFirstOperationCheck;
struct EmptyCacheKernel {
  struct Params {
    const std::int32_t* cache_len;
    std::int64_t num_seqs;
    DeviceStatus* status;
  };
  static constexpr int kThreads = 256;
  static constexpr bool kReportsStatus = true;
  TL_DEVICE void operator()(const Params& p) const {
    work::thread_items(p.num_seqs, [&](std::int64_t b) {
      if (p.cache_len[b] != 0) device_fail(p.status, kCheckEmptyCache, b);
    });
  }
};
}  // namespace detail

// What the training forward keeps for the backward: caller-owned device
// buffers, [tokens, ...] rows packed. With them the layer reads x without
// updating it and writes the stream after its attention to `mid`, which the
// next layer reads as its x (so that every layer's input survives for the
// backward with no copy).
template <class T>
struct DecoderSaved {
  T* h0 = nullptr;             // [tokens, hidden]: the stream into the layer, x + delta (not when first: x itself)
  float* inv_rms1 = nullptr;   // [tokens]
  T* h1 = nullptr;             // [tokens, hidden]: the attention norm's output
  T* qkv = nullptr;            // [tokens, qkv_dim]: q and k after RoPE, v
  T* o = nullptr;              // [tokens, q_dim]: attention's output
  float* lse = nullptr;        // [heads, tokens]
  T* mid = nullptr;            // [tokens, hidden]: the stream after the attention (the output's x)
  float* inv_rms2 = nullptr;   // [tokens]
  T* h2 = nullptr;             // [tokens, hidden]: the MLP norm's output
  T* gu = nullptr;             // [tokens, 2 ffn]: gate | up before the activation (dense MLP)
  T* act = nullptr;            // [tokens, ffn]: act(gate) · up (dense MLP)
  void* moe = nullptr;         // Mixtral: the MoE's state, DecoderLayer::moe_saved_bytes() (256-byte aligned)
};

// The weights' gradients, fp32, each optional; written, or added to with accumulate.
struct DecoderGrads {
  float* attn_norm = nullptr;
  float* wqkv = nullptr;
  float* wo = nullptr;
  float* mlp_norm = nullptr;
  float* w_gate_up = nullptr;
  float* w_down = nullptr;
  float* router = nullptr;
};

// HD: the head dims the attention core is instantiated for (a model that
// knows its own may name just that one: less to compile).
template <mma::TensorCoreType T, NormPolicy N = NormThenCast, RopeLayout L = RopeHalf, ActivationPolicy A = Silu,
          class HD = attention::SupportedHeadDims>
struct DecoderLayer {
  static constexpr const char* kName = "blocks::DecoderLayer";
  using Norm = RmsNorm<N, T>;
  using RopeOp = Rope<L, T>;
  using Append = attention::KvCacheAppend<T>;
  using MoeOp = Moe<A, T>;

  struct Arguments {
    const blas::LtHandle* handle = nullptr;
    DecoderShape shape;
    DecoderWeights<T> w;
    const float* inv_freq = nullptr;  // [rot_dim / 2], device (rope_inv_freq)
    VarlenBatch batch;                // this step's tokens, per sequence
    T* x = nullptr;                   // [batch.total, hidden]: the residual stream, updated (read only when saving)
    T* delta = nullptr;               // [batch.total, hidden]: in, the previous layer's MLP output
                                      // (unless first); out, this layer's
    bool first = false;               // x holds the embeddings: nothing to add
    Attend attend = Attend::prefill;
    // This layer's KV cache (optional in prefill): [num_seqs, capacity, kv_heads, head_dim].
    T* k_cache = nullptr;
    T* v_cache = nullptr;
    std::int32_t* cache_len = nullptr;  // [num_seqs], device, this layer's
    std::int64_t capacity = 0;
    int max_queries = 16;               // decode: new tokens a sequence at most
    T* router_logits = nullptr;         // [batch.total, experts], optional (Mixtral's balance loss)
    DecoderSaved<T> saved{};            // the training forward's state (prefill without a cache)
  };

  static std::int64_t tokens(const Arguments& a) { return a.batch.total; }
  static bool windowed(const Arguments& a) { return a.shape.window > 0; }
  static bool cached(const Arguments& a) { return a.k_cache != nullptr; }
  static bool training(const Arguments& a) { return a.saved.qkv != nullptr; }
  static std::int64_t ffn2(const Arguments& a) { return 2 * std::int64_t{a.shape.ffn}; }

  // The tensors between the steps: the workspace's, or the saved state's
  // when training (then both norms' outputs are kept apart, and the
  // activation is not written over the gate).
  struct Buffers {
    T* h1 = nullptr;   // [tokens, hidden]: the attention norm's output
    T* h2 = nullptr;   // [tokens, hidden]: the MLP norm's output
    T* qkv = nullptr;  // [tokens, qkv_dim]
    T* o = nullptr;    // [tokens, q_dim]
    T* gu = nullptr;   // [tokens, 2 ffn]: [gate | up]
    T* act = nullptr;  // act(gate) · up, act_stride apart
    std::int64_t act_stride = 0;
  };

  // ---------------------------------------------------------------- the steps' arguments
  static blas::Gemm::Arguments gemm(const Arguments& a, std::int64_t m, const void* x, std::int64_t ldx, bool trans_x,
                                    const void* w, std::int64_t ldw, bool trans_w, std::int64_t n, std::int64_t k,
                                    void* out, std::int64_t ldo) {
    blas::Gemm::Arguments g;
    g.handle = a.handle;
    g.dtype = dtype_traits<T>::id;
    g.m = m;
    g.n = n;
    g.k = k;
    g.a = x;
    g.lda = ldx;
    g.trans_a = trans_x;
    g.b = w;
    g.ldb = ldw;
    g.trans_b = trans_w;
    g.d = out;
    g.ldd = ldo;
    return g;
  }
  // out [tokens, n] = x [tokens, k] · wᵀ (nn.Linear's [n, k] weight).
  static blas::Gemm::Arguments linear(const Arguments& a, const T* x, std::int64_t ldx, const T* w, std::int64_t n,
                                      std::int64_t k, T* out, std::int64_t ldo) {
    return gemm(a, tokens(a), x, ldx, false, w, k, true, n, k, out, ldo);
  }
  static typename RopeOp::Arguments rope(const Arguments& a, T* qkv) {
    const DecoderShape& s = a.shape;
    typename RopeOp::Arguments r;
    r.q = qkv;
    r.k = qkv ? qkv + s.q_dim() : nullptr;
    r.batch = a.batch;
    r.q_heads = s.heads;
    r.k_heads = s.kv_heads;
    r.head_dim = s.head_dim;
    r.rot_dim = s.rot_dim;
    r.q_stride = r.k_stride = s.qkv_dim();
    r.inv_freq = a.inv_freq;
    r.offset = cached(a) ? a.cache_len : nullptr;  // positions continue the cache
    return r;
  }
  static typename Append::Arguments append(const Arguments& a, T* qkv) {
    const DecoderShape& s = a.shape;
    typename Append::Arguments c;
    c.k_new = qkv ? qkv + s.q_dim() : nullptr;
    c.v_new = qkv ? qkv + s.q_dim() + s.kv_dim() : nullptr;
    c.added = a.batch;
    c.k_cache = a.k_cache;
    c.v_cache = a.v_cache;
    c.cache_len = a.cache_len;
    c.capacity = a.capacity;
    c.kv_heads = s.kv_heads;
    c.head_dim = s.head_dim;
    c.k_new_stride = c.v_new_stride = s.qkv_dim();
    return c;
  }
  template <class V>
  static attention::ForwardArguments<V, T> forward(const Arguments& a, const T* qkv, T* o) {
    const DecoderShape& s = a.shape;
    attention::ForwardArguments<V, T> f;
    f.q = qkv;
    f.k = qkv ? qkv + s.q_dim() : nullptr;
    f.v = qkv ? qkv + s.q_dim() + s.kv_dim() : nullptr;
    f.q_batch = f.k_batch = a.batch;
    f.heads = s.heads;
    f.kv_heads = s.kv_heads;
    f.head_dim = s.head_dim;
    f.q_stride = f.k_stride = f.v_stride = s.qkv_dim();
    f.out = o;
    f.lse = a.saved.lse;
    if constexpr (std::is_same_v<V, attention::SlidingWindow>) f.variant.window = s.window;
    return f;
  }
  template <class V>
  static attention::DecodeArguments<V, T> decode(const Arguments& a, const T* qkv, T* o) {
    const DecoderShape& s = a.shape;
    attention::DecodeArguments<V, T> d;
    d.q = qkv;
    d.q_batch = a.batch;
    d.k_cache = a.k_cache;
    d.v_cache = a.v_cache;
    d.cache_len = a.cache_len;
    d.capacity = a.capacity;
    d.heads = s.heads;
    d.kv_heads = s.kv_heads;
    d.head_dim = s.head_dim;
    d.q_stride = s.qkv_dim();
    d.max_queries = a.max_queries;
    d.out = o;
    if constexpr (std::is_same_v<V, attention::SlidingWindow>) d.variant.window = s.window;
    return d;
  }
  static typename MoeOp::Arguments moe(const Arguments& a, const T* h) {
    const DecoderShape& s = a.shape;
    typename MoeOp::Arguments m;
    m.x = h;
    m.tokens = tokens(a);
    m.d = s.hidden;
    m.router = a.w.router;
    m.gate_up = a.w.w_gate_up;
    m.down = a.w.w_down;
    m.experts = s.experts;
    m.top_k = s.top_k;
    m.ffn = s.ffn;
    m.renormalize = true;
    m.out = a.delta;
    m.router_logits = a.router_logits;
    return m;
  }
  // The MoE's state a training forward keeps (saved.moe): what its backward reads.
  static std::size_t moe_saved_bytes(const Arguments& a) {
    if (a.shape.experts <= 0) return 0;
    typename MoeBackward<A, T>::Arguments b;
    b.forward = moe(a, nullptr);
    return MoeBackward<A, T>::workspace_size(b);
  }
  // The residual stream into the layer (the attention norm's h).
  static const T* stream_in(const Arguments& a) { return a.first ? a.x : a.saved.h0; }
  // Norm 1: h = RmsNorm(x + delta) (x alone when first); norm 2: RmsNorm(h0 + attention).
  static typename Norm::Arguments norm(const Arguments& a, int which, T* out) {
    typename Norm::Arguments n;
    n.rows = tokens(a);
    n.d = a.shape.hidden;
    n.eps = a.shape.eps;
    n.out = out;
    if (which == 1) {
      n.weight = a.w.attn_norm;
      n.x = a.first ? a.x : a.delta;
      n.residual = a.first ? nullptr : a.x;
      n.residual_out = a.first ? nullptr : (training(a) ? a.saved.h0 : a.x);
      n.inv_rms = a.saved.inv_rms1;
    } else {
      n.weight = a.w.mlp_norm;
      n.x = a.delta;
      n.residual = training(a) ? stream_in(a) : a.x;
      n.residual_out = training(a) ? a.saved.mid : a.x;
      n.inv_rms = a.saved.inv_rms2;
    }
    return n;
  }
  static typename Gated<A, T>::Arguments gated(const Arguments& a, const Buffers& b) {
    return {.gate = b.gu,
            .up = b.gu ? b.gu + a.shape.ffn : nullptr,
            .rows = tokens(a),
            .cols = a.shape.ffn,
            .gate_stride = ffn2(a),
            .up_stride = ffn2(a),
            .out_stride = b.act_stride,
            .out = b.act};
  }

  // Calls f.template operator()<V>() with the layer's attention variant.
  template <class F>
  static Status with_variant(const Arguments& a, F&& f) {
    if (windowed(a)) return f.template operator()<attention::SlidingWindow>();
    return f.template operator()<attention::Causal>();
  }
  static std::size_t attention_workspace(const Arguments& a) {
    std::size_t bytes = 0;
    (void)with_variant(a, [&]<class V>() {
      bytes = a.attend == Attend::decode ? attention::Decode<V, T, HD>::workspace_size(decode<V>(a, nullptr, nullptr))
                                         : attention::Forward<V, T, HD>::workspace_size(forward<V>(a, nullptr, nullptr));
      return Status::ok();
    });
    return bytes;
  }

  // ---------------------------------------------------------------- the plan
  // The activations (none when training: they are the saved state), then
  // each status-reporting step's own record (so that read_status() can name
  // the step), the MoE's and cuBLASLt's scratch.
  struct Layout {
    std::size_t h, qkv, o, gu, check, rope, append, attn, moe, gemm, bytes;
  };
  static Layout layout(const Arguments& a) {
    const DecoderShape& s = a.shape;
    const std::int64_t n = tokens(a) > 0 ? tokens(a) : 0;
    const bool keep = training(a);
    WorkspaceLayout w;
    Layout l{};
    l.h = w.add_array<T>(keep ? 0 : n * s.hidden);
    l.qkv = w.add_array<T>(keep ? 0 : n * s.qkv_dim());
    l.o = w.add_array<T>(keep ? 0 : n * s.q_dim());
    l.gu = w.add_array<T>(keep || s.experts ? 0 : n * ffn2(a));
    l.check = w.add(kStatusBytes);
    l.rope = w.add(kStatusBytes);
    l.append = w.add(cached(a) ? kStatusBytes : 0);
    l.attn = w.add(attention_workspace(a));
    l.moe = w.add(s.experts && !keep ? MoeOp::workspace_size(moe(a, nullptr)) : 0);
    l.gemm = w.add(blas::Gemm::workspace_size({}));
    l.bytes = w.bytes();
    return l;
  }
  static Buffers buffers(const Arguments& a, Workspace ws) {
    if (training(a)) {
      const DecoderSaved<T>& v = a.saved;
      return {v.h1, v.h2, v.qkv, v.o, v.gu, v.act, a.shape.ffn};
    }
    const Layout l = layout(a);
    T* gu = ws.at<T>(l.gu);
    return {ws.at<T>(l.h), ws.at<T>(l.h), ws.at<T>(l.qkv), ws.at<T>(l.o), gu, gu, ffn2(a)};  // act over the gate
  }

  static Status can_implement(const Arguments& a) {
    const DecoderShape& s = a.shape;
    TL_RETURN_IF_ERROR(check::batch("batch", a.batch));
    TL_RETURN_IF_ERROR(check::positive("shape.hidden", s.hidden));
    TL_RETURN_IF_ERROR(check::positive("shape.ffn", s.ffn));
    if (s.hidden % 8 != 0 || s.ffn % 8 != 0) {
      return Status::argument(StatusCode::unsupported, "shape.hidden, shape.ffn", "multiples of 8 (16-byte rows)",
                              "hidden %d, ffn %d", s.hidden, s.ffn);
    }
    TL_RETURN_IF_ERROR(check::product_fits_int32("tokens * qkv_dim", tokens(a), s.qkv_dim()));
    TL_RETURN_IF_ERROR(check::product_fits_int32("tokens * 2 ffn", tokens(a), ffn2(a)));
    if (s.window < 0) return Status::argument(StatusCode::invalid_argument, "shape.window", ">= 0", "%d", s.window);
    if (s.experts < 0) return Status::argument(StatusCode::invalid_argument, "shape.experts", ">= 0", "%d", s.experts);
    if (!a.handle) return Status::argument(StatusCode::null_pointer, "handle", "a created LtHandle", "none");
    TL_RETURN_IF_ERROR(check::not_null({{"w.attn_norm", a.w.attn_norm},
                                        {"w.wqkv", a.w.wqkv},
                                        {"w.wo", a.w.wo},
                                        {"w.mlp_norm", a.w.mlp_norm},
                                        {"w.w_gate_up", a.w.w_gate_up},
                                        {"w.w_down", a.w.w_down},
                                        {"x", a.x},
                                        {"delta", a.delta}}));
    if (a.x == a.delta) return Status::argument(StatusCode::invalid_argument, "delta", "a buffer other than x", "x");
    if (a.attend == Attend::decode && !cached(a)) {
      return Status::argument(StatusCode::null_pointer, "k_cache", "a KV cache to decode from", "nullptr");
    }
    if (s.experts > 0) TL_RETURN_IF_ERROR(check::not_null("w.router", a.w.router));
    if (training(a)) TL_RETURN_IF_ERROR(check_saved(a));
    const Buffers b = training(a) ? buffers(a, {}) : fake_buffers(a);
    // Each step's own checks, on stand-ins of the workspace's buffers.
    TL_RETURN_IF_ERROR(Norm::can_implement(norm(a, 1, b.h1)));
    TL_RETURN_IF_ERROR(blas::Gemm::can_implement(linear(a, b.h1, s.hidden, a.w.wqkv, s.qkv_dim(), s.hidden, b.qkv,
                                                        s.qkv_dim())));
    TL_RETURN_IF_ERROR(RopeOp::can_implement(rope(a, b.qkv)));
    if (cached(a)) TL_RETURN_IF_ERROR(Append::can_implement(append(a, b.qkv)));
    TL_RETURN_IF_ERROR(with_variant(a, [&]<class V>() {
      return a.attend == Attend::decode ? attention::Decode<V, T, HD>::can_implement(decode<V>(a, b.qkv, b.o))
                                        : attention::Forward<V, T, HD>::can_implement(forward<V>(a, b.qkv, b.o));
    }));
    TL_RETURN_IF_ERROR(blas::Gemm::can_implement(linear(a, b.o, s.q_dim(), a.w.wo, s.hidden, s.q_dim(), a.delta,
                                                        s.hidden)));
    TL_RETURN_IF_ERROR(Norm::can_implement(norm(a, 2, b.h2)));
    if (s.experts > 0) return MoeOp::can_implement(moe(a, b.h2));
    TL_RETURN_IF_ERROR(blas::Gemm::can_implement(linear(a, b.h2, s.hidden, a.w.w_gate_up, ffn2(a), s.hidden, b.gu,
                                                        ffn2(a))));
    TL_RETURN_IF_ERROR(Gated<A, T>::can_implement(gated(a, b)));
    return blas::Gemm::can_implement(linear(a, b.act, b.act_stride, a.w.w_down, s.hidden, s.ffn, a.delta, s.hidden));
  }
  static std::size_t workspace_size(const Arguments& a) { return layout(a).bytes; }

  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<DecoderLayer>(a, ws));
    const DecoderShape& s = a.shape;
    const Layout l = layout(a);
    const Buffers b = buffers(a, ws);
    const Workspace gemm_ws{ws.at<void>(l.gemm), ws.bytes - l.gemm};
    auto gemm_run = [&](const blas::Gemm::Arguments& g) { return blas::Gemm::run(g, gemm_ws, stream); };
    // Attention.
    TL_RETURN_IF_ERROR(Norm::run(norm(a, 1, b.h1), {}, stream));
    TL_RETURN_IF_ERROR(gemm_run(linear(a, b.h1, s.hidden, a.w.wqkv, s.qkv_dim(), s.hidden, b.qkv, s.qkv_dim())));
    TL_RETURN_IF_ERROR(RopeOp::run(rope(a, b.qkv), {ws.at<void>(l.rope), kStatusBytes}, stream));
    if (cached(a) && a.attend == Attend::prefill) {
      auto* status = ws.at<DeviceStatus>(l.check);
      TL_RETURN_IF_ERROR(reset_device_status(status, stream));
      TL_RETURN_IF_ERROR(launch<detail::EmptyCacheKernel>(
          {a.cache_len, a.batch.num_seqs, status}, grid_for(a.batch.num_seqs, detail::EmptyCacheKernel::kThreads, 4),
          stream));
    }
    if (cached(a)) TL_RETURN_IF_ERROR(Append::run(append(a, b.qkv), {ws.at<void>(l.append), kStatusBytes}, stream));
    const Workspace attn_ws{ws.at<void>(l.attn), attention_workspace(a)};
    TL_RETURN_IF_ERROR(with_variant(a, [&]<class V>() {
      return a.attend == Attend::decode ? attention::Decode<V, T, HD>::run(decode<V>(a, b.qkv, b.o), attn_ws, stream)
                                        : attention::Forward<V, T, HD>::run(forward<V>(a, b.qkv, b.o), attn_ws, stream);
    }));
    TL_RETURN_IF_ERROR(gemm_run(linear(a, b.o, s.q_dim(), a.w.wo, s.hidden, s.q_dim(), a.delta, s.hidden)));
    // The MLP.
    TL_RETURN_IF_ERROR(Norm::run(norm(a, 2, b.h2), {}, stream));
    if (s.experts > 0) {
      const typename MoeOp::Arguments m = moe(a, b.h2);
      const Workspace mw = training(a) ? Workspace{a.saved.moe, moe_saved_bytes(a)}
                                       : Workspace{ws.at<void>(l.moe), MoeOp::workspace_size(m)};
      return MoeOp::run(m, mw, stream);
    }
    TL_RETURN_IF_ERROR(gemm_run(linear(a, b.h2, s.hidden, a.w.w_gate_up, ffn2(a), s.hidden, b.gu, ffn2(a))));
    TL_RETURN_IF_ERROR(Gated<A, T>::run(gated(a, b), {}, stream));
    return gemm_run(linear(a, b.act, b.act_stride, a.w.w_down, s.hidden, s.ffn, a.delta, s.hidden));
  }

  // The first failing device-side check, by step; synchronises the stream.
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    const Layout l = layout(a);
    const Buffers b = buffers(a, ws);
    if (cached(a) && a.attend == Attend::prefill) {
      DeviceFailure f;
      TL_RETURN_IF_ERROR(read_device_status(ws.at<DeviceStatus>(l.check), f, stream));
      if (f.check == detail::kCheckEmptyCache) {
        std::int32_t len = 0;
        TL_CUDA_TRY(cudaMemcpyAsync(&len, a.cache_len + f.index, sizeof len, cudaMemcpyDeviceToHost, stream));
        TL_CUDA_TRY(cudaStreamSynchronize(stream));
        return device_failure(kName, StatusCode::invalid_argument, "cache_len",
                              "0: a prefill starts its sequences' caches (continue one with Attend::decode)",
                              "sequence %lld: cache_len %d", static_cast<long long>(f.index), len);
      }
    }
    TL_RETURN_IF_ERROR(RopeOp::read_status(rope(a, b.qkv), {ws.at<void>(l.rope), kStatusBytes}, stream));
    if (cached(a)) {
      TL_RETURN_IF_ERROR(Append::read_status(append(a, b.qkv), {ws.at<void>(l.append), kStatusBytes}, stream));
    }
    const Workspace attn_ws{ws.at<void>(l.attn), attention_workspace(a)};
    return with_variant(a, [&]<class V>() {
      return a.attend == Attend::decode ? attention::Decode<V, T, HD>::read_status(decode<V>(a, b.qkv, b.o), attn_ws, stream)
                                        : attention::Forward<V, T, HD>::read_status(forward<V>(a, b.qkv, b.o), attn_ws,
                                                                                stream);
    });
  }

 private:
  // Aligned non-null stand-ins for the workspace's buffers in can_implement
  // (never dereferenced: only pointers and shapes are checked there).
  static Buffers fake_buffers(const Arguments& a) {
    T* p = reinterpret_cast<T*>(std::uintptr_t{kWorkspaceAlignment});
    return {p, p, p, p, p, p, ffn2(a)};
  }
  static Status check_saved(const Arguments& a) {
    const DecoderSaved<T>& v = a.saved;
    if (cached(a) || a.attend != Attend::prefill) {
      return Status::argument(StatusCode::invalid_argument, "saved", "a prefill without a cache (the training forward)",
                              "a cache or a decode step");
    }
    TL_RETURN_IF_ERROR(check::not_null({{"saved.inv_rms1", v.inv_rms1},
                                        {"saved.h1", v.h1},
                                        {"saved.o", v.o},
                                        {"saved.lse", v.lse},
                                        {"saved.mid", v.mid},
                                        {"saved.inv_rms2", v.inv_rms2},
                                        {"saved.h2", v.h2}}));
    if (!a.first) TL_RETURN_IF_ERROR(check::not_null("saved.h0", v.h0));
    if (a.shape.experts > 0) {
      TL_RETURN_IF_ERROR(check::not_null("saved.moe", v.moe));
      return check::aligned("saved.moe", v.moe, kWorkspaceAlignment);
    }
    return check::not_null({{"saved.gu", v.gu}, {"saved.act", v.act}});
  }
};

// The layer's backward, from the training forward's saved state:
//
//   g = dL/d(the output stream, mid + delta)
//   MLP:        d_act = g · W_down, dW_down += gᵀ · act; d_gu = Gated'(gu, d_act);
//               d_h2 = d_gu · W_gu, dW_gu += d_guᵀ · h2   (Mixtral: MoeBackward)
//   norm 2:     d_mid = RmsNorm'(mid, d_h2) + g,  dw_mlp_norm
//   attention:  d_o = d_mid · Wo, dWo += d_midᵀ · o; d_qkv = attention'(q, k, v, o, lse, d_o);
//               Rope⁻¹(d_q, d_k); d_h1 = d_qkv · Wqkv, dWqkv += d_qkvᵀ · h1
//   norm 1:     grad_in = RmsNorm'(h0, d_h1) + d_mid,  dw_attn_norm
//
// grad_in is dL/d(the input stream, x + delta): the gradient of both x and
// the previous layer's delta. Weight gradients are fp32 (the GEMMs write
// fp32 from 16-bit operands; nothing is rounded to 16 bits across layers),
// written or accumulated. No atomics: the same bits on every run.
template <mma::TensorCoreType T, NormPolicy N = NormThenCast, RopeLayout L = RopeHalf, ActivationPolicy A = Silu,
          class HD = attention::SupportedHeadDims>
struct DecoderLayerBackward {
  static constexpr const char* kName = "blocks::DecoderLayerBackward";
  using Forward = DecoderLayer<T, N, L, A, HD>;
  using NormBwd = RmsNormBackward<N, T>;
  using MoeBwd = MoeBackward<A, T>;
  struct Arguments {
    typename Forward::Arguments forward;  // as given to the training forward (saved filled)
    const T* grad = nullptr;              // [tokens, hidden]: dL/d(output stream)
    T* grad_in = nullptr;                 // [tokens, hidden]: dL/d(input stream); may alias grad
    DecoderGrads grads;
    bool accumulate = false;              // add into the weight gradients instead of writing them
    // Mixtral's load-balancing loss, optional (MoeBackward's fields): its
    // fractions from MoeBalanceLoss over every layer's router, the rows it
    // averaged (layers · tokens) and its scale (coefficient · dL/dloss).
    const float* balance_fraction = nullptr;
    std::int64_t balance_rows = 0;
    float balance_scale = 0.0f;
  };
  static std::int64_t tokens(const Arguments& a) { return a.forward.batch.total; }

  struct Layout {
    std::size_t d_mid, d_h, d_act, d_gu, d_o, d_qkv, rope, attn, gemm, bytes;
  };
  template <class V>
  static attention::BackwardArguments<V, T> attention_backward(const Arguments& a, T* d_o, T* d_qkv) {
    const auto& f = a.forward;
    const DecoderShape& s = f.shape;
    const T* qkv = f.saved.qkv;
    attention::BackwardArguments<V, T> b;
    b.q = qkv;
    b.k = qkv ? qkv + s.q_dim() : nullptr;
    b.v = qkv ? qkv + s.q_dim() + s.kv_dim() : nullptr;
    b.out = f.saved.o;
    b.grad_out = d_o;
    b.lse = f.saved.lse;
    b.q_batch = b.k_batch = f.batch;
    b.heads = s.heads;
    b.kv_heads = s.kv_heads;
    b.head_dim = s.head_dim;
    b.q_stride = b.k_stride = b.v_stride = s.qkv_dim();
    b.grad_q_stride = b.grad_k_stride = b.grad_v_stride = s.qkv_dim();
    b.grad_q = d_qkv;
    b.grad_k = d_qkv ? d_qkv + s.q_dim() : nullptr;
    b.grad_v = d_qkv ? d_qkv + s.q_dim() + s.kv_dim() : nullptr;
    if constexpr (std::is_same_v<V, attention::SlidingWindow>) b.variant.window = s.window;
    return b;
  }
  static std::size_t attention_workspace(const Arguments& a) {
    std::size_t bytes = 0;
    (void)Forward::with_variant(a.forward, [&]<class V>() {
      bytes = attention::Backward<V, T, HD>::workspace_size(attention_backward<V>(a, nullptr, nullptr));
      return Status::ok();
    });
    return bytes;
  }
  static Layout layout(const Arguments& a) {
    const DecoderShape& s = a.forward.shape;
    const std::int64_t n = tokens(a) > 0 ? tokens(a) : 0;
    const bool dense = s.experts == 0;
    WorkspaceLayout w;
    Layout l{};
    l.d_mid = w.add_array<T>(n * s.hidden);
    l.d_h = w.add_array<T>(n * s.hidden);
    l.d_act = w.add_array<T>(dense ? n * s.ffn : 0);
    l.d_gu = w.add_array<T>(dense ? n * 2 * std::int64_t{s.ffn} : 0);
    l.d_o = w.add_array<T>(n * s.q_dim());
    l.d_qkv = w.add_array<T>(n * s.qkv_dim());
    l.rope = w.add(kStatusBytes);
    l.attn = w.add(attention_workspace(a));
    l.gemm = w.add(blas::Gemm::workspace_size({}));
    l.bytes = w.bytes();
    return l;
  }

  // dW [n, k] (+)= dYᵀ [n, tokens] · X [tokens, k], in fp32.
  static blas::Gemm::Arguments weight_grad(const Arguments& a, const T* dy, std::int64_t n, const T* x,
                                           std::int64_t ldx, std::int64_t k, float* dw) {
    blas::Gemm::Arguments g =
        Forward::gemm(a.forward, n, dy, n, /*trans_x=*/true, x, ldx, /*trans_w=*/false, k, tokens(a), dw, k);
    g.d_fp32 = true;
    g.beta = a.accumulate ? 1.0f : 0.0f;
    return g;
  }
  // dX [tokens, k] = dY [tokens, n] · W [n, k].
  static blas::Gemm::Arguments input_grad(const Arguments& a, const T* dy, std::int64_t n, const T* w, std::int64_t k,
                                          T* dx) {
    return Forward::gemm(a.forward, tokens(a), dy, n, false, w, k, false, k, n, dx, k);
  }
  static typename MoeBwd::Arguments moe_backward(const Arguments& a, T* d_h2) {
    typename MoeBwd::Arguments m;
    m.forward = Forward::moe(a.forward, a.forward.saved.h2);
    m.grad_out = a.grad;
    m.grad_x = d_h2;
    m.grad_router = a.grads.router;
    m.grad_gate_up = a.grads.w_gate_up;
    m.grad_down = a.grads.w_down;
    m.accumulate_weights = a.accumulate;
    m.balance_fraction = a.balance_fraction;
    m.balance_rows = a.balance_rows;
    m.balance_scale = a.balance_scale;
    return m;
  }
  static typename NormBwd::Arguments norm_backward(const Arguments& a, int which, const T* d_out, const T* d_res,
                                                   T* d_h) {
    const auto& f = a.forward;
    typename NormBwd::Arguments n;
    n.h = which == 1 ? Forward::stream_in(f) : f.saved.mid;
    n.inv_rms = which == 1 ? f.saved.inv_rms1 : f.saved.inv_rms2;
    n.weight = which == 1 ? f.w.attn_norm : f.w.mlp_norm;
    n.grad_out = d_out;
    n.grad_residual = d_res;
    n.rows = tokens(a);
    n.d = f.shape.hidden;
    n.grad_h = d_h;
    n.grad_weight = which == 1 ? a.grads.attn_norm : a.grads.mlp_norm;
    n.accumulate_weight = a.accumulate;
    return n;
  }

  static Status can_implement(const Arguments& a) {
    const auto& f = a.forward;
    TL_RETURN_IF_ERROR(Forward::can_implement(f));
    if (!Forward::training(f)) {
      return Status::argument(StatusCode::invalid_argument, "forward.saved", "the training forward's saved state",
                              "none (saved.qkv is null)");
    }
    TL_RETURN_IF_ERROR(check::not_null({{"grad", a.grad}, {"grad_in", a.grad_in}}));
    TL_RETURN_IF_ERROR(check::aligned("grad", a.grad, 16));
    TL_RETURN_IF_ERROR(check::aligned("grad_in", a.grad_in, 16));
    const float* const weight_grads[] = {a.grads.attn_norm, a.grads.wqkv,   a.grads.wo,    a.grads.mlp_norm,
                                         a.grads.w_gate_up, a.grads.w_down, a.grads.router};
    for (const float* g : weight_grads) {
      if (g) TL_RETURN_IF_ERROR(check::aligned("grads", g, alignof(float)));
    }
    if (f.shape.experts > 0) {
      auto m = moe_backward(a, reinterpret_cast<T*>(std::uintptr_t{kWorkspaceAlignment}));
      return MoeBwd::can_implement(m);
    }
    return Status::ok();
  }
  static std::size_t workspace_size(const Arguments& a) { return layout(a).bytes; }

  static Status run(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    TL_RETURN_IF_ERROR(check_run<DecoderLayerBackward>(a, ws));
    const auto& f = a.forward;
    const DecoderShape& s = f.shape;
    const DecoderSaved<T>& v = f.saved;
    const Layout l = layout(a);
    T* d_mid = ws.at<T>(l.d_mid);
    T* d_h = ws.at<T>(l.d_h);
    T* d_o = ws.at<T>(l.d_o);
    T* d_qkv = ws.at<T>(l.d_qkv);
    const Workspace gemm_ws{ws.at<void>(l.gemm), ws.bytes - l.gemm};
    auto gemm_run = [&](const blas::Gemm::Arguments& g) { return blas::Gemm::run(g, gemm_ws, stream); };
    // The MLP.
    if (s.experts > 0) {
      const auto m = moe_backward(a, d_h);
      TL_RETURN_IF_ERROR(MoeBwd::run(m, {v.moe, Forward::moe_saved_bytes(f)}, stream));
    } else {
      const std::int64_t f2 = 2 * std::int64_t{s.ffn};
      T* d_act = ws.at<T>(l.d_act);
      T* d_gu = ws.at<T>(l.d_gu);
      TL_RETURN_IF_ERROR(gemm_run(input_grad(a, a.grad, s.hidden, f.w.w_down, s.ffn, d_act)));
      if (a.grads.w_down) TL_RETURN_IF_ERROR(gemm_run(weight_grad(a, a.grad, s.hidden, v.act, s.ffn, s.ffn, a.grads.w_down)));
      TL_RETURN_IF_ERROR((GatedBackward<A, T>::run({.gate = v.gu,
                                                    .up = v.gu + s.ffn,
                                                    .grad_out = d_act,
                                                    .rows = tokens(a),
                                                    .cols = s.ffn,
                                                    .gate_stride = f2,
                                                    .up_stride = f2,
                                                    .grad_gate_stride = f2,
                                                    .grad_up_stride = f2,
                                                    .grad_gate = d_gu,
                                                    .grad_up = d_gu + s.ffn},
                                                   {}, stream)));
      TL_RETURN_IF_ERROR(gemm_run(input_grad(a, d_gu, f2, f.w.w_gate_up, s.hidden, d_h)));
      if (a.grads.w_gate_up) {
        TL_RETURN_IF_ERROR(gemm_run(weight_grad(a, d_gu, f2, v.h2, s.hidden, s.hidden, a.grads.w_gate_up)));
      }
    }
    TL_RETURN_IF_ERROR(NormBwd::run(norm_backward(a, 2, d_h, a.grad, d_mid), {}, stream));
    // The attention.
    TL_RETURN_IF_ERROR(gemm_run(input_grad(a, d_mid, s.hidden, f.w.wo, s.q_dim(), d_o)));
    if (a.grads.wo) TL_RETURN_IF_ERROR(gemm_run(weight_grad(a, d_mid, s.hidden, v.o, s.q_dim(), s.q_dim(), a.grads.wo)));
    const Workspace attn_ws{ws.at<void>(l.attn), attention_workspace(a)};
    TL_RETURN_IF_ERROR(Forward::with_variant(f, [&]<class V>() {
      return attention::Backward<V, T, HD>::run(attention_backward<V>(a, d_o, d_qkv), attn_ws, stream);
    }));
    TL_RETURN_IF_ERROR(Forward::RopeOp::run_backward(Forward::rope(f, d_qkv), {ws.at<void>(l.rope), kStatusBytes}, stream));
    TL_RETURN_IF_ERROR(gemm_run(input_grad(a, d_qkv, s.qkv_dim(), f.w.wqkv, s.hidden, d_h)));
    if (a.grads.wqkv) {
      TL_RETURN_IF_ERROR(gemm_run(weight_grad(a, d_qkv, s.qkv_dim(), v.h1, s.hidden, s.hidden, a.grads.wqkv)));
    }
    return NormBwd::run(norm_backward(a, 1, d_h, d_mid, a.grad_in), {}, stream);
  }

  // The batch's device-side checks (attention's and RoPE's); synchronises.
  static Status read_status(const Arguments& a, Workspace ws, cudaStream_t stream = nullptr) {
    const Layout l = layout(a);
    const auto& f = a.forward;
    TL_RETURN_IF_ERROR(Forward::RopeOp::read_status(Forward::rope(f, ws.at<T>(l.d_qkv)), {ws.at<void>(l.rope), kStatusBytes},
                                                    stream));
    const Workspace attn_ws{ws.at<void>(l.attn), attention_workspace(a)};
    return Forward::with_variant(f, [&]<class V>() {
      return attention::Backward<V, T, HD>::read_status(attention_backward<V>(a, ws.at<T>(l.d_o), ws.at<T>(l.d_qkv)),
                                                    attn_ws, stream);
    });
  }
};

}  // namespace tokenless::blocks
