// The assembled decoder's benchmarks, bf16:
//   * one Llama-3-8B-shaped decoder layer (d 4096, 32 heads, 8 KV heads of
//     128, FFN 14336) over 4K and 16K tokens of one sequence: the forward
//     (blocks::DecoderLayer without a cache), and the training forward (its
//     saved state) with DecoderLayerBackward (fp32 weight gradients): FLOPs
//     and the fraction of the measured bf16 GEMM peak;
//   * one decode step at batch 1 of a Llama-3.2-1B-shaped random model (16
//     layers, d 2048, 32 heads, 8 KV heads of 64, FFN 8192, vocab 128256)
//     with 512 and 4096 positions in the cache: the embedding, 16 layers'
//     DecoderLayer decode, the final norm, the LM head and the argmax; bytes
//     = the weights and the KV cache read once, the fraction of the measured
//     copy bandwidth, and tokens/s.
//   * self-speculative decoding at batch 1 on the same shape with one
//     DeepSeek-V3-style module (include/tokenless/models/llama.cuh, random
//     weights, 512 positions): a plain greedy step, the verification of K
//     drafts (K + 1 tokens through the few-query decode, the acceptance and
//     the caches' rollback; drafts that all fail, so the cache grows one a
//     step as plain decoding's) against it (target: 1.2x at K = 4), and
//     tokens/s over acceptance rates p (each draft forced to agree with the
//     greedy id with probability p, drafted by the module all the same, so
//     the step costs what it would), against plain greedy's.
// Each checks its result once: the layer's rows are finite and the decode
// step's logits equal the last row of a prefill of the same tokens; the
// speculative ids equal the greedy ones.
// Side by side: benchmarks/torch/models_eager.py (transformers' layer eager
// and torch.compile; transformers' generate, dynamic and static cache).
#include "harness.cuh"

#include <tokenless/models/llama.cuh>

#include <tokenless/blocks/decoder.cuh>
#include <tokenless/blocks/norm.cuh>
#include <tokenless/blocks/tokens.cuh>

#include <cmath>
#include <memory>
#include <random>
#include <vector>

namespace bk = tokenless::blocks;

namespace {

using B16 = __nv_bfloat16;
using Layer = bk::DecoderLayer<B16>;

struct LayerWeights {
  std::unique_ptr<tlb::DeviceArray<B16>> attn_norm, wqkv, wo, mlp_norm, gate_up, down;
  LayerWeights(const bk::DecoderShape& s, std::uint32_t seed) {
    const std::int64_t d = s.hidden, f = s.ffn;
    auto make = [&](std::int64_t n, float scale, std::uint32_t k) {
      auto a = std::make_unique<tlb::DeviceArray<B16>>(static_cast<std::size_t>(n));
      tlb::fill_random(a->p, a->n, seed * 16 + k, scale);
      return a;
    };
    // Weights of a trained model's magnitude (std ~ 1/sqrt(d)), norms near 1.
    const float w = 2.0f / std::sqrt(static_cast<float>(d));
    attn_norm = make(d, 0.2f, 1);
    wqkv = make(s.qkv_dim() * d, w, 2);
    wo = make(d * s.q_dim(), w, 3);
    mlp_norm = make(d, 0.2f, 4);
    gate_up = make(2 * f * d, w, 5);
    down = make(d * f, 2.0f / std::sqrt(static_cast<float>(f)), 6);
  }
  bk::DecoderWeights<B16> view() const {
    return {attn_norm->p, wqkv->p, wo->p, mlp_norm->p, gate_up->p, down->p, nullptr};
  }
};

// Norm weights of 1 + noise: add 1 on the host side once (fill_random is centred).
__global__ void add_one_kernel(B16* p, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    p[i] = tokenless::from_float<B16>(tokenless::to_float(p[i]) + 1.0f);
  }
}
void add_one(B16* p, int n) {
  TLB_LAUNCH(add_one_kernel, 64, 256, p, n);
  TLB_CHECK_CUDA(cudaGetLastError());
}

std::vector<float> inv_freq_for(const bk::DecoderShape& s, float theta) {
  std::vector<float> f(static_cast<std::size_t>(s.head_dim / 2));
  (void)bk::rope_inv_freq({.theta = theta}, s.head_dim, f.data());
  return f;
}

void BM_Llama8bLayer(benchmark::State& state, bool backward) {
  const std::int64_t t = state.range(0);
  const bk::DecoderShape s{.hidden = 4096, .heads = 32, .kv_heads = 8, .head_dim = 128, .ffn = 14336};
  LayerWeights w(s, 1);
  add_one(w.attn_norm->p, s.hidden);
  add_one(w.mlp_norm->p, s.hidden);
  tlb::DeviceArray<B16> x0(t * s.hidden), x(t * s.hidden), delta(t * s.hidden);
  tlb::fill_random(x0.p, x0.n, 11);
  tlb::DeviceArray<float> freq(s.head_dim / 2);
  const auto f = inv_freq_for(s, 500000.0f);
  TLB_CHECK_CUDA(cudaMemcpy(freq.p, f.data(), f.size() * 4, cudaMemcpyHostToDevice));
  tokenless::blas::LtHandle h;
  if (auto st = tokenless::blas::LtHandle::create(h); !st) return state.SkipWithError(st.message());
  Layer::Arguments a;
  a.handle = &h;
  a.shape = s;
  a.w = w.view();
  a.inv_freq = freq.p;
  a.batch = tokenless::VarlenBatch::uniform(1, t);
  a.x = x.p;
  a.delta = delta.p;
  a.first = true;
  tlb::DeviceArray<unsigned char> ws(Layer::workspace_size(a));
  const tokenless::Workspace wsv{ws.p, ws.n};
  // x is updated in place: each iteration starts from the same input (a
  // device copy of t · 8 KiB, 1-2% of the layer's time, included).
  auto step = [&] {
    TLB_CHECK_CUDA(cudaMemcpyAsync(x.p, x0.p, x.n * sizeof(B16), cudaMemcpyDeviceToDevice));
    (void)Layer::run(a, wsv);
  };
  step();
  if (auto st = Layer::read_status(a, wsv); !st) return state.SkipWithError(st.message());
  {  // Check once: the output pair is finite and not all zero.
    std::vector<B16> out(static_cast<std::size_t>(s.hidden));
    TLB_CHECK_CUDA(cudaMemcpy(out.data(), delta.p + (t - 1) * s.hidden, s.hidden * 2, cudaMemcpyDeviceToHost));
    double sum = 0;
    for (B16 v : out) {
      const float fv = tokenless::to_float(v);
      if (!std::isfinite(fv)) return state.SkipWithError("the layer's output is not finite");
      sum += std::fabs(fv);
    }
    if (sum == 0) return state.SkipWithError("the layer's output is zero");
  }
  const double d = s.hidden, td = static_cast<double>(t);
  const double gemm = 2.0 * td * d * (static_cast<double>(s.qkv_dim()) + static_cast<double>(s.q_dim())) +
                      2.0 * td * d * 3.0 * s.ffn;
  const double attn = 2.0 * td * td * s.heads * s.head_dim;  // causal: half of 4 t² H hd
  const double weights = 2.0 * d * (static_cast<double>(s.qkv_dim()) + s.q_dim() + 3.0 * s.ffn);
  if (!backward) {
    const double sec = tlb::time_iterations(state, step);
    tlb::report(state, sec, weights + 2.0 * 2.0 * td * d, gemm + attn);
    return;
  }
  // Training: the forward saving its state, then the backward into fp32 weight gradients.
  const std::int64_t n = t, hd = s.hidden;
  tlb::DeviceArray<B16> h1(n * hd), qkv(n * s.qkv_dim()), o(n * s.q_dim()), mid(n * hd), h2(n * hd), gu(n * 2 * s.ffn),
      act(n * s.ffn), g(n * hd), grad_in(n * hd);
  tlb::DeviceArray<float> inv1(n), inv2(n), lse(n * s.heads), d_attn_norm(hd), d_wqkv(s.qkv_dim() * hd),
      d_wo(hd * s.q_dim()), d_mlp_norm(hd), d_gu(2 * s.ffn * hd), d_down(hd * s.ffn);
  tlb::fill_random(g.p, g.n, 12, 0.01f);
  Layer::Arguments ta = a;
  ta.x = x0.p;  // read only when saving
  ta.saved = {nullptr, inv1.p, h1.p, qkv.p, o.p, lse.p, mid.p, inv2.p, h2.p, gu.p, act.p, nullptr};
  using Bwd = bk::DecoderLayerBackward<B16>;
  Bwd::Arguments b;
  b.forward = ta;
  b.grad = g.p;
  b.grad_in = grad_in.p;
  b.grads = {d_attn_norm.p, d_wqkv.p, d_wo.p, d_mlp_norm.p, d_gu.p, d_down.p, nullptr};
  b.accumulate = true;  // as over micro-batches
  tlb::DeviceArray<unsigned char> bws(std::max(Layer::workspace_size(ta), Bwd::workspace_size(b)));
  const tokenless::Workspace bw{bws.p, bws.n};
  auto train = [&] {
    (void)Layer::run(ta, bw);
    (void)Bwd::run(b, bw);
  };
  train();
  if (auto st = Bwd::read_status(b, bw); !st) return state.SkipWithError(st.message());
  {  // Check once: dL/dx and a weight gradient are finite and not all zero.
    std::vector<B16> gi(static_cast<std::size_t>(hd));
    std::vector<float> gw(static_cast<std::size_t>(hd));
    TLB_CHECK_CUDA(cudaMemcpy(gi.data(), grad_in.p, hd * 2, cudaMemcpyDeviceToHost));
    TLB_CHECK_CUDA(cudaMemcpy(gw.data(), d_wqkv.p, hd * 4, cudaMemcpyDeviceToHost));
    double sum = 0;
    for (std::size_t i = 0; i < gi.size(); ++i) {
      const double v = tokenless::to_float(gi[i]), w = gw[i];
      if (!std::isfinite(v) || !std::isfinite(w)) return state.SkipWithError("a gradient is not finite");
      sum += std::fabs(v) + std::fabs(w);
    }
    if (sum == 0) return state.SkipWithError("the gradients are zero");
  }
  const double sec = tlb::time_iterations(state, train);
  // Forward, and the backward's two GEMMs per forward GEMM and 2.5x the attention's FLOPs.
  tlb::report(state, sec, 3.0 * weights, 3.0 * gemm + 3.5 * attn);
}

// A Llama-3.2-1B-shaped model's decode step at batch 1.
struct DecodeModel {
  static constexpr int kLayers = 16, kVocab = 128256;
  bk::DecoderShape s{.hidden = 2048, .heads = 32, .kv_heads = 8, .head_dim = 64, .ffn = 8192};
  std::int64_t capacity;
  std::vector<LayerWeights> layers;
  tlb::DeviceArray<B16> embed, norm, lm_head, kc, vc, x, delta, h, logits;
  tlb::DeviceArray<float> freq;
  tlb::DeviceArray<std::int32_t> ids, len, len0;
  tlb::DeviceArray<unsigned char> ws;
  tokenless::blas::LtHandle handle;

  explicit DecodeModel(std::int64_t cap, std::int64_t max_tokens)
      : capacity(cap),
        embed(std::size_t{kVocab} * 2048),
        norm(2048),
        lm_head(std::size_t{kVocab} * 2048),
        kc(static_cast<std::size_t>(kLayers * cap * 512)),
        vc(static_cast<std::size_t>(kLayers * cap * 512)),
        x(static_cast<std::size_t>(max_tokens * 2048)),
        delta(static_cast<std::size_t>(max_tokens * 2048)),
        h(static_cast<std::size_t>(max_tokens * 2048)),
        logits(static_cast<std::size_t>(max_tokens) * kVocab),
        freq(32),
        ids(static_cast<std::size_t>(cap + 1)),
        len(kLayers),
        len0(kLayers),
        ws(1) {
    for (int l = 0; l < kLayers; ++l) {
      layers.emplace_back(s, 100 + l);
      add_one(layers.back().attn_norm->p, s.hidden);
      add_one(layers.back().mlp_norm->p, s.hidden);
    }
    tlb::fill_random(embed.p, embed.n, 3, 0.1f);
    tlb::fill_random(norm.p, norm.n, 4, 0.2f);
    add_one(norm.p, s.hidden);
    tlb::fill_random(lm_head.p, lm_head.n, 5, 2.0f / std::sqrt(2048.0f));
    const auto f = inv_freq_for(s, 500000.0f);
    TLB_CHECK_CUDA(cudaMemcpy(freq.p, f.data(), f.size() * 4, cudaMemcpyHostToDevice));
    std::vector<std::int32_t> hid(static_cast<std::size_t>(cap + 1));
    for (std::size_t i = 0; i < hid.size(); ++i) hid[i] = static_cast<std::int32_t>((i * 7919) % kVocab);
    TLB_CHECK_CUDA(cudaMemcpy(ids.p, hid.data(), hid.size() * 4, cudaMemcpyHostToDevice));
    (void)tokenless::blas::LtHandle::create(handle);
    std::size_t bytes = 0;
    for (auto at : {bk::Attend::prefill, bk::Attend::decode}) {
      bytes = std::max(bytes, Layer::workspace_size(args(0, at == bk::Attend::prefill ? max_tokens : 1, at)));
    }
    ws = tlb::DeviceArray<unsigned char>(tokenless::kStatusBytes + bytes);
  }
  Layer::Arguments args(int l, std::int64_t tokens, bk::Attend at) {
    Layer::Arguments a;
    a.handle = &handle;
    a.shape = s;
    a.w = layers[static_cast<std::size_t>(l)].view();
    a.inv_freq = freq.p;
    a.batch = tokenless::VarlenBatch::uniform(1, tokens);
    a.x = x.p;
    a.delta = delta.p;
    a.first = l == 0;
    a.attend = at;
    a.k_cache = kc.p + static_cast<std::size_t>(l) * capacity * 512;
    a.v_cache = vc.p + static_cast<std::size_t>(l) * capacity * 512;
    a.cache_len = len.p + l;
    a.capacity = capacity;
    a.max_queries = 1;
    return a;
  }
  // `tokens` ids from ids[at] through the model; the next id to ids[at + tokens].
  tokenless::Status step(std::int64_t at, std::int64_t tokens, bk::Attend mode) {
    const tokenless::Workspace status{ws.p, tokenless::kStatusBytes};
    const tokenless::Workspace lw{ws.p + tokenless::kStatusBytes, ws.n - tokenless::kStatusBytes};
    TL_RETURN_IF_ERROR(bk::Embedding<B16>::run({embed.p, ids.p + at, tokens, kVocab, s.hidden, x.p, 0}, status));
    for (int l = 0; l < kLayers; ++l) TL_RETURN_IF_ERROR(Layer::run(args(l, tokens, mode), lw));
    TL_RETURN_IF_ERROR((bk::RmsNorm<bk::NormThenCast, B16>::run(
        {.x = delta.p, .residual = x.p, .weight = norm.p, .rows = tokens, .d = s.hidden, .eps = 1e-5f, .out = h.p})));
    tokenless::blas::Gemm::Arguments g;
    g.handle = &handle;
    g.dtype = tokenless::DType::bf16;
    g.m = tokens;
    g.n = kVocab;
    g.k = s.hidden;
    g.a = h.p;
    g.lda = s.hidden;
    g.b = lm_head.p;
    g.ldb = s.hidden;
    g.trans_b = true;
    g.d = logits.p;
    g.ldd = kVocab;
    TL_RETURN_IF_ERROR(tokenless::blas::Gemm::run(g, lw));
    return bk::Argmax<B16>::run({logits.p + (tokens - 1) * std::int64_t{kVocab}, 1, kVocab, 0, ids.p + at + tokens, 1});
  }
  tokenless::Status reset_cache() { return len.fill_bytes(0); }
  double bytes_per_token(std::int64_t ctx) const {
    const double d = s.hidden;
    const double layer = 2.0 * (2 * d + d * (static_cast<double>(s.qkv_dim()) + s.q_dim() + 3.0 * s.ffn));
    const double cache = 2.0 * 2.0 * static_cast<double>(ctx + 1) * static_cast<double>(s.kv_dim());
    return kLayers * (layer + cache) + 2.0 * kVocab * d + 2.0 * d;
  }
};

void BM_Llama1bDecode(benchmark::State& state) {
  const std::int64_t ctx = state.range(0);
  DecodeModel m(ctx + 2, ctx + 1);
  // Fill the caches with a prefill of ctx tokens, keep their lengths.
  if (auto st = m.reset_cache(); !st) return state.SkipWithError(st.message());
  if (auto st = m.step(0, ctx, bk::Attend::prefill); !st) return state.SkipWithError(st.message());
  TLB_CHECK_CUDA(cudaMemcpy(m.len0.p, m.len.p, DecodeModel::kLayers * 4, cudaMemcpyDeviceToDevice));
  auto decode = [&] {
    TLB_CHECK_CUDA(cudaMemcpyAsync(m.len.p, m.len0.p, DecodeModel::kLayers * 4, cudaMemcpyDeviceToDevice));
    (void)m.step(ctx, 1, bk::Attend::decode);
  };
  decode();
  {  // Check once: the step's logits equal the last row of a prefill of ctx + 1 tokens.
    std::vector<B16> got(DecodeModel::kVocab), want(DecodeModel::kVocab);
    TLB_CHECK_CUDA(cudaMemcpy(got.data(), m.logits.p, got.size() * 2, cudaMemcpyDeviceToHost));
    if (auto st = m.reset_cache(); !st) return state.SkipWithError(st.message());
    if (auto st = m.step(0, ctx + 1, bk::Attend::prefill); !st) return state.SkipWithError(st.message());
    TLB_CHECK_CUDA(cudaMemcpy(want.data(), m.logits.p + ctx * std::int64_t{DecodeModel::kVocab}, want.size() * 2,
                              cudaMemcpyDeviceToHost));
    double worst = 0, scale = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      const double g = tokenless::to_float(got[i]), w = tokenless::to_float(want[i]);
      if (!std::isfinite(g)) return state.SkipWithError("decode logits are not finite");
      worst = std::max(worst, std::fabs(g - w));
      scale = std::max(scale, std::fabs(w));
    }
    if (worst > 0.05 * (1.0 + scale)) return state.SkipWithError("decode differs from the prefill's last row");
    // Back to a cache of ctx positions for the timed steps.
    if (auto st = m.reset_cache(); !st) return state.SkipWithError(st.message());
    if (auto st = m.step(0, ctx, bk::Attend::prefill); !st) return state.SkipWithError(st.message());
  }
  const double sec = tlb::time_iterations(state, decode);
  tlb::report(state, sec, m.bytes_per_token(ctx), 0);
  state.counters["tokens_per_s"] = sec > 0 ? 1.0 / sec : 0.0;
}

// ------------------------------------------------------------------ self-speculative decoding
using SpecModel = tokenless::models::LlamaModel<B16, tokenless::attention::HeadDims<64>>;
constexpr int kSpecPrompt = 512, kSpecTokens = 256, kSpecMaxDraft = 8;

// Host weights of the 1B shape (the model converts and uploads them), one
// module; norms near 1, projections of std ~ 1/sqrt(fan-in).
tokenless::io::ModelWeights<float> spec_weights() {
  tokenless::io::ModelWeights<float> w;
  auto& c = w.config;
  c.family = tokenless::io::Family::kLlama;
  c.vocab = DecodeModel::kVocab;
  c.hidden = 2048;
  c.layers = DecodeModel::kLayers;
  c.heads = 32;
  c.kv_heads = 8;
  c.head_dim = 64;
  c.rot_dim = 64;
  c.intermediate = 8192;
  c.rms_eps = 1e-5f;
  c.rope.theta = 500000.0f;
  c.mtp_modules = 1;
  std::mt19937 rng(7);
  auto fill = [&](std::vector<float>& v, std::size_t n, float scale, float base = 0.0f) {
    v.resize(n);
    std::uint32_t h = rng();
    for (auto& x : v) {  // a cheap hash stream: a billion values
      h = h * 1664525u + 1013904223u;
      x = base + scale * (static_cast<float>(h >> 8) * (1.0f / 16777216.0f) - 0.5f);
    }
  };
  const std::size_t d = 2048, f = 8192, V = DecodeModel::kVocab, qkv = 2048 + 2 * 512;
  const float s = 2.0f / std::sqrt(2048.0f);
  fill(w.embed, V * d, 0.1f);
  fill(w.norm, d, 0.2f, 1.0f);
  fill(w.lm_head, V * d, s);
  auto layer = [&](tokenless::io::LayerWeights<float>& l) {
    fill(l.attn_norm, d, 0.2f, 1.0f);
    fill(l.wqkv, qkv * d, s);
    fill(l.wo, d * d, s);
    fill(l.mlp_norm, d, 0.2f, 1.0f);
    fill(l.w_gate_up, 2 * f * d, s);
    fill(l.w_down, d * f, 2.0f / std::sqrt(8192.0f));
  };
  w.layers.resize(DecodeModel::kLayers);
  for (auto& l : w.layers) layer(l);
  w.mtp.resize(1);
  auto& m = w.mtp[0];
  fill(m.enorm, d, 0.2f, 1.0f);
  fill(m.hnorm, d, 0.2f, 1.0f);
  fill(m.shared_norm, d, 0.2f, 1.0f);
  fill(m.eh_proj, d * 2 * d, 2.0f / std::sqrt(4096.0f));
  layer(m.layer);
  return w;
}

// The model, built once, and its greedy continuation of a fixed prompt.
struct Spec {
  std::unique_ptr<SpecModel> m;
  std::vector<std::int32_t> prompt, greedy;  // greedy: kSpecTokens ids after the prompt
  tokenless::Status status;
  static Spec& get() {
    static Spec s = [] {
      Spec x;
      const auto w = spec_weights();
      x.status = SpecModel::create(w, kSpecPrompt, kSpecPrompt + kSpecTokens + kSpecMaxDraft + 2, &x.m, kSpecMaxDraft);
      if (!x.status) return x;
      for (int i = 0; i < kSpecPrompt; ++i) x.prompt.push_back((i * 7919) % DecodeModel::kVocab);
      if (!(x.status = x.m->prefill(x.prompt))) return x;
      for (int i = 1; i < kSpecTokens && x.status; ++i) x.status = x.m->decode();
      if (x.status) x.status = x.m->ids(kSpecPrompt, kSpecPrompt + kSpecTokens, x.greedy);
      return x;
    }();
    return s;
  }
};

// Times `step` (which returns the tokens it made, or -1 when the greedy
// continuation runs out) a step an iteration; re-prefills untimed.
template <class F>
double time_steps(benchmark::State& state, Spec& sp, F&& step, double* tokens) {
  cudaEvent_t start, stop;
  TLB_CHECK_CUDA(cudaEventCreate(&start));
  TLB_CHECK_CUDA(cudaEventCreate(&stop));
  double total = 0;
  *tokens = 0;
  for (auto _ : state) {
    TLB_CHECK_CUDA(cudaEventRecord(start));
    int made = step();
    TLB_CHECK_CUDA(cudaEventRecord(stop));
    TLB_CHECK_CUDA(cudaEventSynchronize(stop));
    if (made < 0) {  // out of greedy ids: start again (the step did nothing)
      if (auto s = sp.m->prefill(sp.prompt); !s) state.SkipWithError(s.message());
      made = 0;
    }
    float ms = 0;
    TLB_CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    state.SetIterationTime(ms * 1e-3);
    total += ms * 1e-3;
    *tokens += made;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return total;
}

// A plain greedy step, reading its id back as tokenless-run does.
void BM_SpecGreedy(benchmark::State& state) {
  Spec& sp = Spec::get();
  if (!sp.status) return state.SkipWithError(sp.status.message());
  if (auto s = sp.m->prefill(sp.prompt); !s) return state.SkipWithError(s.message());
  double tokens = 0;
  const double sec = time_steps(state, sp, [&] {
    if (sp.m->length() + 1 >= kSpecPrompt + kSpecTokens) return -1;
    std::vector<std::int32_t> id;
    if (!sp.m->decode() || !sp.m->ids(sp.m->length(), sp.m->length() + 1, id)) return -1;
    return 1;
  }, &tokens);
  state.counters["tokens_per_s"] = sec > 0 ? tokens / sec : 0.0;
}

// Verifying K drafts that all fail: one token a step, the cost of the
// verification itself (the few-query decode of K + 1 tokens, every row's
// argmax, the acceptance, the rollback, the read of a).
void BM_SpecVerify(benchmark::State& state) {
  const int K = static_cast<int>(state.range(0));
  Spec& sp = Spec::get();
  if (!sp.status) return state.SkipWithError(sp.status.message());
  if (auto s = sp.m->prefill(sp.prompt); !s) return state.SkipWithError(s.message());
  double tokens = 0;
  const double sec = time_steps(state, sp, [&] {
    const std::int64_t have = sp.m->length() - kSpecPrompt + 1;
    if (have + K >= kSpecTokens) return -1;
    std::vector<std::int32_t> drafts(sp.greedy.begin() + have, sp.greedy.begin() + have + K);
    drafts[0] = (drafts[0] + 1) % DecodeModel::kVocab;
    int made = 0;
    if (!sp.m->speculate(K, &made, &drafts) || made != 1) return -1;
    return made;
  }, &tokens);
  state.counters["tokens_per_s"] = sec > 0 ? tokens / sec : 0.0;
}

// Tokens/s at acceptance rate p (percent): drafts by the module, replaced by
// the greedy ids, each wrong with probability 1 - p. Checked: the ids are
// the greedy ones.
void BM_SpecTokens(benchmark::State& state) {
  const int K = static_cast<int>(state.range(0));
  const double p = static_cast<double>(state.range(1)) / 100.0;
  Spec& sp = Spec::get();
  if (!sp.status) return state.SkipWithError(sp.status.message());
  if (auto s = sp.m->prefill(sp.prompt); !s) return state.SkipWithError(s.message());
  std::mt19937 rng(11);
  std::bernoulli_distribution agree(p);
  double tokens = 0, steps = 0;
  bool wrong_ids = false;
  const double sec = time_steps(state, sp, [&] {
    const std::int64_t have = sp.m->length() - kSpecPrompt + 1;
    if (have + K >= kSpecTokens) {
      std::vector<std::int32_t> got;
      wrong_ids |= !sp.m->ids(kSpecPrompt, kSpecPrompt + have, got) ||
                   got != std::vector<std::int32_t>(sp.greedy.begin(), sp.greedy.begin() + have);
      return -1;
    }
    std::vector<std::int32_t> drafts(sp.greedy.begin() + have, sp.greedy.begin() + have + K);
    for (auto& d : drafts) {
      if (!agree(rng)) d = (d + 1) % DecodeModel::kVocab;
    }
    int made = 0;
    if (!sp.m->speculate(K, &made, &drafts, /*module_too=*/true)) return -1;
    steps += 1;
    return made;
  }, &tokens);
  if (wrong_ids) return state.SkipWithError("the speculative ids differ from the greedy ones");
  state.counters["tokens_per_s"] = sec > 0 ? tokens / sec : 0.0;
  state.counters["tokens_per_step"] = steps > 0 ? tokens / steps : 0.0;
}

}  // namespace

int main(int argc, char** argv) {
  for (const bool bwd : {false, true}) {
    benchmark::RegisterBenchmark(bwd ? "models_llama3_8b_layer_fwd_bwd/bf16" : "models_llama3_8b_layer_fwd/bf16",
                                 BM_Llama8bLayer, bwd)
        ->Arg(4096)
        ->Arg(16384)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::RegisterBenchmark("models_llama1b_decode/bf16_batch1", BM_Llama1bDecode)
      ->Arg(512)
      ->Arg(4096)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("models_spec_greedy_step/bf16_llama1b", BM_SpecGreedy)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("models_spec_verify/bf16_llama1b", BM_SpecVerify)
      ->Arg(1)
      ->Arg(4)
      ->Arg(8)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  auto* tok = benchmark::RegisterBenchmark("models_spec_tokens/bf16_llama1b", BM_SpecTokens);
  for (const int p : {0, 50, 70, 80, 90, 100}) tok->Args({4, p});
  tok->ArgNames({"K", "p"})->UseManualTime()->Unit(benchmark::kMicrosecond);
  return tlb::run_main(argc, argv, "tokenless_bench_models.json");
}
